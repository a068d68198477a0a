//! Fused ops: chains of ops that the rewriter (compiler::rewrite) replaces by one node, so a
//! kernel makes one pass over memory where the chain made several.
//!
//! They appear only after autodiff (in training-step and evaluation graphs), so they have no
//! VJP. Their reference semantics is the composition of the ops they replace, evaluated with
//! those ops' own reference semantics: a fused op means exactly what its chain meant.

use super::{
    expect_arity, BiasAdd, Broadcast, Conv2d, EvalCtx, MatMul, MaxPool2d, MaxPool2dGrad, Mul,
    OneHot, OpSpec, Padding, ReduceSum, Relu, Softmax, Step, Sub,
};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Infers `op` then evaluates it: the building block of the fused ops' reference semantics.
fn apply(op: &dyn OpSpec, operands: &[&Tensor], ctx: &EvalCtx) -> Tensor {
    let shapes: Vec<&Shape> = operands.iter().map(|t| &t.shape).collect();
    let out = op.infer(&shapes).expect("a fused op's parts agree on shapes");
    op.eval(operands, &out, ctx)
}

/// Infers the shape of a chain: each step gets the previous result as its first operand.
fn infer_chain(
    first: Result<Shape, String>,
    steps: &[(&dyn OpSpec, &[&Shape])],
) -> Result<Shape, String> {
    let mut shape = first?;
    for (op, rest) in steps {
        let mut operands = vec![&shape];
        operands.extend_from_slice(rest);
        shape = op.infer(&operands)?;
    }
    Ok(shape)
}

/// `bias_add(y, bias)`, then `relu` when `relu`: the tail of the fused products.
fn bias_act(y: &Tensor, bias: &Tensor, relu: bool, ctx: &EvalCtx) -> Tensor {
    let y = apply(&BiasAdd {}, &[y, bias], ctx);
    if relu {
        apply(&Relu {}, &[&y], ctx)
    } else {
        y
    }
}

/// `matmul_bias_act(x [N, K], w [K, M], b [M])`: `x·w + b`, then ReLU when `relu` (a dense
/// layer with its bias and activation in the GEMM's epilogue).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatMulBiasAct {
    /// Apply ReLU after the bias.
    pub relu: bool,
}

impl OpSpec for MatMulBiasAct {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 3)?;
        let product = MatMul::default().infer(&operands[..2]);
        infer_chain(product, &[(&BiasAdd {}, &[operands[2]])])
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, ctx: &EvalCtx) -> Tensor {
        let y = apply(&MatMul::default(), &operands[..2], ctx);
        bias_act(&y, operands[2], self.relu, ctx)
    }
}

/// `conv2d_bias_act(x, w, b)`: `conv2d(x, w) + b`, then ReLU when `relu` (bias and activation
/// in the convolution's GEMM epilogue).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2dBiasAct {
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Zero padding.
    pub pad: Padding,
    /// Apply ReLU after the bias.
    pub relu: bool,
}

impl Conv2dBiasAct {
    /// The convolution part.
    pub fn conv(&self) -> Conv2d {
        Conv2d { stride: self.stride, pad: self.pad }
    }
}

impl OpSpec for Conv2dBiasAct {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 3)?;
        infer_chain(self.conv().infer(&operands[..2]), &[(&BiasAdd {}, &[operands[2]])])
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, ctx: &EvalCtx) -> Tensor {
        let y = apply(&self.conv(), &operands[..2], ctx);
        bias_act(&y, operands[2], self.relu, ctx)
    }
}

/// `conv2d_bias_act_max_pool2d(x, w, b)`: `max_pool2d(conv2d_bias_act(x, w, b))`, for graphs
/// where nothing else reads the activation (evaluation; training keeps it for the backward
/// pass, and the rewriter's cost model then prefers the unfused pool).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2dBiasActMaxPool2d {
    /// Vertical and horizontal stride of the convolution.
    pub stride: [usize; 2],
    /// Zero padding of the convolution.
    pub pad: Padding,
    /// Apply ReLU after the bias.
    pub relu: bool,
    /// Pooling window height and width.
    pub pool_size: [usize; 2],
    /// Pooling stride.
    pub pool_stride: [usize; 2],
}

impl Conv2dBiasActMaxPool2d {
    /// The convolution, bias and activation part.
    pub fn conv(&self) -> Conv2dBiasAct {
        Conv2dBiasAct { stride: self.stride, pad: self.pad, relu: self.relu }
    }
    /// The pooling part.
    pub fn pool(&self) -> MaxPool2d {
        MaxPool2d { size: self.pool_size, stride: self.pool_stride }
    }
}

impl OpSpec for Conv2dBiasActMaxPool2d {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        infer_chain(self.conv().infer(operands), &[(&self.pool(), &[])])
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, ctx: &EvalCtx) -> Tensor {
        let y = apply(&self.conv(), operands, ctx);
        apply(&self.pool(), &[&y], ctx)
    }
}

/// `relu_grad(g, a)`: `g * step(a)`, the gradient through a ReLU given its output `a`
/// (`a > 0` exactly where the ReLU's input was), so the pre-activation need not be kept.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReluGrad {}

