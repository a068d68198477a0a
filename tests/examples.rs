//! Runs every example program (`examples/*.rs`) for a few steps on the bundled MNIST subset:
//! each example's source is included as a module and its `run` called, so the examples are
//! compiled and exercised by `cargo test` without building them as binaries.

// Each example includes `examples/common/mod.rs` as its own `common` module.
#![allow(clippy::duplicate_mod)]

use kiln::ir::model::Model;
use kiln::runtime::TrainReport;

#[allow(dead_code)]
#[path = "../examples/mnist_mlp.rs"]
mod mnist_mlp;

#[allow(dead_code)]
#[path = "../examples/lenet5.rs"]
mod lenet5;

#[allow(dead_code)]
#[path = "../examples/keras_cnn.rs"]
mod keras_cnn;

#[allow(dead_code)]
#[path = "../examples/autoencoder.rs"]
mod autoencoder;

const STEPS: usize = 30;

/// The example's arguments for a short run: `--steps 30 --threads 1` (tests run in parallel).
fn short_run() -> Vec<String> {
    ["--steps", "30", "--threads", "1"].map(String::from).to_vec()
}

/// Checks that the run took its steps and that the training loss fell.
fn check_training(name: &str, report: &TrainReport) {
    assert_eq!(report.steps, STEPS, "{name}: steps");
    assert_eq!(report.losses.len(), STEPS, "{name}: losses");
    let mean = |l: &[f32]| l.iter().sum::<f32>() / l.len() as f32;
    let (first, last) = (mean(&report.losses[..5]), mean(&report.losses[STEPS - 5..]));
    assert!(last < first, "{name}: the loss did not fall: {first} -> {last}");
    assert!(report.final_test_loss.is_finite(), "{name}: test loss {}", report.final_test_loss);
}

/// Checks that a classifier reports a test accuracy better than chance.
fn check_accuracy(name: &str, report: &TrainReport) {
    let acc = report.final_test_accuracy.unwrap_or_else(|| panic!("{name}: no accuracy"));
    assert!(acc > 0.2, "{name}: test accuracy {acc}");
}

fn check_model_file(name: &str, model: &Model) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/models")
        .join(format!("{name}.json"));
    let file = Model::load(&path).unwrap();
    assert_eq!(model.layers, file.layers, "{name}: layers");
    assert_eq!(model.training, file.training, "{name}: training");
}

#[test]
fn mnist_mlp_example_trains() {
    check_model_file("mlp", &mnist_mlp::model());
    let report = mnist_mlp::run(short_run()).unwrap();
    check_training("mnist_mlp", &report);
    check_accuracy("mnist_mlp", &report);
}

#[test]
fn lenet5_example_trains() {
    check_model_file("lenet5", &lenet5::model());
    let report = lenet5::run(short_run()).unwrap();
    check_training("lenet5", &report);
    check_accuracy("lenet5", &report);
}

#[test]
fn keras_cnn_example_trains() {
    check_model_file("keras_cnn", &keras_cnn::model());
    let report = keras_cnn::run(short_run()).unwrap();
    check_training("keras_cnn", &report);
    check_accuracy("keras_cnn", &report);
}

#[test]
fn autoencoder_example_reports_the_reconstruction_mse() {
    check_model_file("autoencoder", &autoencoder::model());
    let report = autoencoder::run(short_run()).unwrap();
    check_training("autoencoder", &report);
    assert_eq!(report.final_test_accuracy, None, "autoencoder: accuracy");
    assert!(report.final_test_loss < 0.2, "autoencoder: MSE {}", report.final_test_loss);
}

#[test]
fn examples_reject_bad_arguments() {
    for args in [&["--steps"][..], &["--steps", "x"], &["--bogus"], &["a", "b"]] {
        let args = args.iter().map(|s| s.to_string());
        assert!(mnist_mlp::run(args).is_err());
    }
}
