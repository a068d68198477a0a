//! The interface a model implements to be trained by [`fit`](super::fit).

pub use crate::batch::Batch;

/// What evaluating one batch gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalOutput {
    /// Mean loss over the batch.
    pub loss: f32,
    /// Number of correctly classified examples; `None` for models that are not classifiers.
    pub correct: Option<usize>,
}

/// A model that can take training steps: the reference interpreter now, the Cranelift JIT later.
pub trait StepBackend {
    /// Forward, backward and optimizer update on one batch; returns the batch's mean loss.
    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32, BackendError>;
    /// Forward only (dropout and noise off) on one batch.
    fn eval_step(&mut self, batch: &Batch<'_>) -> Result<EvalOutput, BackendError>;
}

/// A failure inside a backend, described by a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// What went wrong.
    pub message: String,
}

impl BackendError {
    /// A backend error with the given message.
    pub fn new(message: impl Into<String>) -> Self {
        BackendError { message: message.into() }
    }
}

impl From<String> for BackendError {
    fn from(message: String) -> Self {
        BackendError { message }
    }
}

impl From<&str> for BackendError {
    fn from(message: &str) -> Self {
        BackendError::new(message)
    }
}
