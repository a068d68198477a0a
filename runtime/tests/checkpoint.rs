//! Checkpoint files: round trip, atomic writes and corrupt input.

use std::path::Path;

use kiln_runtime::checkpoint::{check_compatible, check_writable, load, save, save_every_epoch};
use kiln_runtime::{
    fit_with_epoch_end, BackendError, Batch, Checkpoint, CheckpointError, Checkpointable,
    DataSplit, Dataset, EvalOutput, StepBackend, TrainConfig, TrainError,
};

fn sample() -> Checkpoint {
    Checkpoint {
        model: "mlp".into(),
        step: u64::MAX - 3,
        epoch: 7,
        tensors: vec![
            ("a.bias".into(), vec![3], vec![0.0, -0.0, f32::MIN_POSITIVE / 2.0]),
            ("b.kernel".into(), vec![2, 3], vec![1.5, f32::MAX, f32::MIN, 1e-30, -2.25, 3.0]),
            ("c.scalar".into(), vec![], vec![std::f32::consts::PI]),
            ("d.empty".into(), vec![0, 4], vec![]),
        ],
    }
}

/// Files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn round_trip_keeps_names_shapes_values_and_metadata_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    let c = sample();
    save(&path, &c).unwrap();
    let back = load(&path).unwrap();
    assert_eq!(back.model, c.model);
    assert_eq!(back.step, c.step);
    assert_eq!(back.epoch, c.epoch);
    assert_eq!(back.tensors.len(), c.tensors.len());
    for ((n1, s1, v1), (n2, s2, v2)) in c.tensors.iter().zip(&back.tensors) {
        assert_eq!(n1, n2);
        assert_eq!(s1, s2, "{n1}");
        let b1: Vec<u32> = v1.iter().map(|v| v.to_bits()).collect();
        let b2: Vec<u32> = v2.iter().map(|v| v.to_bits()).collect();
        assert_eq!(b1, b2, "{n1}");
    }
    assert_eq!(listing(dir.path()), ["a.safetensors"], "no temporary file is left");
}

#[test]
fn saving_replaces_an_existing_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    save(&path, &sample()).unwrap();
    let mut c = sample();
    c.step = 1;
    c.tensors.truncate(1);
    save(&path, &c).unwrap();
    assert_eq!(load(&path).unwrap(), c);
    assert_eq!(listing(dir.path()), ["a.safetensors"]);
}

#[test]
fn loaded_tensors_are_sorted_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    let mut c = sample();
    c.tensors.reverse();
    save(&path, &c).unwrap();
    let names: Vec<String> = load(&path).unwrap().tensors.into_iter().map(|t| t.0).collect();
    assert_eq!(names, ["a.bias", "b.kernel", "c.scalar", "d.empty"]);
}

#[test]
fn saving_into_a_missing_directory_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/a.safetensors");
    let e = save(&path, &sample()).unwrap_err();
    assert!(matches!(e, CheckpointError::Write { .. }), "{e:?}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert!(listing(dir.path()).is_empty());
}

#[cfg(unix)]
#[test]
fn saving_into_a_read_only_directory_fails_and_leaves_no_temporary_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores directory permissions: only check when the directory really is read-only.
    let probe = ro.join("probe");
    if std::fs::write(&probe, b"x").is_ok() {
        std::fs::remove_file(&probe).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        eprintln!("skipped: running with permission to write into read-only directories");
        return;
    }
    let path = ro.join("a.safetensors");
    let e = save(&path, &sample()).unwrap_err();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert!(listing(&ro).is_empty(), "{:?}", listing(&ro));
}

#[test]
fn a_failed_save_leaves_the_previous_checkpoint_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    save(&path, &sample()).unwrap();
    let mut bad = sample();
    bad.tensors[0].2.pop(); // 2 values for shape [3]
    let e = save(&path, &bad).unwrap_err();
    assert!(e.to_string().contains("a.bias"), "{e}");
    assert_eq!(load(&path).unwrap(), sample());
    assert_eq!(listing(dir.path()), ["a.safetensors"]);
}

#[test]
fn a_missing_file_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.safetensors");
    let e = load(&path).unwrap_err();
    assert!(matches!(e, CheckpointError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.safetensors"), "{e}");
}

#[test]
fn truncated_and_garbage_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    save(&good, &sample()).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let path = dir.path().join("bad.safetensors");
    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"this is not a safetensors file at all".to_vec(),
        vec![0xff; 64],
        bytes[..bytes.len() - 1].to_vec(),
    ];
    cases.extend([1, 4, 8, 9, 20, bytes.len() / 2].into_iter().map(|n| bytes[..n].to_vec()));
    let mut extra = bytes.clone();
    extra.push(0);
    cases.push(extra);
    for (i, case) in cases.iter().enumerate() {
        std::fs::write(&path, case).unwrap();
        let e = load(&path).expect_err(&format!("case {i} loaded"));
        assert!(e.to_string().contains("bad.safetensors"), "case {i}: {e}");
    }
}

