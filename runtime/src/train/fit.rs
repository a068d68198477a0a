//! [`fit`]: the epoch loop, test evaluation and early stopping.

use std::time::Instant;

use super::progress::Progress;
use super::{
    BackendError, EarlyStopping, StepBackend, TrainConfig, TrainError, TrainEvent, TrainReport,
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
    mut on_event: impl FnMut(&TrainEvent),
) -> Result<TrainReport, TrainError> {
    check_config(config)?;
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

    for epoch in 1..=config.epochs {
        let started = Instant::now();
        batcher.start_epoch(epoch as u64 - 1);
        let progress = Progress::new(config.show_progress, data.train.len, epoch, config.epochs);
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        let mut hit_max_steps = false;
        while let Some(batch) = batcher.next_batch() {
            let step = report.steps + 1;
            let loss =
                backend.train_step(&batch).map_err(|source| TrainError::Step { step, source })?;
            if !loss.is_finite() {
                progress.finish();
                return Err(TrainError::NonFiniteLoss { step, value: loss });
            }
            report.steps = step;
            report.losses.push(loss);
            loss_sum += f64::from(loss) * batch.len as f64;
            seen += batch.len;
            let rate = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress.advance(batch.len, loss_sum / seen as f64, rate);
            if config.log_every > 0 && step.is_multiple_of(config.log_every) {
                progress.suspend(|| on_event(&TrainEvent::Step { step, loss }));
            }
            if config.max_steps == Some(step) {
                hit_max_steps = true;
                break;
            }
        }
        let train_seconds = started.elapsed().as_secs_f64().max(1e-9);
        progress.finish();
        report.epochs_run = epoch;

        let (test_loss, test_accuracy) = evaluate(backend, &data.test, config.batch_size, epoch)?;
        report.final_test_loss = test_loss;
        report.final_test_accuracy = test_accuracy;
        on_event(&TrainEvent::Epoch {
            epoch,
            train_loss: (loss_sum / seen.max(1) as f64) as f32,
            test_loss,
            test_accuracy,
            images_per_sec: (seen as f64 / train_seconds) as f32,
            seconds: started.elapsed().as_secs_f32(),
        });

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
        if hit_max_steps {
            break;
        }
    }
    Ok(report)
}

fn check_config(config: &TrainConfig) -> Result<(), TrainError> {
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
    Ok(())
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

/// Mean test loss over all examples and, if every batch reports it, the accuracy.
fn evaluate<B: StepBackend + ?Sized>(
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
