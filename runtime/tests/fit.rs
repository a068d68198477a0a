//! The training loop, driven by hand-written backends on small synthetic data.

use std::ops::ControlFlow;

use kiln_runtime::{
    fit, fit_with_epoch_end, BackendError, Batch, DataSplit, Dataset, EarlyStopping, EvalOutput,
    StepBackend, TrainConfig, TrainError, TrainEvent,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------------------------
// A mock that records what it is given and returns scripted losses.

type TrainScript = Box<dyn FnMut(usize) -> Result<f32, BackendError>>;
type EvalScript = Box<dyn FnMut(usize) -> f32>;

/// Example i (below 256) is a 1x2 image of bytes `[i, i % 3]` with label `i % 3`, so the mock
/// can tell which it got.
fn id_data(len: usize) -> Dataset {
    let ids = 0..u8::try_from(len).expect("at most 255 examples");
    let pixels = ids.clone().flat_map(|i| [i, i % 3]).collect();
    Dataset::new(pixels, ids.map(|i| i % 3).collect(), 1, 2, 3).unwrap()
}

/// The byte a batch value was converted from.
fn byte(value: f32) -> u8 {
    (value * 255.0).round() as u8
}

fn id_split(train: usize, test: usize) -> DataSplit {
    DataSplit { train: id_data(train), test: id_data(test), source: "synthetic".into() }
}

struct Mock {
    /// Loss of training step n (1-based).
    train_loss: TrainScript,
    /// Test loss given the number of training steps taken so far.
    eval_loss: EvalScript,
    /// Correct count to report per eval batch (None: not a classifier).
    correct: Option<usize>,
    steps: usize,
    /// Example ids of every training batch, in order.
    train_batches: Vec<Vec<usize>>,
    /// (steps taken so far, batch len) of every eval batch.
    eval_batches: Vec<(usize, usize)>,
}

impl Mock {
    fn new(train_loss: TrainScript, eval_loss: EvalScript) -> Self {
        Mock {
            train_loss,
            eval_loss,
            correct: Some(0),
            steps: 0,
            train_batches: vec![],
            eval_batches: vec![],
        }
    }

    fn constant() -> Self {
        Mock::new(Box::new(|_| Ok(1.0)), Box::new(|_| 1.0))
    }
}

fn ids(batch: &Batch<'_>) -> Vec<usize> {
    assert_eq!(batch.x.len(), batch.len * 2);
    assert_eq!(batch.labels.len(), batch.len);
    batch
        .x
        .chunks(2)
        .zip(batch.labels)
        .map(|(px, &label)| {
            assert_eq!(f32::from(byte(px[1])), label, "label travels with its image");
            usize::from(byte(px[0]))
        })
        .collect()
}

impl StepBackend for Mock {
    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32, BackendError> {
        self.steps += 1;
        self.train_batches.push(ids(batch));
        (self.train_loss)(self.steps)
    }

    fn eval_step(&mut self, batch: &Batch<'_>) -> Result<EvalOutput, BackendError> {
        ids(batch);
        self.eval_batches.push((self.steps, batch.len));
        Ok(EvalOutput {
            loss: (self.eval_loss)(self.steps),
            correct: self.correct.map(|c| c.min(batch.len)),
        })
    }
}

fn config(epochs: usize, batch_size: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        completed_epochs: 0,
        batch_size,
        seed: 3,
        max_steps: None,
        early_stopping: None,
        log_every: 0,
        show_progress: false,
    }
}

fn run(
    mock: &mut Mock,
    data: &DataSplit,
    cfg: &TrainConfig,
) -> (Result<kiln_runtime::TrainReport, TrainError>, Vec<TrainEvent>) {
    let mut events = vec![];
    let result = fit(mock, data, cfg, |e| events.push(e.clone()));
    (result, events)
}

