//! Checkpoints end to end: `kiln train --checkpoint/--resume`, and save → restore into a fresh
//! backend continuing bit-identically.

use std::path::PathBuf;
use std::process::{Command, Output};

use kiln::backend::{InterpreterBackend, JitBackend};
use kiln::ir::model::Model;
use kiln::runtime::checkpoint::{load, save};
use kiln::runtime::{Batch, Checkpointable, StepBackend};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run kiln")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
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
    assert!(stderr(&out).contains("a.safetensors"), "{}", stderr(&out));
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
