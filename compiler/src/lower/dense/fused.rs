//! Fused ops built on the dense kernels: a matmul or convolution with its bias and ReLU, and
//! the convolution followed by its max pool.
//!
//! The bias and ReLU are the GEMM's [`Epilogue`]: applied by the store that follows each output
//! element's last k-step, so the fused op makes one pass over its output, with the same
//! roundings as `bias_add` then `relu`. `conv2d_bias_act_max_pool2d` writes the activation
//! into its scratch and pools it from there into the output.

use kiln_ir::ops::{Conv2dBiasAct, Conv2dBiasActMaxPool2d, MatMul, MatMulBiasAct};
use kiln_ir::{OpSpec, Shape};

use super::{conv, gemm, pool, Epilogue};
use crate::kernel::{Buffer, Kernel};

/// The epilogue adding `bias` (one value per output column), then ReLU when `relu`.
fn bias_act(bias: &Buffer, relu: bool) -> Epilogue {
    Epilogue { bias: Some(bias.clone()), relu }
}

/// Scratch of `matmul_bias_act(x, w, b)`: the GEMM's partial products (when `K` is split).
pub(super) fn matmul_scratch(x: &Shape, w: &Shape) -> usize {
    gemm::scratch_len(&MatMul::default(), x, w)
}

/// Scratch of `conv2d_bias_act(x, w, b)`: the convolution's (im2col columns, partials).
pub(super) fn conv_scratch(op: &Conv2dBiasAct, x: &Shape, w: &Shape) -> usize {
    conv::Geo::new(x, w, op.stride, op.pad).scratch_fwd()
}

/// Scratch of `conv2d_bias_act_max_pool2d(x, w, b)`: the activation, then the convolution's.
pub(super) fn conv_pool_scratch(op: &Conv2dBiasActMaxPool2d, shapes: &[&Shape]) -> usize {
    activation_shape(op, shapes).numel() + conv_scratch(&op.conv(), shapes[0], shapes[1])
}

/// The shape of the activation that `conv2d_bias_act_max_pool2d` pools.
fn activation_shape(op: &Conv2dBiasActMaxPool2d, shapes: &[&Shape]) -> Shape {
    op.conv().infer(shapes).expect("shape inference checked the fused op")
}

/// `matmul_bias_act(x, w, b) -> y`: the GEMM `y = x · w` storing `relu?(acc + b)`.
pub(super) fn matmul_bias_act(
    name: &str,
    op: &MatMulBiasAct,
    shapes: &[&Shape],
    bufs: &[Buffer],
    y: &Buffer,
    part: impl Fn(&str, usize, usize) -> Buffer,
) -> Vec<Kernel> {
    let (x, w) = (shapes[0], shapes[1]);
    let epilogue = bias_act(&bufs[2], op.relu);
    gemm::lower_matmul(name, &MatMul::default(), x, w, &bufs[..2], y, part, &epilogue)
}

/// `conv2d_bias_act(x, w, b) -> y`: the convolution (im2col + GEMM) into `y`, its GEMM storing
/// `relu?(acc + b)`.
pub(super) fn conv2d_bias_act(
    name: &str,
    op: &Conv2dBiasAct,
    shapes: &[&Shape],
    bufs: &[Buffer],
    y: &Buffer,
    part: impl Fn(&str, usize, usize) -> Buffer,
) -> Vec<Kernel> {
    let geo = conv::Geo::new(shapes[0], shapes[1], op.stride, op.pad);
    geo.conv(name, (&bufs[0], &bufs[1], y), part, &bias_act(&bufs[2], op.relu))
}

/// `conv2d_bias_act_max_pool2d(x, w, b) -> y`: `conv2d_bias_act` into the scratch (`.act`),
/// then the max-pool kernel from there into `y` (`.pool`).
pub(super) fn conv2d_bias_act_max_pool2d(
    name: &str,
    op: &Conv2dBiasActMaxPool2d,
    shapes: &[&Shape],
    bufs: &[Buffer],
    y: &Buffer,
    part: impl Fn(&str, usize, usize) -> Buffer,
) -> Vec<Kernel> {
    let act_shape = activation_shape(op, shapes);
    let act_len = act_shape.numel();
    let act = part("act", 0, act_len);
    let conv_part = |n: &str, at: usize, len: usize| part(n, act_len + at, len);
    let mut out = conv2d_bias_act(name, &op.conv(), shapes, bufs, &act, conv_part);
    let pooling = pool::Geo::new(&act_shape, op.pool_size, op.pool_stride);
    out.extend(pooling.forward(&format!("{name}.pool"), true, &act, y));
    out
}
