//! A dense autoencoder built with the [`Sequential`] builder, JIT-compiled and trained to
//! reconstruct MNIST digits through a 32-value bottleneck.
//!
//! The same model as `examples/models/autoencoder.json`: 784 → 128 → 32 → 128 → 784 with a
//! sigmoid output, mean squared error against the input itself (no labels), Adam. It reports
//! the reconstruction MSE on the test set. Run it on the bundled 5,000-image subset, or on a
//! directory of MNIST IDX files, optionally stopping after N steps:
//!
//! ```text
//! cargo run --release --example autoencoder
//! cargo run --release --example autoencoder -- ../shared/data/mnist --steps 200
//! ```

mod common;

use kiln::ir::model::{Activation, Loss, Model, Optimizer, Sequential, Target};
use kiln::runtime::TrainReport;

/// The model: flat 784-pixel images in, the same out.
pub fn model() -> Model {
    Sequential::new("autoencoder", [784])
        .dense(128, Activation::Relu)
        .dense(32, Activation::Relu) // the code
        .dense(128, Activation::Relu)
        .dense(784, Activation::Sigmoid)
        .loss(Loss::Mse)
        .target(Target::Input)
        .optimizer(Optimizer::Adam { lr: 0.001, beta1: 0.9, beta2: 0.999, eps: 1e-7 })
        .build()
}

/// Trains the model with the command-line `args` (`[DATA_DIR] [--steps N] [--threads N]`).
pub fn run(args: impl IntoIterator<Item = String>) -> anyhow::Result<TrainReport> {
    // The loss is the MSE: the per-epoch "test loss" is the reconstruction error.
    common::train(model(), args, "reconstruction MSE")
}

fn main() -> anyhow::Result<()> {
    run(std::env::args().skip(1))?;
    Ok(())
}
