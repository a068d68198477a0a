//! Matrix product, bias add and transpose: the parts of a dense layer.

use super::{expect_arity, EvalCtx, OpSpec, ReduceSum, Vjp};
use crate::shape::Shape;
use crate::tensor::{for_each_index, Tensor};
use crate::IrError;

fn is_false(b: &bool) -> bool {
    !*b
}

/// `op(a) · op(b)` for 2-D operands, where `op` transposes when the flag is set:
/// `[M, K] · [K, N] -> [M, N]`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatMul {
    /// Use the transpose of the first operand.
    #[serde(default, skip_serializing_if = "is_false")]
    pub transpose_a: bool,
    /// Use the transpose of the second operand.
    #[serde(default, skip_serializing_if = "is_false")]
    pub transpose_b: bool,
}

impl MatMul {
    /// (rows, inner) of the first operand and (inner, cols) of the second, after transposes.
    fn dims(&self, a: &Shape, b: &Shape) -> Result<(usize, usize, usize, usize), String> {
        if a.rank() != 2 || b.rank() != 2 {
            return Err(format!("operands must be 2-D matrices, got {a} and {b}"));
        }
        let (m, ka) = if self.transpose_a { (a.dim(1), a.dim(0)) } else { (a.dim(0), a.dim(1)) };
        let (kb, n) = if self.transpose_b { (b.dim(1), b.dim(0)) } else { (b.dim(0), b.dim(1)) };
        Ok((m, ka, kb, n))
    }
}

impl OpSpec for MatMul {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 2)?;
        let (m, ka, kb, n) = self.dims(operands[0], operands[1])?;
        if ka != kb {
            return Err(format!("inner dimensions differ: {ka} vs {kb}"));
        }
        Ok(Shape::new([m, n]))
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let (a, b) = (operands[0], operands[1]);
        let (m, k, _, n) = self.dims(&a.shape, &b.shape).expect("shapes were inferred");
        // Row-major offsets of op(a)[i, p] and op(b)[p, j].
        let a_at = |i: usize, p: usize| if self.transpose_a { p * m + i } else { i * k + p };
        let b_at = |p: usize, j: usize| if self.transpose_b { j * k + p } else { p * n + j };
        let mut c = Tensor::zeros(out.clone());
        for i in 0..m {
            for j in 0..n {
                c.data[i * n + j] = (0..k).map(|p| a.data[a_at(i, p)] * b.data[b_at(p, j)]).sum();
            }
        }
        c
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        let (a, b, g) = (v.operands[0], v.operands[1], v.grad);
        let (ta, tb) = (self.transpose_a, self.transpose_b);
        if v.wants[0] {
            // C = A'B': dA' = g B'^T; dA = dA' or its transpose.
            let da = if ta {
                v.add(MatMul { transpose_a: tb, transpose_b: true }, &[b, g])?
            } else {
                v.add(MatMul { transpose_a: false, transpose_b: !tb }, &[g, b])?
            };
            v.set(0, da);
        }
        if v.wants[1] {
            // dB' = A'^T g; dB = dB' or its transpose.
            let db = if tb {
                v.add(MatMul { transpose_a: true, transpose_b: ta }, &[g, a])?
            } else {
                v.add(MatMul { transpose_a: !ta, transpose_b: false }, &[a, g])?
            };
            v.set(1, db);
        }
        Ok(())
    }
}

/// `x + b` with the vector `b` added along the last axis of `x` (dense and conv biases).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BiasAdd {}

impl OpSpec for BiasAdd {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 2)?;
        let (x, b) = (operands[0], operands[1]);
        if x.rank() == 0 || b.rank() != 1 || b.dim(0) != x.dim(-1) {
            return Err(format!("bias must be a vector of the last dimension of {x}, got {b}"));
        }
        Ok(x.clone())
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, _: &EvalCtx) -> Tensor {
        let (x, b) = (operands[0], operands[1]);
        let c = b.data.len();
        let mut y = x.clone();
        for (i, v) in y.data.iter_mut().enumerate() {
            *v += b.data[i % c];
        }
        y
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        v.set(0, v.grad);
        if v.wants[1] {
            let rank = v.shape(v.grad).rank();
            let db = v.add(ReduceSum { axes: (0..rank - 1).collect() }, &[v.grad])?;
            v.set(1, db);
        }
        Ok(())
    }
}

/// Permutes axes: output axis `i` is input axis `perm[i]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transpose {
    /// The permutation.
    pub perm: Vec<usize>,
}

impl OpSpec for Transpose {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        let x = operands[0];
        let mut sorted = self.perm.clone();
        sorted.sort_unstable();
        if sorted != (0..x.rank()).collect::<Vec<_>>() {
            return Err(format!("perm {:?} is not a permutation of the axes of {x}", self.perm));
        }
        Ok(Shape(self.perm.iter().map(|&p| x.dims()[p]).collect()))
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let x = operands[0];
        let mut y = Tensor::zeros(out.clone());
        let mut k = 0;
        let mut src = vec![0; out.rank()];
        for_each_index(out, |i| {
            for (axis, &p) in self.perm.iter().enumerate() {
                src[p] = i[axis];
            }
            y.data[k] = x.at(&src);
            k += 1;
        });
        y
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        let mut inverse = vec![0; self.perm.len()];
        for (i, &p) in self.perm.iter().enumerate() {
            inverse[p] = i;
        }
        let dx = v.add(Transpose { perm: inverse }, &[v.grad])?;
        v.set(0, dx);
        Ok(())
    }
}
