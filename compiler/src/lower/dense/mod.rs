//! Lowering of matrix products, convolutions and pooling (and their gradients).
//!
//! - [`gemm`]: `C = op(A)·op(B)` as 4x8 register tiles (8 f32x4 accumulators), parallel over
//!   row tiles; also the transposing copy that packs a `B` that is not contiguous along `N`.
//! - [`conv`]: convolutions as im2col + GEMM, and the gradients (GEMM with a transposed
//!   operand; col2im scatter-add for the input gradient).
//! - [`pool`]: max/average pooling and their gradients, parallel over images, vectorised over
//!   channels.
//! - [`fused`]: matmul and convolution with their bias and ReLU (and a following max pool).

mod conv;
mod fused;
mod gemm;
mod pool;
#[cfg(test)]
mod tests;

use kiln_ir::{Graph, NodeId, Op, Shape};

pub(crate) use gemm::Epilogue;

use super::{Buffers, LowerError};
use crate::kernel::{Buffer, Expr, Index, Kernel, LoopKind, Stmt};

/// Scratch needed by `node` (im2col columns, packed operands).
pub(super) fn scratch_len(graph: &Graph, node: NodeId) -> usize {
    let n = graph.node(node);
    let shapes: Vec<&Shape> = graph.operands(node).iter().map(|&o| &graph.node(o).shape).collect();
    match &n.op {
        Op::MatMul(op) => gemm::scratch_len(op, shapes[0], shapes[1]),
        Op::Conv2d(op) => conv::Geo::new(shapes[0], shapes[1], op.stride, op.pad).scratch_fwd(),
        Op::Conv2dGradFilter(op) => {
            conv::Geo::new(shapes[0], &n.shape, op.stride, op.pad).scratch_grad_filter()
        }
        Op::Conv2dGradInput(op) => {
            conv::Geo::new(&n.shape, shapes[1], op.stride, op.pad).scratch_grad_input()
        }
        Op::MatMulBiasAct(_) => fused::matmul_scratch(shapes[0], shapes[1]),
        Op::Conv2dBiasAct(op) => fused::conv_scratch(op, shapes[0], shapes[1]),
        Op::Conv2dBiasActMaxPool2d(op) => fused::conv_pool_scratch(op, &shapes),
        Op::MaxPool2dGradReluBias(op) => {
            pool::Geo::new(shapes[0], op.size, op.stride).partials_len()
        }
        _ => 0,
    }
}

