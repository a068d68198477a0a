//! LeNet-5 built in Rust with the [`Sequential`] builder, JIT-compiled and trained on MNIST.
//!
//! The same model as `examples/models/lenet5.json`: two 5×5 convolutions with max pooling,
//! then three dense layers; SGD with momentum. Run it on the bundled 5,000-image subset, or
//! on a directory of MNIST IDX files, optionally stopping after N steps:
//!
//! ```text
//! cargo run --release --example lenet5
//! cargo run --release --example lenet5 -- ../shared/data/mnist --steps 200
//! ```

mod common;

use kiln::ir::model::{Activation, Loss, Model, Optimizer, Sequential, Training};
use kiln::runtime::TrainReport;

/// The model: 61,706 parameters.
#[rustfmt::skip] // one line per layer
pub fn model() -> Model {
    Sequential::new("lenet5", [28, 28, 1])
        .conv2d(6, 5).padding_same().activation(Activation::Relu)
        .max_pool2d(2)
        .conv2d(16, 5).activation(Activation::Relu)
        .max_pool2d(2)
        .flatten()
        .dense(120, Activation::Relu)
        .dense(84, Activation::Relu)
        .dense(10, Activation::Softmax)
        .train(Training {
            loss: Loss::SoftmaxCrossEntropy,
            optimizer: Optimizer::Sgd { lr: 0.05, momentum: 0.9, nesterov: false },
            batch_size: 64,
            epochs: 1,
            ..Training::default()
        })
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
