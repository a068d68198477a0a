//! [`fit`] and [`fit_with_epoch_end`]: the epoch loop, test evaluation, early stopping and the
//! epoch-end callback.

use std::ops::ControlFlow;
use std::time::Instant;

use super::progress::Progress;
use super::{
    BackendError, EarlyStopping, EpochEndResult, EpochMetrics, StepBackend, TrainConfig,
    TrainError, TrainEvent, TrainReport,
};
use crate::batch::{in_order, Batcher};
use crate::dataset::{DataSplit, Dataset};

/// Trains `backend` on `data.train`, evaluating on `data.test` after every epoch.
///
/// Calls `on_event` with a [`TrainEvent::Step`] every `config.log_every` steps, a
/// [`TrainEvent::Epoch`] after each epoch, and [`TrainEvent::EarlyStop`] if early stopping
/// ends the run. Fails on a bad config or data, a backend error, or a NaN/infinite loss.
pub fn fit<B: StepBackend + ?Sized>(
    backend: &mut B,
    data: &DataSplit,
    config: &TrainConfig,
    on_event: impl FnMut(&TrainEvent),
) -> Result<TrainReport, TrainError> {
    fit_with_epoch_end(backend, data, config, on_event, |_, _| Ok(ControlFlow::Continue(())))
}

/// [`fit`], calling `on_epoch_end` with the backend and the epoch's [`EpochMetrics`] after each
/// epoch's evaluation and [`TrainEvent::Epoch`], before early stopping is decided.
///
/// The callback may use the backend (e.g. save a checkpoint), return `Break(())` to end the
/// run after this epoch, or fail, which ends the run with [`TrainError::EpochEnd`].
pub fn fit_with_epoch_end<B: StepBackend + ?Sized>(
    backend: &mut B,
    data: &DataSplit,
    config: &TrainConfig,
    mut on_event: impl FnMut(&TrainEvent),
    mut on_epoch_end: impl FnMut(&mut B, &EpochMetrics) -> EpochEndResult,
) -> Result<TrainReport, TrainError> {
    let last_epoch = check_config(config)?;
    let mut batcher = check_data(data, config)?;
    let mut tracker = config.early_stopping.map(Tracker::new);
    let mut report = TrainReport {
        steps: 0,
        epochs_run: 0,
        final_test_loss: f32::NAN,
        final_test_accuracy: None,
        stopped_early: false,
        losses: Vec::new(),
    };

    for epoch in config.completed_epochs + 1..=last_epoch {
        let started = Instant::now();
        batcher.start_epoch(epoch as u64 - 1);
        let progress = Progress::new(config.show_progress, data.train.len, epoch, last_epoch);
        let trained =
            train_epoch(backend, &mut batcher, config, &progress, &mut report, &mut on_event);
        progress.finish();
        let trained = trained?;
        let train_seconds = started.elapsed().as_secs_f64().max(1e-9);
        report.epochs_run += 1;

        let (test_loss, test_accuracy) = evaluate(backend, &data.test, config.batch_size, epoch)?;
        report.final_test_loss = test_loss;
        report.final_test_accuracy = test_accuracy;
        let metrics = EpochMetrics {
            epoch,
            steps: report.steps,
            train_loss: (trained.loss_sum / trained.seen.max(1) as f64) as f32,
            test_loss,
            test_accuracy,
            images_per_sec: (trained.seen as f64 / train_seconds) as f32,
            seconds: started.elapsed().as_secs_f32(),
        };
        on_event(&metrics.event());
        match on_epoch_end(backend, &metrics) {
            Ok(ControlFlow::Continue(())) => {}
            Ok(ControlFlow::Break(())) => break,
            Err(error) => return Err(TrainError::EpochEnd { epoch, error }),
        }

        if let Some(t) = tracker.as_mut() {
            if t.should_stop(epoch, test_loss) {
                on_event(&TrainEvent::EarlyStop {
                    epoch,
                    best_epoch: t.best_epoch,
                    best_test_loss: t.best,
                });
                report.stopped_early = true;
                break;
            }
        }
        if trained.hit_max_steps {
            break;
        }
    }
    Ok(report)
}

/// What one epoch's training steps add up to.
struct EpochTraining {
    /// Sum of the batch losses, each weighted by its batch's length.
    loss_sum: f64,
    /// Examples trained on.
    seen: usize,
    /// True if `config.max_steps` cut the epoch short.
    hit_max_steps: bool,
}

/// Runs the training steps of the epoch `batcher` is positioned at, recording them in `report`.
fn train_epoch<B: StepBackend + ?Sized>(
    backend: &mut B,
    batcher: &mut Batcher<'_>,
    config: &TrainConfig,
    progress: &Progress,
    report: &mut TrainReport,
    on_event: &mut impl FnMut(&TrainEvent),
) -> Result<EpochTraining, TrainError> {
    let started = Instant::now();
    let mut trained = EpochTraining { loss_sum: 0.0, seen: 0, hit_max_steps: false };
    while let Some(batch) = batcher.next_batch() {
        let step = report.steps + 1;
        let loss =
            backend.train_step(&batch).map_err(|source| TrainError::Step { step, source })?;
        if !loss.is_finite() {
            return Err(TrainError::NonFiniteLoss { step, value: loss });
        }
        report.steps = step;
        report.losses.push(loss);
        trained.loss_sum += f64::from(loss) * batch.len as f64;
        trained.seen += batch.len;
        let rate = trained.seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
        progress.advance(batch.len, trained.loss_sum / trained.seen as f64, rate);
        if config.log_every > 0 && step.is_multiple_of(config.log_every) {
            progress.suspend(|| on_event(&TrainEvent::Step { step, loss }));
        }
        if config.max_steps == Some(step) {
            trained.hit_max_steps = true;
            break;
        }
    }
    Ok(trained)
}

