//! Activations that look across channels: softmax and maxout.

use super::{expect_arity, Broadcast, EvalCtx, Mul, OpSpec, ReduceSum, Sub, Vjp};
use crate::shape::Shape;
use crate::tensor::Tensor;
use crate::IrError;

/// Softmax along the last axis, computed stably (the row maximum is subtracted first).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Softmax {}

impl OpSpec for Softmax {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        if operands[0].rank() == 0 {
            return Err("softmax needs at least one axis".into());
        }
        Ok(operands[0].clone())
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, _: &EvalCtx) -> Tensor {
        let x = operands[0];
        let c = x.shape.dim(-1);
        let mut y = x.clone();
        for row in y.data.chunks_mut(c) {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            for v in row.iter_mut() {
                *v /= sum;
            }
        }
        y
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        // dx = y * (g - sum(g * y, last axis))
        let (y, g) = (v.node, v.grad);
        let shape = v.shape(y);
        let last = shape.rank() - 1;
        let gy = v.add(Mul {}, &[g, y])?;
        let s = v.add(ReduceSum { axes: vec![last] }, &[gy])?;
        let s = v.add(Broadcast { shape: shape.0, axes: vec![last] }, &[s])?;
        let t = v.add(Sub {}, &[g, s])?;
        let dx = v.add(Mul {}, &[y, t])?;
        v.set(0, dx);
        Ok(())
    }
}

/// Maxout: the last axis holds `units * pieces` values; each unit is the maximum of its
/// `pieces` consecutive values.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maxout {
    /// Values per unit (k).
    pub pieces: usize,
}

fn maxout_infer(pieces: usize, x: &Shape) -> Result<Shape, String> {
    if pieces == 0 || x.rank() == 0 || !x.dim(-1).is_multiple_of(pieces) {
        return Err(format!("the last dimension of {x} is not a multiple of pieces={pieces}"));
    }
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank > 0") /= pieces;
    Ok(Shape(dims))
}

/// Index within its group of the first maximum of each group of `pieces` values.
fn argmax_in_group(group: &[f64]) -> usize {
    let mut best = 0;
    for (j, &v) in group.iter().enumerate() {
        if v > group[best] {
            best = j;
        }
    }
    best
}

impl OpSpec for Maxout {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        maxout_infer(self.pieces, operands[0])
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let data = operands[0].data.chunks(self.pieces).map(|g| g[argmax_in_group(g)]).collect();
        Tensor::new(out.clone(), data)
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        let dx = v.add(MaxoutGrad { pieces: self.pieces }, &[v.operands[0], v.grad])?;
        v.set(0, dx);
        Ok(())
    }
}

/// `maxout_grad(x, g)`: routes each unit's gradient to the first maximum of its group.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxoutGrad {
    /// Values per unit (k).
    pub pieces: usize,
}

impl OpSpec for MaxoutGrad {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 2)?;
        let y = maxout_infer(self.pieces, operands[0])?;
        if &y != operands[1] {
            return Err(format!("gradient {} does not match maxout output {y}", operands[1]));
        }
        Ok(operands[0].clone())
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let (x, g) = (operands[0], operands[1]);
        let mut dx = Tensor::zeros(out.clone());
        for (u, group) in x.data.chunks(self.pieces).enumerate() {
            dx.data[u * self.pieces + argmax_in_group(group)] = g.data[u];
        }
        dx
    }
}