fn epoch_numbers(events: &[TrainEvent]) -> Vec<usize> {
    events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Epoch { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect()
}

#[test]
fn steps_epochs_and_partial_batches() {
    let data = id_split(60, 30);
    let mut mock = Mock::constant();
    let (report, events) = run(&mut mock, &data, &config(3, 16));
    let report = report.unwrap();

    assert_eq!(report.steps, 12, "4 batches (16,16,16,12) x 3 epochs");
    assert_eq!(report.epochs_run, 3);
    assert_eq!(report.losses, vec![1.0; 12]);
    assert!(!report.stopped_early);
    let lens: Vec<usize> = mock.train_batches.iter().map(Vec::len).collect();
    assert_eq!(lens, [16, 16, 16, 12].repeat(3));

    // Each epoch visits every training example exactly once, in a new order.
    let epochs: Vec<Vec<usize>> = mock.train_batches.chunks(4).map(|c| c.concat()).collect();
    for e in &epochs {
        let mut sorted = e.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..60).collect::<Vec<_>>());
    }
    assert_ne!(epochs[0], epochs[1]);

    // The whole test set is evaluated, in batches, after each epoch's last step.
    assert_eq!(mock.eval_batches, vec![(4, 16), (4, 14), (8, 16), (8, 14), (12, 16), (12, 14)]);
    assert_eq!(epoch_numbers(&events), vec![1, 2, 3]);
    assert_eq!(report.final_test_loss, 1.0);
    assert_eq!(report.final_test_accuracy, Some(0.0));
}

#[test]
fn epoch_event_carries_weighted_means_and_rates() {
    let data = id_split(10, 5);
    // Step losses 1, 2, 3 over batches of 4, 4, 2: weighted mean (4+8+6)/10 = 1.8.
    let mut mock = Mock::new(Box::new(|s| Ok(s as f32)), Box::new(|_| 0.25));
    mock.correct = Some(2); // batches of 4 and 1 -> 2 + 1 correct of 5
    let (report, events) = run(&mut mock, &data, &config(1, 4));
    let report = report.unwrap();
    let TrainEvent::Epoch { epoch, train_loss, test_loss, test_accuracy, images_per_sec, seconds } =
        events[0]
    else {
        panic!("expected an epoch event, got {:?}", events[0]);
    };
    assert_eq!(epoch, 1);
    assert!((train_loss - 1.8).abs() < 1e-6, "{train_loss}");
    assert_eq!(test_loss, 0.25);
    assert_eq!(test_accuracy, Some(0.6));
    assert!(images_per_sec > 0.0 && images_per_sec.is_finite());
    assert!(seconds >= 0.0);
    assert_eq!(report.final_test_accuracy, Some(0.6));
}

