//! Checkpoints end to end: `kiln train --checkpoint/--resume`, and save → restore into a fresh
//! backend continuing bit-identically.

mod common;

use common::{kiln, root, stderr, stdout};

use kiln::backend::{InterpreterBackend, JitBackend};
use kiln::ir::model::Model;
use kiln::runtime::checkpoint::{load, save, save_every_epoch};
use kiln::runtime::{
    bundled, fit, fit_with_epoch_end, Batch, Checkpoint, Checkpointable, StepBackend, TrainConfig,
};

/// The printed metrics of `epoch` (its `epoch N:` line without the throughput and time).
fn epoch_metrics(stdout: &str, epoch: usize) -> String {
    let prefix = format!("epoch {epoch}: ");
    let line =
        stdout.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{stdout}"));
    line.split(" images/s").next().and_then(|l| l.rsplit_once(", ")).unwrap().0.to_string()
}

/// A checkpoint's tensors with their values as bits, so comparisons are exact.
type TensorBits = Vec<(String, Vec<usize>, Vec<u32>)>;

/// A checkpoint's step, epoch and tensors as bits (NaN and -0 compare exactly).
fn bits(c: &Checkpoint) -> (u64, u64, TensorBits) {
    let tensors = c
        .tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), v.iter().map(|x| x.to_bits()).collect()));
    (c.step, c.epoch, tensors.collect())
}

fn model(name: &str) -> Model {
    Model::load(&root().join(format!("examples/models/{name}.json"))).unwrap()
}

/// A deterministic batch of `n` examples of `len` values in [0, 1) with labels 0..10.
fn batch_data(n: usize, len: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 40) as f32) / (1u64 << 24) as f32
    };
    let x = (0..n * len).map(|_| next()).collect();
    let y = (0..n).map(|i| ((i as u64 * 7 + seed) % 10) as f32).collect();
    (x, y)
}

#[test]
fn train_with_checkpoint_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.safetensors");
    let f = file.to_str().unwrap();
    let out = kiln(&["train", "examples/models/mlp.json", "--steps", "20", "--checkpoint", f]);
    assert!(out.status.success(), "{}", stderr(&out));
    let c = load(&file).unwrap();
    assert_eq!(c.model, "mlp");
    assert_eq!(c.step, 20);
    assert_eq!(c.epoch, 1);
    assert!(c.tensors.iter().any(|(_, shape, _)| shape == &[784, 128]), "{:?}", c.tensors);

    let out = kiln(&["train", "examples/models/mlp.json", "--steps", "20", "--resume", f]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resumed from"), "{}", stderr(&out));

    // Resume and keep checkpointing into the same file: the counts continue.
    let out = kiln(&[
        "train",
        "examples/models/mlp.json",
        "--steps",
        "20",
        "--resume",
        f,
        "--checkpoint",
        f,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let c = load(&file).unwrap();
    assert_eq!((c.step, c.epoch), (40, 2));
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
}

#[test]
fn two_epochs_straight_equal_one_epoch_then_a_resumed_one() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, split) = (dir.path().join("straight.st"), dir.path().join("split.st"));
    let (straight, split) = (straight.to_str().unwrap(), split.to_str().unwrap());
    let train = |extra: &[&str]| {
        let args =
            [&["train", "examples/models/mlp.json", "--batch", "128", "--log-every", "0"], extra];
        let out = kiln(&args.concat());
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };
    let whole = stdout(&train(&["--epochs", "2", "--checkpoint", straight]));
    let first = stdout(&train(&["--epochs", "1", "--checkpoint", split]));
    assert_eq!(load(split).unwrap().epoch, 1);
    let out = train(&["--epochs", "1", "--resume", split, "--checkpoint", split]);
    assert!(stderr(&out).contains("(step 40, epoch 1)"), "{}", stderr(&out));
    assert!(stderr(&out).contains("saved checkpoint"), "{}", stderr(&out));
    let second = stdout(&out);

    assert_eq!(epoch_metrics(&first, 1), epoch_metrics(&whole, 1));
    assert_eq!(epoch_metrics(&second, 2), epoch_metrics(&whole, 2), "resumed as epoch 2");
    let (a, b) = (load(straight).unwrap(), load(split).unwrap());
    assert_eq!((a.step, a.epoch), (80, 2), "40 steps of 128 per epoch");
    assert!(bits(&a) == bits(&b), "final parameters and optimizer state differ");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary file is left");
}

#[test]
fn a_resumed_fit_reaches_the_same_test_loss_bit_for_bit() {
    // maxout_mlp has dropout (its masks follow the step counter) and momentum state.
    let mut m = model("maxout_mlp");
    m.training.batch_size = 100;
    let data = bundled().unwrap();
    let config = |epochs, completed_epochs| TrainConfig {
        epochs,
        completed_epochs,
        batch_size: m.training.batch_size,
        seed: 5,
        log_every: 0,
        ..TrainConfig::default()
    };
    let mut straight = JitBackend::new(m.clone(), 2).unwrap();
    let whole = fit(&mut straight, &data, &config(2, 0), |_| {}).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("epoch1.safetensors");
    let mut first = JitBackend::new(m.clone(), 2).unwrap();
    fit_with_epoch_end(&mut first, &data, &config(1, 0), |_| {}, save_every_epoch(&file)).unwrap();
    let mut resumed = JitBackend::new(m.clone(), 2).unwrap();
    resumed.restore(&load(&file).unwrap()).unwrap();
    let rest = fit(&mut resumed, &data, &config(1, 1), |_| {}).unwrap();

    assert_eq!(rest.final_test_loss.to_bits(), whole.final_test_loss.to_bits());
    assert_eq!(rest.final_test_accuracy, whole.final_test_accuracy);
    assert_eq!(rest.losses, whole.losses[50..], "epoch 2's step losses");
    assert!(bits(&resumed.checkpoint()) == bits(&straight.checkpoint()));
}

