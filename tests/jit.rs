//! Differential tests of the JIT backend: the full training step of every example model against
//! the reference interpreter, and bit-identical results whatever the thread count.

use std::path::PathBuf;

use kiln::backend::{InterpreterBackend, JitBackend, JitOptions};
use kiln::compiler::step::CompileOptions;
use kiln::ir::model::Model;
use kiln::runtime::{Batch, StepBackend};

fn example_models() -> Vec<(String, Model)> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/models"));
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), Model::load(&p).unwrap()))
        .collect()
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

fn input_len(model: &Model) -> usize {
    model.input.shape.iter().product()
}

fn assert_close(what: &str, got: f32, want: f64, tol: f64) {
    let ok = ((got as f64) - want).abs() <= tol * (1.0 + want.abs());
    assert!(ok, "{what}: jit {got}, interpreter {want}");
}

#[test]
fn training_steps_match_the_interpreter_on_every_example_model() {
    const BATCH: usize = 4;
    for (name, mut model) in example_models() {
        model.training.batch_size = BATCH;
        let mut jit = JitBackend::new(model.clone(), 2).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut reference = InterpreterBackend::new(model.clone()).unwrap();
        for step in 0..2 {
            let (x, y) = batch_data(BATCH, input_len(&model), step);
            let b = Batch { x: &x, labels: &y, len: BATCH };
            let lj = jit.train_step(&b).unwrap();
            let lr = reference.train_step(&b).unwrap();
            assert_close(&format!("{name} step {step} loss"), lj, lr as f64, 1e-4);
        }
        let vars = jit.variables();
        for name_v in reference.variables().names() {
            let want = reference.variables().get(name_v).unwrap();
            let got = vars
                .get(name_v)
                .unwrap_or_else(|| panic!("{name}: no `{name_v}` in the JIT arena"));
            for (i, (&g, &w)) in got.iter().zip(&want.data).enumerate() {
                assert_close(&format!("{name}: {name_v}[{i}] after 2 steps"), g, w, 1e-4);
            }
        }
        // Evaluation and a partial batch (padded to the compiled batch size).
        let (x, y) = batch_data(3, input_len(&model), 9);
        let b = Batch { x: &x, labels: &y, len: 3 };
        let ej = jit.eval_step(&b).unwrap();
        let er = reference.eval_step(&b).unwrap();
        assert_close(&format!("{name} eval loss"), ej.loss, er.loss as f64, 1e-4);
        assert_eq!(ej.correct, er.correct, "{name}: eval correct count");
        let lj = jit.train_step(&b).unwrap();
        let lr = reference.train_step(&b).unwrap();
        assert_close(&format!("{name} partial-batch loss"), lj, lr as f64, 1e-4);
    }
}

#[test]
fn one_and_two_threads_give_bit_identical_training() {
    for (name, mut model) in example_models() {
        model.training.batch_size = 16;
        let run = |threads: usize| {
            let mut jit = JitBackend::new(model.clone(), threads).unwrap();
            let mut losses = Vec::new();
            for step in 0..3 {
                let (x, y) = batch_data(16, input_len(&model), step);
                losses
                    .push(jit.train_step(&Batch { x: &x, labels: &y, len: 16 }).unwrap().to_bits());
            }
            let mut vars: Vec<(String, Vec<u32>)> = jit
                .variables()
                .into_iter()
                .map(|(k, v)| (k, v.iter().map(|f| f.to_bits()).collect()))
                .collect();
            vars.sort();
            (losses, vars)
        };
        assert!(run(1) == run(2), "{name}: 1 and 2 threads differ");
    }
}

/// The rewrite pass changes how a step is computed, not what: fused and unfused JIT training
/// steps give the same losses and updated weights on every example model.
#[test]
fn fused_and_unfused_training_steps_agree_on_every_example_model() {
    const BATCH: usize = 4;
    for (name, mut model) in example_models() {
        model.training.batch_size = BATCH;
        let unfused = CompileOptions { fusion: false, ..Default::default() };
        let mut fused = JitBackend::new(model.clone(), 2).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut plain =
            JitBackend::with_options(model.clone(), &JitOptions { threads: 2, compile: unfused })
                .unwrap();
        for step in 0..3 {
            let (x, y) = batch_data(BATCH, input_len(&model), step);
            let b = Batch { x: &x, labels: &y, len: BATCH };
            let lf = fused.train_step(&b).unwrap();
            let lp = plain.train_step(&b).unwrap();
            assert_close(&format!("{name} step {step} loss"), lf, lp as f64, 1e-5);
        }
        let (vf, vp) = (fused.variables(), plain.variables());
        assert_eq!(vf.len(), vp.len(), "{name}: variables");
        for (v, want) in vp {
            for (i, (&g, &w)) in vf[v.as_str()].iter().zip(want.iter()).enumerate() {
                assert_close(&format!("{name}: {v}[{i}] after 3 steps"), g, w as f64, 1e-5);
            }
        }
    }
}
