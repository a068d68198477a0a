//! Sums over axes and their adjoint, broadcasting along new axes.

use super::{expect_arity, EvalCtx, OpSpec, Vjp};
use crate::shape::Shape;
use crate::tensor::{for_each_index, Tensor};
use crate::IrError;

/// Sums over `axes` (sorted, distinct), removing them: `[N, C]` summed over `[0]` gives `[C]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReduceSum {
    /// The axes summed away.
    pub axes: Vec<usize>,
}

/// The dimensions left when `axes` are removed from `shape`, after checking the axes.
fn kept_dims(shape: &Shape, axes: &[usize]) -> Result<Vec<usize>, String> {
    if axes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("axes {axes:?} must be sorted and distinct"));
    }
    if let Some(&a) = axes.iter().find(|&&a| a >= shape.rank()) {
        return Err(format!("axis {a} is out of range for {shape}"));
    }
    Ok((0..shape.rank()).filter(|i| !axes.contains(i)).map(|i| shape.dims()[i]).collect())
}

/// The index into the reduced tensor for an index into the full one.
fn reduced_index(index: &[usize], axes: &[usize]) -> Vec<usize> {
    index.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &x)| x).collect()
}

impl OpSpec for ReduceSum {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        Ok(Shape(kept_dims(operands[0], &self.axes)?))
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let x = operands[0];
        let mut y = Tensor::zeros(out.clone());
        for_each_index(&x.shape, |i| {
            let o = y.offset(&reduced_index(i, &self.axes));
            y.data[o] += x.at(i);
        });
        y
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        let shape = v.shape(v.operands[0]);
        let dx = v.add(Broadcast { shape: shape.0, axes: self.axes.clone() }, &[v.grad])?;
        v.set(0, dx);
        Ok(())
    }
}

/// Repeats its operand along new `axes` to reach `shape`: the adjoint of `reduce_sum`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broadcast {
    /// The output shape.
    pub shape: Vec<usize>,
    /// The output axes that the operand does not have.
    pub axes: Vec<usize>,
}

impl OpSpec for Broadcast {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        let out = Shape(self.shape.clone());
        let kept = kept_dims(&out, &self.axes)?;
        if kept != operands[0].dims() {
            return Err(format!(
                "cannot broadcast {} to {out} along axes {:?}",
                operands[0], self.axes
            ));
        }
        Ok(out)
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let x = operands[0];
        let mut y = Tensor::zeros(out.clone());
        let mut k = 0;
        for_each_index(out, |i| {
            y.data[k] = x.at(&reduced_index(i, &self.axes));
            k += 1;
        });
        y
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        let dx = v.add(ReduceSum { axes: self.axes.clone() }, &[v.grad])?;
        v.set(0, dx);
        Ok(())
    }
}
