//! Losses (each gives the mean over the batch as a scalar) and one-hot encoding.

use super::{expect_arity, Div, EvalCtx, Mul, Neg, OpSpec, Softmax, Sub, Vjp};
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

/// `softmax_cross_entropy(logits [N, C], labels [N])`: mean over the batch of
/// `-log softmax(logits)[label]`, computed stably with log-sum-exp.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftmaxCrossEntropy {}

impl OpSpec for SoftmaxCrossEntropy {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 2)?;
        let (x, l) = (operands[0], operands[1]);
        if x.rank() != 2 || l.rank() != 1 || l.dim(0) != x.dim(0) {
            return Err(format!("needs logits [N, C] and labels [N], got {x} and {l}"));
        }
        Ok(Shape::scalar())
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, _: &EvalCtx) -> Tensor {
        let (x, labels) = (operands[0], operands[1]);
        let c = x.shape.dim(1);
        let n = x.shape.dim(0);
        let total: f64 = x
            .data
            .chunks(c)
            .zip(&labels.data)
            .map(|(row, &label)| {
                let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                lse - row[label as usize]
            })
            .sum();
        Tensor::scalar(total / n as f64)
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        // d logits = (softmax(logits) - one_hot(labels)) * g / N; labels get none.
        let (logits, labels) = (v.operands[0], v.operands[1]);
        let shape = v.shape(logits);
        let p = v.add(Softmax {}, &[logits])?;
        let onehot = v.add(OneHot { classes: shape.dim(1) }, &[labels])?;
        let diff = v.add(Sub {}, &[p, onehot])?;
        let n = v.scalar(shape.dim(0) as f64)?;
        let scale = v.add(Div {}, &[v.grad, n])?;
        let d = v.add(Mul {}, &[diff, scale])?;
        v.set(0, d);
        Ok(())
    }
}

fn same_shape_loss(operands: &[&Shape]) -> Result<Shape, String> {
    expect_arity(operands, 2)?;
    if operands[0] != operands[1] {
        return Err(format!(
            "prediction {} and target {} must have the same shape",
            operands[0], operands[1]
        ));
    }
    Ok(Shape::scalar())
}

/// `mse(prediction, target)`: mean over all elements of `(prediction - target)^2`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeanSquaredError {}

impl OpSpec for MeanSquaredError {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        same_shape_loss(operands)
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, _: &EvalCtx) -> Tensor {
        let (p, t) = (operands[0], operands[1]);
        let sum: f64 = p.data.iter().zip(&t.data).map(|(a, b)| (a - b) * (a - b)).sum();
        Tensor::scalar(sum / p.data.len() as f64)
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        // d prediction = (prediction - target) * 2 g / numel; d target = -that.
        let (p, t) = (v.operands[0], v.operands[1]);
        let numel = v.shape(p).numel() as f64;
        let diff = v.add(Sub {}, &[p, t])?;
        let k = v.scalar(2.0 / numel)?;
        let scale = v.add(Mul {}, &[v.grad, k])?;
        let dp = v.add(Mul {}, &[diff, scale])?;
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

/// `binary_cross_entropy(p, t)`: mean of `-(t log p + (1 - t) log(1 - p))` with `p` clipped.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryCrossEntropy {}

impl OpSpec for BinaryCrossEntropy {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        same_shape_loss(operands)
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, _: &EvalCtx) -> Tensor {
        let (p, t) = (operands[0], operands[1]);
        let sum: f64 = p
            .data
            .iter()
            .zip(&t.data)
            .map(|(&p, &t)| {
                let p = p.clamp(BCE_EPS, 1.0 - BCE_EPS);
                -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
            })
            .sum();
        Tensor::scalar(sum / p.data.len() as f64)
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        let (p, t) = (v.operands[0], v.operands[1]);
        let d = v.add(BinaryCrossEntropyGrad {}, &[p, t])?;
        let dp = v.add(Mul {}, &[d, v.grad])?;
        v.set(0, dp);
        Ok(())
    }
}

/// `binary_cross_entropy_grad(p, t)`: the gradient of the mean binary cross-entropy with
/// respect to `p`, `(p - t) / (p (1 - p)) / numel` inside the clip range and 0 outside.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryCrossEntropyGrad {}

impl OpSpec for BinaryCrossEntropyGrad {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        same_shape_loss(operands)?;
        Ok(operands[0].clone())
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let (p, t) = (operands[0], operands[1]);
        let n = p.data.len() as f64;
        let data = p
            .data
            .iter()
            .zip(&t.data)
            .map(|(&p, &t)| {
                if !(BCE_EPS..=1.0 - BCE_EPS).contains(&p) {
                    0.0
                } else {
                    (p - t) / (p * (1.0 - p)) / n
                }
            })
            .collect();
        Tensor::new(out.clone(), data)
    }
}