/// The kernels of a matmul, convolution or pooling node.
pub(super) fn lower(
    graph: &Graph,
    node: NodeId,
    buffers: &dyn Buffers,
    scratch: Option<&Buffer>,
) -> Result<Vec<Kernel>, LowerError> {
    let n = graph.node(node);
    let err = |message: String| LowerError { node: n.name.clone(), op: n.op.name(), message };
    let operands = graph.operands(node);
    let shapes: Vec<&Shape> = operands.iter().map(|&o| &graph.node(o).shape).collect();
    let bufs: Vec<Buffer> = operands.iter().map(|&o| buffers.of(o)).collect();
    let out = buffers.of(node);
    let need = scratch_len(graph, node);
    let scratch = match scratch {
        _ if need == 0 => None,
        Some(s) if s.len >= need => Some(s),
        Some(s) => return Err(err(format!("needs {need} scratch elements, got {}", s.len))),
        None => return Err(err(format!("needs {need} scratch elements, got none"))),
    };
    let name = n.name.as_str();
    let part = scratch_part(name, scratch);
    let kernels = match &n.op {
        Op::MatMul(op) => {
            let none = Epilogue::none();
            gemm::lower_matmul(name, op, shapes[0], shapes[1], &bufs, &out, part, &none)
        }
        Op::Conv2d(op) => {
            let geo = conv::Geo::new(shapes[0], shapes[1], op.stride, op.pad);
            geo.conv(name, (&bufs[0], &bufs[1], &out), part, &Epilogue::none())
        }
        Op::Conv2dGradFilter(op) => {
            let geo = conv::Geo::new(shapes[0], &n.shape, op.stride, op.pad);
            geo.grad_filter(name, &bufs[0], &bufs[1], &out, part)
        }
        Op::Conv2dGradInput(op) => {
            let geo = conv::Geo::new(&n.shape, shapes[1], op.stride, op.pad);
            geo.grad_input(name, &bufs[0], &bufs[1], &out, part)
        }
        Op::MaxPool2d(op) => {
            pool::Geo::new(shapes[0], op.size, op.stride).forward(name, true, &bufs[0], &out)
        }
        Op::AvgPool2d(op) => {
            pool::Geo::new(shapes[0], op.size, op.stride).forward(name, false, &bufs[0], &out)
        }
        Op::MaxPool2dGrad(op) => {
            let geo = pool::Geo::new(shapes[0], op.size, op.stride);
            geo.max_grad(name, false, &bufs[0], &bufs[1], &out)
        }
        Op::MaxPool2dGradRelu(op) => {
            let geo = pool::Geo::new(shapes[0], op.size, op.stride);
            geo.max_grad(name, true, &bufs[0], &bufs[1], &out)
        }
        Op::MaxPool2dGradReluBias(op) => {
            let geo = pool::Geo::new(shapes[0], op.size, op.stride);
            let partials = part("partials", 0, geo.partials_len());
            geo.max_grad_relu_bias(name, &bufs[0], &bufs[1], &out, &partials)
        }
        Op::MatMulBiasAct(op) => fused::matmul_bias_act(name, op, &shapes, &bufs, &out, part),
        Op::Conv2dBiasAct(op) => fused::conv2d_bias_act(name, op, &shapes, &bufs, &out, part),
        Op::Conv2dBiasActMaxPool2d(op) => {
            fused::conv2d_bias_act_max_pool2d(name, op, &shapes, &bufs, &out, part)
        }
        Op::AvgPool2dGrad(op) => {
            pool::Geo::new(&n.shape, op.size, op.stride).avg_grad(name, &bufs[0], &out)
        }
        _ => return Err(err("not a matmul, convolution or pooling op".into())),
    };
    Ok(kernels)
}

/// Sub-buffers `[at, at + len)` of a node's scratch, named `{node}.{part}`.
fn scratch_part(node: &str, scratch: Option<&Buffer>) -> impl Fn(&str, usize, usize) -> Buffer {
    let (node, base) = (node.to_string(), scratch.map_or(0, |s| s.offset));
    move |name: &str, at: usize, len: usize| Buffer {
        name: format!("{node}.{name}"),
        offset: base + at,
        len,
    }
}

#[cfg(test)]
/// The scratch (f32 elements) of [`lower_with_epilogue`] for `op` on operands of `shapes`.
pub(crate) fn epilogue_scratch_len(op: &Op, shapes: [&Shape; 2]) -> usize {
    match op {
        Op::MatMul(op) => gemm::scratch_len(op, shapes[0], shapes[1]),
        Op::Conv2d(op) => conv::Geo::new(shapes[0], shapes[1], op.stride, op.pad).scratch_fwd(),
        _ => 0,
    }
}

/// The kernels of a `matmul` or `conv2d` (`op`, operands of `shapes` in `bufs`) writing `out`,
/// followed by `epilogue` on every output element: `out = relu?(op(a, b) + bias)`, the bias
/// holding one value per output column (the units of a dense layer, the output channels of an
/// NHWC convolution: `out`'s last axis).
///
/// The epilogue is applied exactly once per element, by the store that follows its last k-step
/// (never to the partial results of blocked or split reductions), with the same roundings as
/// separate `bias_add` and `relu` nodes: the result is bit-identical to the unfused graph's.
/// `name` prefixes the kernels and the scratch parts; `scratch` must hold
/// [`epilogue_scratch_len`] elements when that is not 0. Errors (a bug in the caller, never
/// user input): another op, a bias of the wrong length, a short scratch.
#[cfg(test)] // The fused ops call the GEMM and convolution directly; tests use this.
pub(crate) fn lower_with_epilogue(
    name: &str,
    op: &Op,
    shapes: [&Shape; 2],
    bufs: [&Buffer; 2],
    out: &Buffer,
    scratch: Option<&Buffer>,
    epilogue: &Epilogue,
) -> Result<Vec<Kernel>, String> {
    let need = epilogue_scratch_len(op, shapes);
    if need > 0 && scratch.is_none_or(|s| s.len < need) {
        let got = scratch.map_or(0, |s| s.len);
        return Err(format!("needs {need} scratch elements, got {got}"));
    }
    let columns = match op {
        Op::MatMul(m) => {
            if m.transpose_b {
                shapes[1].dim(0)
            } else {
                shapes[1].dim(1)
            }
        }
        Op::Conv2d(_) => shapes[1].dim(3),
        _ => return Err(format!("no epilogue for {}", op.name())),
    };
    if let Some(b) = epilogue.bias.as_ref().filter(|b| b.len != columns) {
        return Err(format!("the bias has {} elements for {columns} output columns", b.len));
    }
    let part = scratch_part(name, scratch);
    Ok(match op {
        Op::MatMul(m) => gemm::lower_matmul(
            name,
            m,
            shapes[0],
            shapes[1],
            &[bufs[0].clone(), bufs[1].clone()],
            out,
            part,
            epilogue,
        ),
        Op::Conv2d(c) => {
            let geo = conv::Geo::new(shapes[0], shapes[1], c.stride, c.pad);
            geo.conv(name, (bufs[0], bufs[1], out), part, epilogue)
        }
        _ => unreachable!("checked above"),
    })
}

