//! Losses and one-hot encoding.
//!
//! Every loss is a weighted sum over the examples of the batch: its last operand holds one
//! weight per example (`[N]`). The runtime writes `1/n` for the `n` real examples of a batch and
//! `0` for the rows that pad a short last batch up to the compiled batch size, so one compiled
//! program computes the mean over the real examples of any batch, and padding rows get no
//! gradient. A per-example loss over several values (mse, bce) is the mean over the example's
//! values.

use super::{expect_arity, Broadcast, EvalCtx, Mul, Neg, OpSpec, Softmax, Sub, Vjp};
use crate::graph::NodeId;
use crate::shape::Shape;
use crate::tensor::Tensor;
use crate::IrError;

/// `one_hot(labels)`: integer class ids `[N]` (stored as f32) to `[N, classes]`; ids outside
/// `0..classes` give a row of zeros.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneHot {
    /// Number of classes.
    pub classes: usize,
}

impl OpSpec for OneHot {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        if operands[0].rank() != 1 {
            return Err(format!("labels must be a vector [N], got {}", operands[0]));
        }
        Ok(Shape::new([operands[0].dim(0), self.classes]))
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let mut y = Tensor::zeros(out.clone());
        for (i, &label) in operands[0].data.iter().enumerate() {
            if label >= 0.0 && (label as usize) < self.classes && label.fract() == 0.0 {
                y.data[i * self.classes + label as usize] = 1.0;
            }
        }
        y
    }
}

/// Checks the weights operand of a loss: a vector `[N]` matching the batch of `first`.
fn check_weights(first: &Shape, weights: &Shape) -> Result<(), String> {
    if first.rank() == 0 || weights.rank() != 1 || weights.dim(0) != first.dim(0) {
        return Err(format!(
            "needs example weights [N] for a batch of N = {}, got {weights}",
            if first.rank() == 0 { 0 } else { first.dim(0) }
        ));
    }
    Ok(())
}

/// `weights [N]` times the scalar `g`, broadcast to `shape` along every axis but the first:
/// the factor every loss gradient is scaled by.
fn weighted_grad(v: &mut Vjp<'_>, weights: NodeId, shape: &Shape) -> Result<NodeId, IrError> {
    let scaled = v.add(Mul {}, &[weights, v.grad])?;
    if shape.rank() == 1 {
        return Ok(scaled);
    }
    let axes = (1..shape.rank()).collect();
    v.add(Broadcast { shape: shape.dims().to_vec(), axes }, &[scaled])
}

/// The per-example means of `term` over the rows of `p` and `t` (same shape `[N, ...]`),
/// summed with the weights `w`.
fn weighted_row_means(p: &Tensor, t: &Tensor, w: &Tensor, term: impl Fn(f64, f64) -> f64) -> f64 {
    let n = p.shape.dim(0);
    let row = p.data.len().checked_div(n).unwrap_or(0);
    if row == 0 {
        return 0.0;
    }
    p.data
        .chunks(row)
        .zip(t.data.chunks(row))
        .zip(&w.data)
        .map(|((p, t), w)| {
            w * (p.iter().zip(t).map(|(&a, &b)| term(a, b)).sum::<f64>() / row as f64)
        })
        .sum()
}

/// `softmax_cross_entropy(logits [N, C], labels [N], weights [N])`: the weighted sum over the
/// examples of `-log softmax(logits)[label]`, computed stably with log-sum-exp.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftmaxCrossEntropy {}

impl OpSpec for SoftmaxCrossEntropy {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 3)?;
        let (x, l) = (operands[0], operands[1]);
        if x.rank() != 2 || l.rank() != 1 || l.dim(0) != x.dim(0) {
            return Err(format!("needs logits [N, C] and labels [N], got {x} and {l}"));
        }
        check_weights(x, operands[2])?;
        Ok(Shape::scalar())
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, _: &EvalCtx) -> Tensor {
        let (x, labels, weights) = (operands[0], operands[1], operands[2]);
        let c = x.shape.dim(1);
        let total: f64 = x
            .data
            .chunks(c)
            .zip(&labels.data)
            .zip(&weights.data)
            .map(|((row, &label), &w)| {
                let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                // A label outside the classes (padding) picks nothing, like one_hot.
                let picked =
                    if label >= 0.0 && (label as usize) < c { row[label as usize] } else { 0.0 };
                w * (lse - picked)
            })
            .sum();
        Tensor::scalar(total)
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        // d logits = (softmax(logits) - one_hot(labels)) * w[:, None] * g; labels and weights
        // get none.
        let (logits, labels, weights) = (v.operands[0], v.operands[1], v.operands[2]);
        let shape = v.shape(logits);
        let p = v.add(Softmax {}, &[logits])?;
        let onehot = v.add(OneHot { classes: shape.dim(1) }, &[labels])?;
        let diff = v.add(Sub {}, &[p, onehot])?;
        let scale = weighted_grad(v, weights, &shape)?;
        let d = v.add(Mul {}, &[diff, scale])?;
        v.set(0, d);
        Ok(())
    }
}

