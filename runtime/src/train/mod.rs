//! The training loop, independent of how the model is executed.
//!
//! A model implements [`StepBackend`]; [`fit`] feeds it shuffled batches, evaluates on the
//! test set after each epoch, reports progress through [`TrainEvent`]s and returns a
//! [`TrainReport`]. [`fit_with_epoch_end`] also hands the backend to a callback after every
//! epoch (to save a checkpoint, or to stop).

mod backend;
mod fit;
mod progress;

pub use backend::{BackendError, Batch, EvalOutput, StepBackend};
pub use fit::{evaluate, fit, fit_with_epoch_end};

use std::error::Error;
use std::ops::ControlFlow;

use crate::batch::BatchError;

/// How a training run is driven.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Number of passes over the training set to run (at least 1).
    pub epochs: usize,
    /// Epochs completed before this run (0 unless resuming): the first epoch run is number
    /// `completed_epochs + 1`, shuffled as that epoch of an uninterrupted run.
    pub completed_epochs: usize,
    /// Examples per batch (at least 1); the last batch of an epoch may be smaller.
    pub batch_size: usize,
    /// Seed of the per-epoch shuffle.
    pub seed: u64,
    /// Stop after this many steps in total (the epoch is cut short and still evaluated).
    pub max_steps: Option<usize>,
    /// Stop when the test loss stops improving.
    pub early_stopping: Option<EarlyStopping>,
    /// Emit a [`TrainEvent::Step`] every this many steps; 0 emits none.
    pub log_every: usize,
    /// Draw a progress bar on stderr (only if stderr is a terminal).
    pub show_progress: bool,
}

impl Default for TrainConfig {
    /// One epoch of batches of 32, seed 0, no limits, a step event every 100 steps, no bar.
    fn default() -> Self {
        TrainConfig {
            epochs: 1,
            completed_epochs: 0,
            batch_size: 32,
            seed: 0,
            max_steps: None,
            early_stopping: None,
            log_every: 100,
            show_progress: false,
        }
    }
}

/// Stop when the test loss has not improved by more than `min_delta` for `patience` epochs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStopping {
    /// Epochs without improvement tolerated before stopping (at least 1).
    pub patience: usize,
    /// Smallest decrease of the test loss that counts as an improvement (finite, >= 0).
    pub min_delta: f32,
}

/// Progress reported by [`fit`] while it runs. Steps and epochs are numbered from 1.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TrainEvent {
    /// A training step finished (every `log_every` steps).
    Step {
        /// Steps taken so far, this one included.
        step: usize,
        /// This step's mean batch loss.
        loss: f32,
    },
    /// An epoch finished and the test set was evaluated.
    Epoch {
        /// The epoch just finished.
        epoch: usize,
        /// Mean training loss over the epoch's examples.
        train_loss: f32,
        /// Mean loss over the test set.
        test_loss: f32,
        /// Fraction of the test set classified correctly, if the backend reports it.
        test_accuracy: Option<f32>,
        /// Training throughput of the epoch (evaluation excluded).
        images_per_sec: f32,
        /// Wall time of the epoch, evaluation included.
        seconds: f32,
    },
    /// Training stopped early because the test loss stopped improving.
    EarlyStop {
        /// The epoch after which training stopped.
        epoch: usize,
        /// The epoch with the best test loss.
        best_epoch: usize,
        /// The best test loss seen.
        best_test_loss: f32,
    },
}

/// What an epoch-end callback of [`fit_with_epoch_end`] learns about the epoch just finished
/// (and evaluated).
#[derive(Debug, Clone, PartialEq)]
pub struct EpochMetrics {
    /// The epoch's number, counting from 1 and including [`TrainConfig::completed_epochs`].
    pub epoch: usize,
    /// Steps taken by this run so far.
    pub steps: usize,
    /// Mean training loss over the epoch's examples.
    pub train_loss: f32,
    /// Mean loss over the test set.
    pub test_loss: f32,
    /// Fraction of the test set classified correctly, if the backend reports it.
    pub test_accuracy: Option<f32>,
    /// Training throughput of the epoch (evaluation excluded).
    pub images_per_sec: f32,
    /// Wall time of the epoch, evaluation included.
    pub seconds: f32,
}

impl EpochMetrics {
    /// The [`TrainEvent::Epoch`] reporting these metrics.
    fn event(&self) -> TrainEvent {
        TrainEvent::Epoch {
            epoch: self.epoch,
            train_loss: self.train_loss,
            test_loss: self.test_loss,
            test_accuracy: self.test_accuracy,
            images_per_sec: self.images_per_sec,
            seconds: self.seconds,
        }
    }
}

/// What an epoch-end callback returns: `Continue(())` to go on training, `Break(())` to stop
/// after this epoch, or an error that ends the run as [`TrainError::EpochEnd`].
pub type EpochEndResult = Result<ControlFlow<()>, Box<dyn Error + Send + Sync>>;

/// The outcome of a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Training steps taken.
    pub steps: usize,
    /// Epochs started by this run (an epoch cut short by `max_steps` counts); the last one is
    /// number `completed_epochs + epochs_run`.
    pub epochs_run: usize,
    /// Test loss after the last epoch.
    pub final_test_loss: f32,
    /// Test accuracy after the last epoch, if the backend reports correct counts.
    pub final_test_accuracy: Option<f32>,
    /// True if early stopping ended the run.
    pub stopped_early: bool,
    /// The loss of every step, in order.
    pub losses: Vec<f32>,
}

/// Why a training run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration is unusable.
    #[error("invalid training config: {0}")]
    Config(String),
    /// The training or test set is malformed.
    #[error("{set} set: {source}")]
    Data {
        /// "train" or "test".
        set: &'static str,
        /// What is wrong with it.
        source: BatchError,
    },
    /// The training or test set has no examples.
    #[error("{set} set is empty")]
    EmptySet {
        /// "train" or "test".
        set: &'static str,
    },
    /// Train and test examples have different sizes.
    #[error("train examples are {train_h}x{train_w} but test examples are {test_h}x{test_w}")]
    ExampleSizeMismatch {
        /// Train image rows.
        train_h: usize,
        /// Train image columns.
        train_w: usize,
        /// Test image rows.
        test_h: usize,
        /// Test image columns.
        test_w: usize,
    },
    /// The backend failed during a training step.
    #[error("backend failed at step {step}: {source}")]
    Step {
        /// The failing step.
        step: usize,
        /// The backend's error.
        source: BackendError,
    },
    /// The backend failed while evaluating the test set.
    #[error("backend failed evaluating the test set after epoch {epoch}: {source}")]
    Eval {
        /// The epoch being evaluated.
        epoch: usize,
        /// The backend's error.
        source: BackendError,
    },
    /// A training step returned NaN or an infinite loss.
    #[error("loss became {value} at step {step}")]
    NonFiniteLoss {
        /// The step that produced it.
        step: usize,
        /// The loss value.
        value: f32,
    },
    /// The epoch-end callback failed; its error is shown whole (it is not a `source`, so error
    /// chains do not repeat it).
    #[error("after epoch {epoch}: {error}")]
    EpochEnd {
        /// The epoch just finished.
        epoch: usize,
        /// The callback's error.
        error: Box<dyn Error + Send + Sync>,
    },
    /// The test loss is NaN or infinite.
    #[error("test loss became {value} after epoch {epoch}")]
    NonFiniteTestLoss {
        /// The epoch evaluated.
        epoch: usize,
        /// The loss value.
        value: f32,
    },
}