#[test]
fn missing_metadata_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.safetensors");
    let data = 1.0f32.to_le_bytes();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &data).unwrap();
    std::fs::write(&path, safetensors::serialize([("w", view)], None).unwrap()).unwrap();
    let e = load(&path).unwrap_err();
    assert!(matches!(e, CheckpointError::Metadata { key: "model", .. }), "{e:?}");
    assert!(e.to_string().contains("plain.safetensors"), "{e}");
}

#[test]
fn compatibility_checks_name_the_model_and_the_tensor() {
    let c = Checkpoint {
        model: "mlp".into(),
        step: 0,
        epoch: 0,
        tensors: vec![("dense_1.kernel".into(), vec![784, 64], vec![0.0; 784 * 64])],
    };
    let e = check_compatible(&c, "keras_cnn", []).unwrap_err();
    assert_eq!(e.to_string(), "checkpoint is for model `mlp`, not `keras_cnn`");
    let e = check_compatible(&c, "mlp", [("dense_1.kernel", &[784usize, 128][..])]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor `dense_1.kernel` has shape [784, 128] in the model but [784, 64] in the checkpoint"
    );
    let e = check_compatible(&c, "mlp", [("dense_1.bias", &[64usize][..])]).unwrap_err();
    assert!(e.to_string().contains("dense_1.bias"), "{e}");
    let e = check_compatible(&c, "mlp", []).unwrap_err();
    assert!(e.to_string().contains("dense_1.kernel"), "{e}");
    check_compatible(&c, "mlp", [("dense_1.kernel", &[784usize, 64][..])]).unwrap();
}

#[test]
fn a_failed_rename_removes_the_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    // A non-empty directory in the way: the temporary file is written, the rename fails.
    let path = dir.path().join("a.safetensors");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("keep"), b"x").unwrap();
    let e = save(&path, &sample()).unwrap_err();
    assert!(e.to_string().contains("a.safetensors"), "{e}");
    assert_eq!(listing(dir.path()), ["a.safetensors"], "the temporary file is removed");
}

#[test]
fn check_writable_probes_without_leaving_anything() {
    let dir = tempfile::tempdir().unwrap();
    check_writable(dir.path().join("a.safetensors")).unwrap();
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));

    let missing = dir.path().join("no/such/dir/a.safetensors");
    let e = check_writable(&missing).unwrap_err();
    assert!(matches!(e, CheckpointError::Write { .. }), "{e:?}");
    assert!(e.to_string().contains(&missing.display().to_string()), "{e}");

    let e = check_writable(dir.path()).unwrap_err();
    assert!(e.to_string().contains("is a directory"), "{e}");
    assert!(listing(dir.path()).is_empty());
}

/// A backend whose state is its step counter, to drive `save_every_epoch` through `fit`.
struct Counter {
    steps: u64,
}

impl StepBackend for Counter {
    fn train_step(&mut self, _: &Batch<'_>) -> Result<f32, BackendError> {
        self.steps += 1;
        Ok(1.0)
    }

    fn eval_step(&mut self, _: &Batch<'_>) -> Result<EvalOutput, BackendError> {
        Ok(EvalOutput { loss: 1.0, correct: None })
    }
}

impl Checkpointable for Counter {
    fn checkpoint(&self) -> Checkpoint {
        Checkpoint { model: "counter".into(), step: self.steps, epoch: 0, tensors: vec![] }
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        self.steps = checkpoint.step;
        Ok(())
    }
}

fn tiny_split() -> DataSplit {
    let data = Dataset::new(vec![0; 10 * 4], vec![0; 10], 2, 2, 1).unwrap();
    DataSplit { train: data.clone(), test: data, source: "zeros".into() }
}

#[test]
fn save_every_epoch_records_the_epoch_counting_completed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let config =
        TrainConfig { epochs: 2, completed_epochs: 3, batch_size: 4, ..Default::default() };
    let mut saved = vec![];
    let mut save = save_every_epoch(&path);
    let report = fit_with_epoch_end(
        &mut Counter { steps: 0 },
        &tiny_split(),
        &config,
        |_| {},
        |b, m| {
            let flow = save(b, m);
            saved.push(load(&path).map(|c| (c.step, c.epoch)).unwrap());
            flow
        },
    )
    .unwrap();
    assert_eq!(report.epochs_run, 2);
    assert_eq!(saved, [(3, 4), (6, 5)], "3 batches per epoch; epochs 4 and 5");
    assert_eq!(listing(dir.path()), ["c.safetensors"]);
}

#[test]
fn a_failing_save_ends_fit_with_the_checkpoint_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing/c.safetensors");
    let config = TrainConfig { epochs: 3, batch_size: 4, ..Default::default() };
    let mut backend = Counter { steps: 0 };
    let err =
        fit_with_epoch_end(&mut backend, &tiny_split(), &config, |_| {}, save_every_epoch(&path))
            .unwrap_err();
    assert!(matches!(err, TrainError::EpochEnd { epoch: 1, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("after epoch 1: "), "{msg}");
    assert!(msg.contains(&format!("{}: cannot write checkpoint", path.display())), "{msg}");
    assert_eq!(backend.steps, 3, "no training after the failed save");
}
