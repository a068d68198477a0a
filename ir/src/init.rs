//! Parameter initialisers (Keras' defaults), seeded and reproducible across machines.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::shape::Shape;

/// How a parameter or state tensor is filled before the first step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// All zeros (Keras' bias default).
    Zeros,
    /// All ones.
    Ones,
    /// Uniform in ±sqrt(6 / (fan_in + fan_out)) (Keras' kernel default).
    GlorotUniform,
    /// Truncated normal with stddev sqrt(2 / fan_in) (Keras' `he_normal`).
    HeNormal,
}

/// Fan-in and fan-out of a weight tensor: `[in, out]` for dense, `[h, w, in, out]` for conv.
pub fn fans(shape: &Shape) -> (usize, usize) {
    match shape.dims() {
        [] => (1, 1),
        [n] => (*n, *n),
        [i, o] => (*i, *o),
        dims => {
            let receptive: usize = dims[..dims.len() - 2].iter().product();
            (receptive * dims[dims.len() - 2], receptive * dims[dims.len() - 1])
        }
    }
}

/// The initial values of a tensor. Values are rounded to f32 so that every backend starts from
/// exactly the same weights.
pub fn initial_values(init: Init, shape: &Shape, seed: u64) -> Vec<f64> {
    let n = shape.numel();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (fan_in, fan_out) = fans(shape);
    let values: Vec<f64> = match init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::GlorotUniform => {
            let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
            (0..n).map(|_| rng.random_range(-limit..limit)).collect()
        }
        Init::HeNormal => {
            // Keras divides by the stddev of a unit normal truncated at ±2.
            let stddev = (2.0 / fan_in as f64).sqrt() / 0.879_625_661_034_239_8;
            (0..n)
                .map(|_| loop {
                    let z = standard_normal(&mut rng);
                    if z.abs() <= 2.0 {
                        break z * stddev;
                    }
                })
                .collect()
        }
    };
    values.into_iter().map(|v| v as f32 as f64).collect()
}

fn standard_normal(rng: &mut impl Rng) -> f64 {
    // Box–Muller; u1 in (0, 1] so the log is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glorot_is_within_limit_and_seeded() {
        let shape = Shape::new([784, 128]);
        let a = initial_values(Init::GlorotUniform, &shape, 7);
        let b = initial_values(Init::GlorotUniform, &shape, 7);
        let c = initial_values(Init::GlorotUniform, &shape, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let limit = (6.0f64 / 912.0).sqrt();
        assert!(a.iter().all(|v| v.abs() <= limit));
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.01 * limit);
    }

    #[test]
    fn he_normal_has_the_right_spread() {
        let shape = Shape::new([3, 3, 32, 64]);
        let v = initial_values(Init::HeNormal, &shape, 1);
        let std = (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
        let want = (2.0f64 / 288.0).sqrt();
        assert!((std - want).abs() < 0.05 * want, "std {std} want {want}");
    }
}