/// Declares `b` in kernel `k`.
fn declare(k: &mut Kernel, b: &Buffer) -> crate::kernel::BufId {
    k.buf(b.name.clone(), b.offset, b.len)
}

/// `s * i`.
fn scale(i: &Index, s: i64) -> Index {
    let terms =
        if s == 0 { Vec::new() } else { i.terms.iter().map(|&(v, c)| (v, c * s)).collect() };
    Index { constant: i.constant * s, terms }
}

/// `Σ coefficient * index + constant`: the affine combination of indices.
fn affine(parts: &[(&Index, usize)], constant: i64) -> Index {
    parts.iter().fold(Index::constant(constant), |acc, (i, c)| acc.plus_index(&scale(i, *c as i64)))
}

/// Zero in `lanes` lanes.
fn zero(lanes: u8) -> Expr {
    splat_if(Expr::c(0.0), lanes)
}

/// `e` (a scalar) in `lanes` lanes.
fn splat_if(e: Expr, lanes: u8) -> Expr {
    if lanes == 4 {
        e.splat()
    } else {
        e
    }
}

/// The statements `f(i)` for `i` in `(0..extent).step_by(step)`, as a loop of `kind`; inline
/// with `i = 0` when there is a single iteration (unless parallel), nothing when `extent` is 0.
fn looped(
    k: &mut Kernel,
    extent: usize,
    step: usize,
    kind: LoopKind,
    f: impl FnOnce(&mut Kernel, Index) -> Vec<Stmt>,
) -> Vec<Stmt> {
    if extent == 0 {
        return Vec::new();
    }
    if extent <= step && kind != LoopKind::Parallel {
        return f(k, Index::constant(0));
    }
    let var = k.var();
    let body = f(k, Index::var(var, 1));
    vec![Stmt::For { var, extent, step, kind, body }]
}

/// `f(c, lanes)` over `count` consecutive elements: f32x4 steps, then a scalar tail.
fn vectorised(
    k: &mut Kernel,
    count: usize,
    f: impl Fn(&mut Kernel, Index, u8) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let main = count / 4 * 4;
    let mut out = looped(k, main, 4, LoopKind::Serial, |k, c| f(k, c, 4));
    out.extend(looped(k, count - main, 1, LoopKind::Serial, |k, c| f(k, c.plus(main as i64), 1)));
    out
}

/// A kernel whose body is one parallel loop `for i in (0..extent).step_by(step)`.
fn parallel_kernel(
    name: String,
    bufs: &[&Buffer],
    extent: usize,
    step: usize,
    f: impl FnOnce(&mut Kernel, &[crate::kernel::BufId], Index) -> Vec<Stmt>,
) -> Kernel {
    let mut k = Kernel::new(name);
    let ids: Vec<_> = bufs.iter().map(|b| declare(&mut k, b)).collect();
    k.body = looped(&mut k, extent, step, LoopKind::Parallel, |k, i| f(k, &ids, i));
    k
}
