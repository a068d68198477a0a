//! The smallest useful network: a multi-layer perceptron built with the [`Sequential`]
//! builder, JIT-compiled and trained on MNIST.
//!
//! The same model as `examples/models/mlp.json`: flatten, 128 ReLU units, 10 softmax
//! outputs; plain SGD. Run it on the bundled 5,000-image subset, or on a directory of MNIST
//! IDX files, optionally stopping after N steps:
//!
//! ```text
//! cargo run --release --example mnist_mlp
//! cargo run --release --example mnist_mlp -- ../shared/data/mnist --steps 200
//! ```

mod common;

use kiln::ir::model::{Activation, Model, Optimizer, Sequential};
use kiln::runtime::TrainReport;

/// The model: 101,770 parameters.
pub fn model() -> Model {
    Sequential::new("mlp", [28, 28, 1])
        .flatten()
        .dense(128, Activation::Relu)
        .dense(10, Activation::Softmax)
        .optimizer(Optimizer::Sgd { lr: 0.1, momentum: 0.0, nesterov: false })
        .batch_size(64)
        .epochs(1)
        .build()
}

/// Trains the model with the command-line `args` (`[DATA_DIR] [--steps N] [--threads N]`).
pub fn run(args: impl IntoIterator<Item = String>) -> anyhow::Result<TrainReport> {
    common::train(model(), args, "test loss")
}

fn main() -> anyhow::Result<()> {
    run(std::env::args().skip(1))?;
    Ok(())
}
