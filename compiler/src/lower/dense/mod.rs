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
    // Sub-buffer `[at, at + len)` of the scratch.
    let part = |name: &str, at: usize, len: usize| {
        let offset = scratch.map_or(0, |s| s.offset + at);
        Buffer { name: format!("{}.{name}", n.name), offset, len }
    };
    let name = n.name.as_str();
    let kernels = match &n.op {
        Op::MatMul(op) => gemm::lower_matmul(name, op, shapes[0], shapes[1], &bufs, &out, part),
        Op::Conv2d(op) => {
            let geo = conv::Geo::new(shapes[0], shapes[1], op.stride, op.pad);
            geo.conv(name, &bufs[0], &bufs[1], &out, part)
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
