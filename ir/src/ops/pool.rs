//! Max and average pooling over HxW windows of NHWC tensors ('valid' windows), and their
//! gradients.

use super::{EvalCtx, OpSpec, Vjp};
use crate::shape::Shape;
use crate::tensor::Tensor;
use crate::IrError;

/// `max_pool2d(x [N,H,W,C]) -> [N,OH,OW,C]` with `OH = (H - size) / stride + 1`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPool2d {
    /// Window height and width.
    pub size: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
}

impl OpSpec for MaxPool2d {
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

/// `max_pool2d_grad(x [N,H,W,C], g [N,OH,OW,C]) -> [N,H,W,C]`: each window's gradient goes to
/// the first maximum of the window (row-major order); overlapping windows accumulate.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPool2dGrad {
    /// Window height and width.
    pub size: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
}

impl OpSpec for MaxPool2dGrad {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        todo!("{operands:?}")
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        todo!("{operands:?}{out}")
    }
}

/// `avg_pool2d(x [N,H,W,C]) -> [N,OH,OW,C]`: the mean of each window.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvgPool2d {
    /// Window height and width.
    pub size: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
}

impl OpSpec for AvgPool2d {
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

/// `avg_pool2d_grad(g [N,OH,OW,C]) -> [N,H,W,C]`: spreads each window's gradient evenly over
/// the window; overlapping windows accumulate.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvgPool2dGrad {
    /// Window height and width.
    pub size: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// The forward input's height and width.
    pub input_hw: [usize; 2],
}

impl OpSpec for AvgPool2dGrad {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        todo!("{operands:?}")
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        todo!("{operands:?}{out}")
    }
}