#[test]
fn step_events_every_log_every_steps() {
    let data = id_split(60, 30);
    let mut cfg = config(3, 16);
    cfg.log_every = 5;
    let mut mock = Mock::new(Box::new(|s| Ok(10.0 / s as f32)), Box::new(|_| 1.0));
    let (report, events) = run(&mut mock, &data, &cfg);
    report.unwrap();
    let steps: Vec<(usize, f32)> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step { step, loss } => Some((*step, *loss)),
            _ => None,
        })
        .collect();
    assert_eq!(steps, vec![(5, 2.0), (10, 1.0)]);
    // 4 steps per epoch: step 5 falls in epoch 2 (steps 5-8), step 10 in epoch 3 (steps 9-12).
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e {
            TrainEvent::Step { step, .. } => format!("s{step}"),
            TrainEvent::Epoch { epoch, .. } => format!("e{epoch}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["e1", "s5", "e2", "s10", "e3"]);
}

#[test]
fn max_steps_is_honoured_and_the_cut_epoch_is_evaluated() {
    let data = id_split(60, 30);
    let mut cfg = config(10, 16);
    cfg.max_steps = Some(6);
    let mut mock = Mock::constant();
    let (report, events) = run(&mut mock, &data, &cfg);
    let report = report.unwrap();
    assert_eq!(report.steps, 6);
    assert_eq!(mock.train_batches.len(), 6);
    assert_eq!(report.losses.len(), 6);
    assert_eq!(report.epochs_run, 2);
    assert_eq!(epoch_numbers(&events), vec![1, 2]);
    assert_eq!(mock.eval_batches.last(), Some(&(6, 14)));
    assert!(!report.stopped_early);
}

#[test]
fn early_stopping_triggers_when_test_loss_stops_improving() {
    let data = id_split(60, 30);
    let mut cfg = config(10, 16);
    cfg.early_stopping = Some(EarlyStopping { patience: 2, min_delta: 0.05 });
    // Test loss after epochs 1..: 1.0, 0.5 (best), 0.49 (< min_delta better), 0.495 -> stop.
    let table = [1.0, 0.5, 0.49, 0.495, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1];
    let mut mock = Mock::new(Box::new(|_| Ok(1.0)), Box::new(move |s| table[s / 4 - 1]));
    let (report, events) = run(&mut mock, &data, &cfg);
    let report = report.unwrap();
    assert!(report.stopped_early);
    assert_eq!(report.epochs_run, 4);
    assert_eq!(report.steps, 16);
    assert_eq!(report.final_test_loss, 0.495);
    assert_eq!(
        events.last(),
        Some(&TrainEvent::EarlyStop { epoch: 4, best_epoch: 2, best_test_loss: 0.5 })
    );
}

#[test]
fn no_early_stop_while_test_loss_improves() {
    let data = id_split(60, 30);
    let mut cfg = config(6, 16);
    cfg.early_stopping = Some(EarlyStopping { patience: 1, min_delta: 0.0 });
    let mut mock = Mock::new(Box::new(|_| Ok(1.0)), Box::new(|s| 1.0 / s as f32));
    let (report, events) = run(&mut mock, &data, &cfg);
    let report = report.unwrap();
    assert!(!report.stopped_early);
    assert_eq!(report.epochs_run, 6);
    assert!(!events.iter().any(|e| matches!(e, TrainEvent::EarlyStop { .. })));
}

#[test]
fn nan_loss_is_an_error_naming_the_step() {
    let data = id_split(60, 30);
    let mut mock =
        Mock::new(Box::new(|s| Ok(if s == 7 { f32::NAN } else { 1.0 })), Box::new(|_| 1.0));
    let (result, events) = run(&mut mock, &data, &config(5, 16));
    let err = result.unwrap_err();
    assert!(matches!(err, TrainError::NonFiniteLoss { step: 7, .. }), "{err:?}");
    assert_eq!(err.to_string(), "loss became NaN at step 7");
    assert_eq!(mock.steps, 7, "no step after the NaN");
    assert_eq!(epoch_numbers(&events), vec![1]);
}

#[test]
fn infinite_loss_is_an_error() {
    let data = id_split(60, 30);
    let mut mock = Mock::new(Box::new(|_| Ok(f32::INFINITY)), Box::new(|_| 1.0));
    let err = run(&mut mock, &data, &config(1, 16)).0.unwrap_err();
    assert_eq!(err.to_string(), "loss became inf at step 1");
}

#[test]
fn nan_test_loss_is_an_error() {
    let data = id_split(60, 30);
    let mut mock = Mock::new(Box::new(|_| Ok(1.0)), Box::new(|_| f32::NAN));
    let err = run(&mut mock, &data, &config(2, 16)).0.unwrap_err();
    assert_eq!(err.to_string(), "test loss became NaN after epoch 1");
}

#[test]
fn backend_errors_propagate_with_context() {
    let data = id_split(60, 30);
    let mut mock = Mock::new(
        Box::new(|s| {
            if s == 2 {
                Err(BackendError::from(format!("shape mismatch in step {s}")))
            } else {
                Ok(1.0)
            }
        }),
        Box::new(|_| 1.0),
    );
    let err = run(&mut mock, &data, &config(1, 16)).0.unwrap_err();
    assert!(matches!(err, TrainError::Step { step: 2, .. }), "{err:?}");
    assert_eq!(err.to_string(), "backend failed at step 2: shape mismatch in step 2");
}

#[test]
fn accuracy_is_none_for_non_classifiers_and_bad_counts_are_errors() {
    let data = id_split(20, 10);
    let mut mock = Mock::constant();
    mock.correct = None;
    let report = run(&mut mock, &data, &config(1, 8)).0.unwrap();
    assert_eq!(report.final_test_accuracy, None);

    struct Liar;
    impl StepBackend for Liar {
        fn train_step(&mut self, _: &Batch<'_>) -> Result<f32, BackendError> {
            Ok(1.0)
        }
        fn eval_step(&mut self, b: &Batch<'_>) -> Result<EvalOutput, BackendError> {
            Ok(EvalOutput { loss: 1.0, correct: Some(b.len + 1) })
        }
    }
    let err = fit(&mut Liar, &data, &config(1, 8), |_| {}).unwrap_err();
    assert!(matches!(err, TrainError::Eval { epoch: 1, .. }), "{err:?}");
}

#[test]
fn bad_configs_and_data_are_errors_not_panics() {
    let data = id_split(20, 10);
    let cases: Vec<(TrainConfig, &str)> = vec![
        (config(1, 0), "batch size"),
        (config(0, 4), "epochs"),
        (TrainConfig { max_steps: Some(0), ..config(1, 4) }, "max steps"),
        (TrainConfig { completed_epochs: usize::MAX, ..config(1, 4) }, "too large"),
        (
            TrainConfig {
                early_stopping: Some(EarlyStopping { patience: 0, min_delta: 0.0 }),
                ..config(1, 4)
            },
            "patience",
        ),
        (
            TrainConfig {
                early_stopping: Some(EarlyStopping { patience: 1, min_delta: f32::NAN }),
                ..config(1, 4)
            },
            "min delta",
        ),
    ];
    for (cfg, what) in cases {
        let err = fit(&mut Mock::constant(), &data, &cfg, |_| {}).unwrap_err();
        assert!(matches!(err, TrainError::Config(_)), "{err:?}");
        assert!(err.to_string().contains(what), "{err}");
    }

    let empty = id_split(0, 10);
    let err = fit(&mut Mock::constant(), &empty, &config(1, 4), |_| {}).unwrap_err();
    assert_eq!(err.to_string(), "train set is empty");

    let mut mismatched = id_split(20, 10);
    mismatched.test.width = 1;
    mismatched.test.height = 2;
    let err = fit(&mut Mock::constant(), &mismatched, &config(1, 4), |_| {}).unwrap_err();
    assert!(matches!(err, TrainError::ExampleSizeMismatch { .. }), "{err:?}");

    let mut broken = id_split(20, 10);
    broken.test.labels.pop();
    let err = fit(&mut Mock::constant(), &broken, &config(1, 4), |_| {}).unwrap_err();
    assert!(err.to_string().starts_with("test set: dataset has 9 labels"), "{err}");
}

#[test]
fn epoch_end_gets_the_backend_and_the_metrics_after_the_epoch_event() {
    let data = id_split(60, 30);
    let mut mock = Mock::new(Box::new(|_| Ok(2.0)), Box::new(|s| s as f32));
    let mut events = vec![];
    let mut calls = vec![];
    let report = fit_with_epoch_end(
        &mut mock,
        &data,
        &config(3, 16),
        |e| events.push(e.clone()),
        |backend: &mut Mock, m| {
            calls.push((m.epoch, m.steps, backend.steps, m.train_loss, m.test_loss));
            Ok(ControlFlow::Continue(()))
        },
    )
    .unwrap();
    assert_eq!(report.epochs_run, 3);
    assert_eq!(calls, [(1, 4, 4, 2.0, 4.0), (2, 8, 8, 2.0, 8.0), (3, 12, 12, 2.0, 12.0)]);
    assert_eq!(epoch_numbers(&events), vec![1, 2, 3]);
}

#[test]
fn epoch_end_can_stop_the_run_or_fail_it() {
    let data = id_split(60, 30);
    let stop_after_2 = |_: &mut Mock, m: &kiln_runtime::EpochMetrics| {
        Ok(if m.epoch == 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
    };
    let mut mock = Mock::constant();
    let report =
        fit_with_epoch_end(&mut mock, &data, &config(5, 16), |_| {}, stop_after_2).unwrap();
    assert_eq!((report.epochs_run, report.steps, mock.steps), (2, 8, 8));
    assert!(!report.stopped_early, "stopped by the callback, not by early stopping");

    let mut mock = Mock::constant();
    let fail = |_: &mut Mock, _: &kiln_runtime::EpochMetrics| Err("disk full".into());
    let err = fit_with_epoch_end(&mut mock, &data, &config(5, 16), |_| {}, fail).unwrap_err();
    assert!(matches!(err, TrainError::EpochEnd { epoch: 1, .. }), "{err:?}");
    assert_eq!(err.to_string(), "after epoch 1: disk full");
    assert_eq!(mock.steps, 4);
}

#[test]
fn completed_epochs_continue_as_an_uninterrupted_run() {
    let data = id_split(60, 30);
    let mut straight = Mock::constant();
    run(&mut straight, &data, &config(4, 16)).0.unwrap();

    let mut resumed = Mock::constant();
    let cfg = TrainConfig { completed_epochs: 2, ..config(2, 16) };
    let (report, events) = run(&mut resumed, &data, &cfg);
    let report = report.unwrap();
    assert_eq!((report.epochs_run, report.steps), (2, 8), "counts are this run's");
    assert_eq!(epoch_numbers(&events), vec![3, 4]);
    assert_eq!(resumed.train_batches, straight.train_batches[8..], "epochs 3 and 4 shuffled alike");
}

// ---------------------------------------------------------------------------------------------
// A real (if tiny) model: multinomial logistic regression trained by SGD.

struct LinearSoftmax {
    inputs: usize,
    classes: usize,
    /// `classes x inputs` weights followed by `classes` biases.
    params: Vec<f32>,
    lr: f32,
}

impl LinearSoftmax {
    fn new(inputs: usize, classes: usize, lr: f32) -> Self {
        LinearSoftmax { inputs, classes, params: vec![0.0; classes * (inputs + 1)], lr }
    }

    /// Softmax probabilities of one example.
    fn probs(&self, x: &[f32]) -> Vec<f32> {
        let (w, b) = self.params.split_at(self.classes * self.inputs);
        let logits: Vec<f32> = (0..self.classes)
            .map(|c| {
                let row = &w[c * self.inputs..(c + 1) * self.inputs];
                b[c] + row.iter().zip(x).map(|(a, b)| a * b).sum::<f32>()
            })
            .collect();
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        exps.iter().map(|e| e / sum).collect()
    }

    fn check(&self, batch: &Batch<'_>) -> Result<(), BackendError> {
        if batch.x.len() != batch.len * self.inputs || batch.labels.len() != batch.len {
            return Err(BackendError::new("batch does not match the model"));
        }
        Ok(())
    }
}

impl StepBackend for LinearSoftmax {
    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32, BackendError> {
        self.check(batch)?;
        let mut grad = vec![0.0; self.params.len()];
        let mut loss = 0.0;
        let bias = self.classes * self.inputs;
        for (x, &label) in batch.x.chunks(self.inputs).zip(batch.labels) {
            let p = self.probs(x);
            let y = label as usize;
            loss -= p[y].max(1e-12).ln();
            for c in 0..self.classes {
                let d = p[c] - if c == y { 1.0 } else { 0.0 };
                for i in 0..self.inputs {
                    grad[c * self.inputs + i] += d * x[i];
                }
                grad[bias + c] += d;
            }
        }
        let n = batch.len as f32;
        for (p, g) in self.params.iter_mut().zip(&grad) {
            *p -= self.lr * g / n;
        }
        Ok(loss / n)
    }

    fn eval_step(&mut self, batch: &Batch<'_>) -> Result<EvalOutput, BackendError> {
        self.check(batch)?;
        let mut loss = 0.0;
        let mut correct = 0;
        for (x, &label) in batch.x.chunks(self.inputs).zip(batch.labels) {
            let p = self.probs(x);
            let y = label as usize;
            loss -= p[y].max(1e-12).ln();
            let best = (0..self.classes).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0);
            correct += usize::from(best == y);
        }
        Ok(EvalOutput { loss: loss / batch.len as f32, correct: Some(correct) })
    }
}

/// 2x2 images of 3 classes: class c lights pixel c (plus noise everywhere).
fn blobs(len: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = Vec::with_capacity(len * 4);
    let mut labels = Vec::with_capacity(len);
    for _ in 0..len {
        let c = rng.random_range(0..3u8);
        for px in 0..4 {
            let base = if px == c { 204 } else { 26 };
            pixels.push(base + rng.random_range(0..51u8) - 25);
        }
        labels.push(c);
    }
    Dataset::new(pixels, labels, 2, 2, 3).unwrap()
}

fn blob_split() -> DataSplit {
    DataSplit { train: blobs(150, 1), test: blobs(60, 2), source: "blobs".into() }
}

#[test]
fn linear_softmax_learns_the_synthetic_task() {
    let data = blob_split();
    let mut model = LinearSoftmax::new(4, 3, 1.0);
    let mut cfg = config(15, 10);
    cfg.early_stopping = None;
    let mut test_losses = vec![];
    let report = fit(&mut model, &data, &cfg, |e| {
        if let TrainEvent::Epoch { test_loss, .. } = e {
            test_losses.push(*test_loss);
        }
    })
    .unwrap();
    assert_eq!(report.steps, 15 * 15);
    let first: f32 = report.losses[..15].iter().sum::<f32>() / 15.0;
    let last: f32 = report.losses[report.losses.len() - 15..].iter().sum::<f32>() / 15.0;
    assert!(last < first * 0.5, "training loss fell: {first} -> {last}");
    assert!(test_losses[14] < test_losses[0], "{test_losses:?}");
    let acc = report.final_test_accuracy.unwrap();
    assert!(acc >= 0.95, "test accuracy {acc}");
}

#[test]
fn same_seed_same_run_different_seed_different_run() {
    let data = blob_split();
    let run = |seed| {
        let mut cfg = config(2, 16);
        cfg.seed = seed;
        fit(&mut LinearSoftmax::new(4, 3, 0.5), &data, &cfg, |_| {}).unwrap().losses
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}
