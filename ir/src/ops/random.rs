//! Training-time randomness: dropout and Gaussian noise.
//!
//! Both draw from a counter-based generator: the value for element `i` at step `s` is a hash of
//! `(seed, s, i)`. So the backward pass sees the forward pass's mask without storing it, every
//! backend (and every thread split) draws the same numbers, and a 32-bit integer hash is cheap
//! to vectorise in generated code.

use super::{expect_arity, EvalCtx, OpSpec, Vjp};
use crate::shape::Shape;
use crate::tensor::Tensor;
use crate::IrError;

/// A 32-bit integer mixer with low bias (the "lowbias32" constants).
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// A uniform number in `[0, 1)` with 24 random bits (exact in f32) for element `index` of a
/// random op with `seed` at training step `step`.
pub fn counter_uniform(seed: u64, step: u64, index: u64) -> f64 {
    let key =
        mix32((seed as u32) ^ mix32((step as u32) ^ mix32((seed >> 32) as u32 ^ 0x9e37_79b9)));
    let bits = mix32(key ^ mix32(index as u32));
    (bits >> 8) as f64 / (1u32 << 24) as f64
}

fn check_rate(rate: f64) -> Result<(), String> {
    if (0.0..1.0).contains(&rate) {
        Ok(())
    } else {
        Err(format!("rate must be in [0, 1), got {rate}"))
    }
}

/// Inverted dropout: each element is zeroed with probability `rate`, the rest are scaled by
/// `1 / (1 - rate)`. Only training graphs contain it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropout {
    /// Probability of dropping an element, in [0, 1).
    pub rate: f64,
    /// The generator's seed.
    pub seed: u64,
}

impl OpSpec for Dropout {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        check_rate(self.rate)?;
        Ok(operands[0].clone())
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, ctx: &EvalCtx) -> Tensor {
        let scale = 1.0 / (1.0 - self.rate);
        let data = operands[0]
            .data
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let keep = counter_uniform(self.seed, ctx.step, i as u64) >= self.rate;
                if keep {
                    x * scale
                } else {
                    0.0
                }
            })
            .collect();
        Tensor::new(out.clone(), data)
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        // The same mask and scale apply to the gradient: dropout is linear for a fixed mask.
        let dx = v.add(self.clone(), &[v.grad])?;
        v.set(0, dx);
        Ok(())
    }
}

/// Adds `stddev * z` with `z` standard normal (Box–Muller on two counter uniforms) to every
/// element. Only training graphs contain it (the denoising autoencoder's input noise).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaussianNoise {
    /// Standard deviation of the noise.
    pub stddev: f64,
    /// The generator's seed.
    pub seed: u64,
}

impl OpSpec for GaussianNoise {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        if !(self.stddev >= 0.0 && self.stddev.is_finite()) {
            return Err(format!("stddev must be finite and >= 0, got {}", self.stddev));
        }
        Ok(operands[0].clone())
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, ctx: &EvalCtx) -> Tensor {
        let data = operands[0]
            .data
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let i = i as u64;
                let u1 = 1.0 - counter_uniform(self.seed, ctx.step, 2 * i);
                let u2 = counter_uniform(self.seed, ctx.step, 2 * i + 1);
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                x + self.stddev * z
            })
            .collect();
        Tensor::new(out.clone(), data)
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        v.set(0, v.grad);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_uniform_is_uniform_and_keyed() {
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|i| counter_uniform(42, 3, i)).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        let below = xs.iter().filter(|&&x| x < 0.25).count() as f64 / n as f64;
        assert!((below - 0.25).abs() < 0.01, "P(x<0.25) = {below}");
        assert_ne!(counter_uniform(42, 3, 7), counter_uniform(42, 4, 7));
        assert_ne!(counter_uniform(42, 3, 7), counter_uniform(43, 3, 7));
        assert_eq!(counter_uniform(42, 3, 7), counter_uniform(42, 3, 7));
    }
}