#[test]
fn an_unwritable_checkpoint_path_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        kiln(&["train", "examples/models/mlp.json", "--checkpoint", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("cannot write checkpoint: it is a directory"), "{err}");
    assert!(!stdout(&out).contains("epoch 1"), "no training happened");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn resuming_a_checkpoint_of_another_model_exits_2_naming_the_models() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lenet.safetensors");
    let f = file.to_str().unwrap();
    let out = kiln(&["train", "examples/models/lenet5.json", "--steps", "1", "--checkpoint", f]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kiln(&["train", "examples/models/mlp.json", "--steps", "1", "--resume", f]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("lenet.safetensors"), "{err}");
    assert!(err.contains("checkpoint is for model `lenet5`, not `mlp`"), "{err}");
}

#[test]
fn resuming_a_missing_or_corrupt_checkpoint_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.safetensors");
    let out = kiln(&["train", "examples/models/mlp.json", "--resume", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.safetensors"), "{}", stderr(&out));

    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"garbage").unwrap();
    let out = kiln(&["train", "examples/models/mlp.json", "--resume", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad.safetensors"), "{}", stderr(&out));
}

#[test]
fn checkpointing_into_a_missing_directory_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nope/a.safetensors");
    let out = kiln(&[
        "train",
        "examples/models/mlp.json",
        "--steps",
        "1",
        "--checkpoint",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}: cannot write checkpoint", file.display())), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "the cause is given once: {err}");
}

/// Runs `steps` training steps from step `from`, returning the losses' bits.
fn train(backend: &mut dyn StepBackend, model: &Model, from: u64, steps: u64) -> Vec<u32> {
    let n = model.training.batch_size;
    let len: usize = model.input.shape.iter().product();
    (from..from + steps)
        .map(|s| {
            let (x, y) = batch_data(n, len, s);
            backend.train_step(&Batch { x: &x, labels: &y, len: n }).unwrap().to_bits()
        })
        .collect()
}

#[test]
fn jit_save_then_restore_into_a_fresh_backend_continues_bit_identically() {
    // mlp and maxout_mlp (dropout: its masks depend on the restored step counter).
    for name in ["mlp", "maxout_mlp"] {
        let mut m = model(name);
        m.training.batch_size = 8;
        let mut original = JitBackend::new(m.clone(), 2).unwrap();
        train(&mut original, &m, 0, 3);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jit.safetensors");
        save(&file, &original.checkpoint()).unwrap();
        let mut fresh = JitBackend::new(m.clone(), 2).unwrap();
        fresh.restore(&load(&file).unwrap()).unwrap();
        assert_eq!(fresh.checkpoint(), original.checkpoint(), "{name}");

        let want = train(&mut original, &m, 3, 3);
        let got = train(&mut fresh, &m, 3, 3);
        assert_eq!(got, want, "{name}: next-step losses after restore");
        assert_eq!(fresh.checkpoint(), original.checkpoint(), "{name}");
    }
}

#[test]
fn restoring_into_another_model_names_both_models() {
    let (mut mlp, mut lenet) = (model("mlp"), model("lenet5"));
    mlp.training.batch_size = 2;
    lenet.training.batch_size = 2;
    let c = JitBackend::new(lenet, 1).unwrap().checkpoint();
    let mut b = JitBackend::new(mlp.clone(), 1).unwrap();
    let e = b.restore(&c).unwrap_err();
    assert_eq!(e.to_string(), "checkpoint is for model `lenet5`, not `mlp`");

    // Same name, another layer width: the tensor and both shapes are named.
    let mut c = b.checkpoint();
    let t = c.tensors.iter_mut().find(|(_, s, _)| s.len() == 2).unwrap();
    let (name, model_shape) = (t.0.clone(), t.1.clone());
    t.1[1] += 1;
    t.2.resize(t.1.iter().product(), 0.0);
    let e = b.restore(&c).unwrap_err().to_string();
    assert!(e.contains(&format!("`{name}`")), "{e}");
    assert!(e.contains(&format!("{model_shape:?} in the model")), "{e}");
}

#[test]
fn interpreter_checkpoints_round_trip_through_f32() {
    let mut m = model("mlp");
    m.training.batch_size = 4;
    let mut a = InterpreterBackend::new(m.clone()).unwrap();
    train(&mut a, &m, 0, 2);
    let c = a.checkpoint();
    assert_eq!(c.step, 2);
    let mut b = InterpreterBackend::new(m.clone()).unwrap();
    b.restore(&c).unwrap();
    assert_eq!(b.checkpoint(), c);
    // A JIT checkpoint of the same model restores into the interpreter and back.
    let mut jit = JitBackend::new(m.clone(), 1).unwrap();
    jit.restore(&c).unwrap();
    b.restore(&jit.checkpoint()).unwrap();
    assert_eq!(b.checkpoint(), c);
}
