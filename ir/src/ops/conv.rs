//! 2-D convolution (NHWC input, HWIO filter) and its two gradients.

use super::{EvalCtx, OpSpec, Vjp};
use crate::shape::Shape;
use crate::tensor::Tensor;
use crate::IrError;

/// Named padding modes, as in Keras.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadMode {
    /// No padding.
    Valid,
    /// Pad so that the output is `ceil(input / stride)` (extra padding at the bottom/right).
    Same,
}

/// Zero padding of a convolution: a mode, or explicit `[top, bottom, left, right]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Padding {
    /// `valid` or `same`.
    Mode(PadMode),
    /// `[top, bottom, left, right]`.
    Explicit([usize; 4]),
}

impl Padding {
    /// The explicit `[top, bottom, left, right]` padding for an input of `input_hw`.
    pub fn resolve(&self, input_hw: [usize; 2], kernel_hw: [usize; 2], stride: [usize; 2]) -> [usize; 4] {
        todo!("{input_hw:?} {kernel_hw:?} {stride:?}")
    }
}

/// `conv2d(x [N,H,W,C], w [KH,KW,C,F]) -> [N,OH,OW,F]`, cross-correlation as in Keras.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2d {
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Zero padding.
    pub pad: Padding,
}

impl OpSpec for Conv2d {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        todo!("{operands:?}")
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        todo!("{operands:?}{out}")
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        todo!("{:?}", v.node)
    }
}

/// `conv2d_grad_input(g [N,OH,OW,F], w [KH,KW,C,F]) -> [N,H,W,C]`: the gradient of `conv2d`
/// with respect to its input (a transposed convolution).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2dGradInput {
    /// The forward convolution's stride.
    pub stride: [usize; 2],
    /// The forward convolution's padding.
    pub pad: Padding,
    /// The forward input's height and width.
    pub input_hw: [usize; 2],
}

impl OpSpec for Conv2dGradInput {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        todo!("{operands:?}")
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        todo!("{operands:?}{out}")
    }
}

/// `conv2d_grad_filter(x [N,H,W,C], g [N,OH,OW,F]) -> [KH,KW,C,F]`: the gradient of `conv2d`
/// with respect to its filter.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2dGradFilter {
    /// The forward convolution's stride.
    pub stride: [usize; 2],
    /// The forward convolution's padding.
    pub pad: Padding,
    /// The filter's height and width.
    pub kernel_hw: [usize; 2],
}

impl OpSpec for Conv2dGradFilter {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        todo!("{operands:?}")
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        todo!("{operands:?}{out}")
    }
}
