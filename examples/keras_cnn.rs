//! The Keras "simple MNIST convnet" built with the [`Sequential`] builder, JIT-compiled and
//! trained on MNIST.
//!
//! The same model as `examples/models/keras_cnn.json`: three 3×3 convolutions (32, 64, 64
//! filters) with max pooling, a dense layer of 64 and 10 softmax outputs; RMSprop. Run it on
//! the bundled 5,000-image subset, or on a directory of MNIST IDX files, optionally stopping
//! after N steps:
//!
//! ```text
//! cargo run --release --example keras_cnn
//! cargo run --release --example keras_cnn -- ../shared/data/mnist --steps 200
//! ```

mod common;

use kiln::ir::model::{Activation, Model, Optimizer, Sequential};
use kiln::runtime::TrainReport;

/// The model: 93,322 parameters.
#[rustfmt::skip] // one line per layer
pub fn model() -> Model {
    Sequential::new("keras_cnn", [28, 28, 1])
        .conv2d(32, 3).activation(Activation::Relu)
        .max_pool2d(2)
        .conv2d(64, 3).activation(Activation::Relu)
        .max_pool2d(2)
        .conv2d(64, 3).activation(Activation::Relu)
        .flatten()
        .dense(64, Activation::Relu)
        .dense(10, Activation::Softmax)
        .optimizer(Optimizer::Rmsprop { lr: 0.001, rho: 0.9, eps: 1e-7 })
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