/// Checks `config`; returns the number of the last epoch to run.
fn check_config(config: &TrainConfig) -> Result<usize, TrainError> {
    let bad = |msg: &str| Err(TrainError::Config(msg.to_string()));
    if config.epochs == 0 {
        return bad("epochs must be at least 1");
    }
    if config.batch_size == 0 {
        return bad("batch size must be at least 1");
    }
    if config.max_steps == Some(0) {
        return bad("max steps must be at least 1");
    }
    if let Some(es) = config.early_stopping {
        if es.patience == 0 {
            return bad("early-stopping patience must be at least 1");
        }
        if !(es.min_delta.is_finite() && es.min_delta >= 0.0) {
            return bad("early-stopping min delta must be a finite number >= 0");
        }
    }
    match config.completed_epochs.checked_add(config.epochs) {
        Some(last) => Ok(last),
        None => bad("completed epochs plus epochs to run is too large"),
    }
}

fn check_data<'d>(data: &'d DataSplit, config: &TrainConfig) -> Result<Batcher<'d>, TrainError> {
    let (train, test) = (&data.train, &data.test);
    let batcher = Batcher::new(train, config.batch_size, config.seed)
        .map_err(|source| TrainError::Data { set: "train", source })?;
    test.check().map_err(|e| TrainError::Data { set: "test", source: e.into() })?;
    for (set, d) in [("train", train), ("test", test)] {
        if d.is_empty() {
            return Err(TrainError::EmptySet { set });
        }
    }
    if (train.height, train.width) != (test.height, test.width) {
        return Err(TrainError::ExampleSizeMismatch {
            train_h: train.height,
            train_w: train.width,
            test_h: test.height,
            test_w: test.width,
        });
    }
    Ok(batcher)
}

/// Evaluates `backend` on `test` in order, in batches of `batch_size`: the mean loss over all
/// examples and, if every batch reports it, the accuracy. `epoch` only labels errors.
pub fn evaluate<B: StepBackend + ?Sized>(
    backend: &mut B,
    test: &Dataset,
    batch_size: usize,
    epoch: usize,
) -> Result<(f32, Option<f32>), TrainError> {
    let mut loss_sum = 0.0f64;
    let mut correct = Some(0usize);
    let mut batches = in_order(test, batch_size);
    while let Some(batch) = batches.next_batch() {
        let out = backend.eval_step(&batch).map_err(|source| TrainError::Eval { epoch, source })?;
        if let Some(c) = out.correct.filter(|&c| c > batch.len) {
            let msg = format!("eval_step reported {c} correct in a batch of {}", batch.len);
            return Err(TrainError::Eval { epoch, source: BackendError::new(msg) });
        }
        loss_sum += f64::from(out.loss) * batch.len as f64;
        correct = correct.zip(out.correct).map(|(a, b)| a + b);
    }
    let loss = (loss_sum / test.len as f64) as f32;
    if !loss.is_finite() {
        return Err(TrainError::NonFiniteTestLoss { epoch, value: loss });
    }
    Ok((loss, correct.map(|c| c as f32 / test.len as f32)))
}

/// Early-stopping state: the best test loss so far and how long ago it was.
struct Tracker {
    rule: EarlyStopping,
    best: f32,
    best_epoch: usize,
    epochs_without_improvement: usize,
}

impl Tracker {
    fn new(rule: EarlyStopping) -> Self {
        Tracker { rule, best: f32::INFINITY, best_epoch: 0, epochs_without_improvement: 0 }
    }

    /// Records the test loss of `epoch`; true when training should stop.
    fn should_stop(&mut self, epoch: usize, test_loss: f32) -> bool {
        if self.best - test_loss > self.rule.min_delta {
            self.best = test_loss;
            self.best_epoch = epoch;
            self.epochs_without_improvement = 0;
        } else {
            self.epochs_without_improvement += 1;
        }
        self.epochs_without_improvement >= self.rule.patience
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_epochs_without_enough_improvement() {
        let mut t = Tracker::new(EarlyStopping { patience: 2, min_delta: 0.1 });
        assert!(!t.should_stop(1, 1.0)); // first epoch is always an improvement
        assert!(!t.should_stop(2, 0.95)); // 0.05 < min_delta: one bad epoch
        assert!(!t.should_stop(3, 0.8)); // 0.2 better than best 1.0: reset
        assert_eq!((t.best, t.best_epoch), (0.8, 3));
        assert!(!t.should_stop(4, 0.85));
        assert!(t.should_stop(5, 0.71)); // 0.09 is not more than 0.1
        assert_eq!(t.best_epoch, 3);
    }
}
