//! Ops that move data without arithmetic: reshape, concat and slice.

use super::{expect_arity, EvalCtx, OpSpec, Vjp};
use crate::shape::Shape;
use crate::tensor::{for_each_index, Tensor};
use crate::IrError;

/// Same elements in the same order, new shape (flatten is a reshape to `[N, -]`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reshape {
    /// The new shape.
    pub shape: Vec<usize>,
}

impl OpSpec for Reshape {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        let out = Shape(self.shape.clone());
        if out.numel() != operands[0].numel() {
            return Err(format!(
                "cannot reshape {} ({} elements) to {out}",
                operands[0],
                operands[0].numel()
            ));
        }
        Ok(out)
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        Tensor::new(out.clone(), operands[0].data.clone())
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        let shape = v.shape(v.operands[0]);
        let dx = v.add(Reshape { shape: shape.0 }, &[v.grad])?;
        v.set(0, dx);
        Ok(())
    }
}

/// Elements `[offset, offset + numel(shape))` of its operand's row-major data, as a tensor of
/// `shape`: one result of a fused op that packs several results into its output, one after
/// another (e.g. a gradient and its bias gradient). Like `reshape`, an alias of its operand's
/// storage: no kernel, no copy. It appears only after autodiff, so it has no VJP.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// The first element, in the operand's row-major order.
    pub offset: usize,
    /// The shape of the part.
    pub shape: Vec<usize>,
}

impl OpSpec for Part {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        let out = Shape(self.shape.clone());
        let total = operands[0].numel();
        if self.offset + out.numel() > total {
            return Err(format!(
                "elements {}..{} are outside {} ({total} elements)",
                self.offset,
                self.offset + out.numel(),
                operands[0]
            ));
        }
        Ok(out)
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let data = &operands[0].data[self.offset..self.offset + out.numel()];
        Tensor::new(out.clone(), data.to_vec())
    }
}

/// Concatenates its operands along `axis` (channels: the last axis of NHWC).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concat {
    /// The axis joined along.
    pub axis: usize,
}

impl OpSpec for Concat {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        let first = operands.first().ok_or("needs at least one operand")?;
        if self.axis >= first.rank() {
            return Err(format!("axis {} is out of range for {first}", self.axis));
        }
        let mut dims = first.dims().to_vec();
        for s in &operands[1..] {
            let same_elsewhere = s.rank() == first.rank()
                && (0..s.rank()).all(|i| i == self.axis || s.dims()[i] == first.dims()[i]);
            if !same_elsewhere {
                return Err(format!("{s} does not match {first} outside axis {}", self.axis));
            }
            dims[self.axis] += s.dims()[self.axis];
        }
        Ok(Shape(dims))
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let mut y = Tensor::zeros(out.clone());
        let mut start = 0;
        for x in operands {
            for_each_index(&x.shape, |i| {
                let mut j = i.to_vec();
                j[self.axis] += start;
                let o = y.offset(&j);
                y.data[o] = x.at(i);
            });
            start += x.shape.dims()[self.axis];
        }
        y
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        let mut start = 0;
        for i in 0..v.operands.len() {
            let len = v.shape(v.operands[i]).dims()[self.axis];
            if v.wants[i] {
                let d = v.add(Slice { axis: self.axis, start, len }, &[v.grad])?;
                v.set(i, d);
            }
            start += len;
        }
        Ok(())
    }
}

/// Elements `start..start + len` along `axis`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slice {
    /// The axis sliced.
    pub axis: usize,
    /// First index kept.
    pub start: usize,
    /// Number of indices kept.
    pub len: usize,
}

impl OpSpec for Slice {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        let x = operands[0];
        if self.axis >= x.rank() || self.start + self.len > x.dims()[self.axis] {
            return Err(format!(
                "slice {}..{} of axis {} is out of range for {x}",
                self.start,
                self.start + self.len,
                self.axis
            ));
        }
        let mut dims = x.dims().to_vec();
        dims[self.axis] = self.len;
        Ok(Shape(dims))
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let x = operands[0];
        let mut y = Tensor::zeros(out.clone());
        let mut k = 0;
        for_each_index(out, |i| {
            let mut j = i.to_vec();
            j[self.axis] += self.start;
            y.data[k] = x.at(&j);
            k += 1;
        });
        y
    }
}

#[cfg(test)]
mod part_tests {
    use super::*;

    #[test]
    fn part_views_a_range_and_rejects_one_outside() {
        let x = Tensor::new([2, 3], (0..6).map(f64::from).collect());
        let part = Part { offset: 4, shape: vec![2] };
        let out = part.infer(&[&x.shape]).unwrap();
        assert_eq!(out, Shape(vec![2]));
        assert_eq!(part.eval(&[&x], &out, &EvalCtx::default()).data, [4.0, 5.0]);
        let err = Part { offset: 5, shape: vec![2] }.infer(&[&x.shape]).unwrap_err();
        assert!(err.contains("elements 5..7 are outside"), "{err}");
    }
}