impl OpSpec for ReluGrad {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 2)?;
        if operands[0] != operands[1] {
            return Err(format!("gradient {} and output {} differ", operands[0], operands[1]));
        }
        Ok(operands[0].clone())
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, ctx: &EvalCtx) -> Tensor {
        let mask = apply(&Step {}, &[operands[1]], ctx);
        apply(&Mul {}, &[operands[0], &mask], ctx)
    }
}

/// `max_pool2d_grad_relu(a, g)`: `relu_grad(max_pool2d_grad(a, g), a)`, the gradient through
/// a max pool and the ReLU before it, in one pass over the activation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPool2dGradRelu {
    /// Window height and width.
    pub size: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
}

impl MaxPool2dGradRelu {
    /// The pooling gradient part.
    pub fn pool_grad(&self) -> MaxPool2dGrad {
        MaxPool2dGrad { size: self.size, stride: self.stride }
    }
}

impl OpSpec for MaxPool2dGradRelu {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        self.pool_grad().infer(operands)
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, ctx: &EvalCtx) -> Tensor {
        let g = apply(&self.pool_grad(), operands, ctx);
        apply(&ReluGrad {}, &[&g, operands[0]], ctx)
    }
}

/// `max_pool2d_grad_relu_bias(a, g)`: the backward chain of conv + bias + ReLU + max pool in
/// one pass: `dz = max_pool2d_grad_relu(a, g)` and the bias gradient `db = reduce_sum(dz)`
/// over every axis but the channels, packed into one flat output `[dz…, db…]` of
/// `numel(dz) + C` elements (the graph reads them back with `part`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPool2dGradReluBias {
    /// Window height and width.
    pub size: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
}

impl MaxPool2dGradReluBias {
    /// The unpacked gradient part.
    pub fn grad(&self) -> MaxPool2dGradRelu {
        MaxPool2dGradRelu { size: self.size, stride: self.stride }
    }

    /// The bias-gradient part: a sum over every axis but the last of a rank-`rank` tensor.
    pub fn bias_grad(rank: usize) -> ReduceSum {
        ReduceSum { axes: (0..rank.saturating_sub(1)).collect() }
    }
}

impl OpSpec for MaxPool2dGradReluBias {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        let dz = self.grad().infer(operands)?;
        Ok(Shape(vec![dz.numel() + dz.dim(-1)]))
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, ctx: &EvalCtx) -> Tensor {
        let dz = apply(&self.grad(), operands, ctx);
        let db = apply(&Self::bias_grad(dz.shape.rank()), &[&dz], ctx);
        let mut data = dz.data;
        data.extend_from_slice(&db.data);
        Tensor::new(out.clone(), data)
    }
}

/// `softmax_cross_entropy_grad(logits [N, C], labels [N], weights [N], g [])`: the gradient of
/// `softmax_cross_entropy` with respect to the logits, `(softmax(logits) - one_hot(labels)) *
/// weights[:, None] * g`, in one pass.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftmaxCrossEntropyGrad {}

impl OpSpec for SoftmaxCrossEntropyGrad {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 4)?;
        let (x, l, w, g) = (operands[0], operands[1], operands[2], operands[3]);
        if x.rank() != 2 || l.rank() != 1 || l.dim(0) != x.dim(0) || w != l || g.rank() != 0 {
            return Err(format!(
                "needs logits [N, C], labels [N], weights [N] and a scalar, got {x}, {l}, {w} and {g}"
            ));
        }
        Ok(x.clone())
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, ctx: &EvalCtx) -> Tensor {
        let (x, labels, w, g) = (operands[0], operands[1], operands[2], operands[3]);
        let p = apply(&Softmax {}, &[x], ctx);
        let onehot = apply(&OneHot { classes: out.dim(1) }, &[labels], ctx);
        let diff = apply(&Sub {}, &[&p, &onehot], ctx);
        let scale = apply(&Mul {}, &[w, g], ctx);
        let broadcast = Broadcast { shape: out.dims().to_vec(), axes: vec![1] };
        let scale = apply(&broadcast, &[&scale], ctx);
        apply(&Mul {}, &[&diff, &scale], ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pool2d_grad_relu_bias_packs_the_gradient_then_its_channel_sums() {
        // One image 2x2, 2 channels, one 2x2 window: the gradient goes to each channel's
        // (positive) maximum.
        let a = Tensor::new([1, 2, 2, 2], vec![1.0, -1.0, 3.0, -2.0, 2.0, -3.0, 0.0, -4.0]);
        let g = Tensor::new([1, 1, 1, 2], vec![0.5, 7.0]);
        let op = MaxPool2dGradReluBias { size: [2, 2], stride: [2, 2] };
        let out = op.infer(&[&a.shape, &g.shape]).unwrap();
        assert_eq!(out, Shape(vec![10]));
        let y = op.eval(&[&a, &g], &out, &EvalCtx::default());
        // Channel 1's maximum is -1 (not > 0): no gradient, so its bias gradient is 0 too.
        assert_eq!(y.data, [0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0]);
    }
}