fn same_shape_loss(operands: &[&Shape]) -> Result<Shape, String> {
    expect_arity(operands, 3)?;
    if operands[0] != operands[1] {
        return Err(format!(
            "prediction {} and target {} must have the same shape",
            operands[0], operands[1]
        ));
    }
    check_weights(operands[0], operands[2])?;
    Ok(Shape::scalar())
}

/// `mse(prediction, target, weights)`: the weighted sum over the examples of the mean of
/// `(prediction - target)^2` over the example's values.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeanSquaredError {}

impl OpSpec for MeanSquaredError {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        same_shape_loss(operands)
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, _: &EvalCtx) -> Tensor {
        let (p, t, w) = (operands[0], operands[1], operands[2]);
        Tensor::scalar(weighted_row_means(p, t, w, |a, b| (a - b) * (a - b)))
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        // d prediction = (prediction - target) * (2 / values per example) * w * g;
        // d target = -that.
        let (p, t, w) = (v.operands[0], v.operands[1], v.operands[2]);
        let shape = v.shape(p);
        let per_example = shape.numel() / shape.dim(0).max(1);
        let diff = v.add(Sub {}, &[p, t])?;
        let k = v.scalar(2.0 / per_example as f64)?;
        let scaled = v.add(Mul {}, &[diff, k])?;
        let scale = weighted_grad(v, w, &shape)?;
        let dp = v.add(Mul {}, &[scaled, scale])?;
        v.set(0, dp);
        if v.wants[1] {
            let dt = v.add(Neg {}, &[dp])?;
            v.set(1, dt);
        }
        Ok(())
    }
}

/// Probabilities are clipped to `[EPS, 1 - EPS]` before the logarithms (as Keras does).
pub const BCE_EPS: f64 = 1e-7;

/// The binary cross-entropy of one value, `p` clipped.
fn bce(p: f64, t: f64) -> f64 {
    let p = p.clamp(BCE_EPS, 1.0 - BCE_EPS);
    -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
}

/// `binary_cross_entropy(p, t, weights)`: the weighted sum over the examples of the mean of
/// `-(t log p + (1 - t) log(1 - p))` over the example's values, `p` clipped.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryCrossEntropy {}

impl OpSpec for BinaryCrossEntropy {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        same_shape_loss(operands)
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, _: &EvalCtx) -> Tensor {
        let (p, t, w) = (operands[0], operands[1], operands[2]);
        Tensor::scalar(weighted_row_means(p, t, w, bce))
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        let (p, t, w) = (v.operands[0], v.operands[1], v.operands[2]);
        let d = v.add(BinaryCrossEntropyGrad {}, &[p, t, w])?;
        let dp = v.add(Mul {}, &[d, v.grad])?;
        v.set(0, dp);
        Ok(())
    }
}

/// `binary_cross_entropy_grad(p, t, weights)`: the gradient of the binary cross-entropy with
/// respect to `p`, `(p - t) / (p (1 - p)) * w / values per example` inside the clip range and 0
/// outside.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryCrossEntropyGrad {}

impl OpSpec for BinaryCrossEntropyGrad {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        same_shape_loss(operands)?;
        Ok(operands[0].clone())
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let (p, t, w) = (operands[0], operands[1], operands[2]);
        let row = p.data.len() / p.shape.dim(0).max(1);
        let data = p
            .data
            .iter()
            .zip(&t.data)
            .enumerate()
            .map(|(i, (&p, &t))| {
                if !(BCE_EPS..=1.0 - BCE_EPS).contains(&p) {
                    0.0
                } else {
                    (p - t) / (p * (1.0 - p)) * w.data[i / row] / row as f64
                }
            })
            .collect();
        Tensor::new(out.clone(), data)
    }
}
