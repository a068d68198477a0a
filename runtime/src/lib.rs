//! kiln's thin runtime: data loading, batching and the training loop.
//!
//! - [`idx`]: read and write MNIST-format IDX files, raw or gzip-compressed.
//! - [`dataset`]: in-memory datasets, loaded from a directory or from the bundled MNIST subset.
//! - [`batch`]: shuffled, reproducible mini-batches.
//! - [`padding`]: short batches padded up to a compiled program's batch size.
//! - [`checkpoint`]: save and load parameters and optimizer state (safetensors, atomic writes).
//! - [`train`]: the backend-agnostic training loop ([`fit`], [`fit_with_epoch_end`]) and the
//!   [`StepBackend`] trait.
//! - [`report`]: the lines a training command prints.
//! - [`exec`]: the thread pool and kernel calls; [`compiled`]: a compiled model's layout and
//!   the [`compiled::Executor`] that runs it (for the JIT and for `kiln build` executables).
//!
//! This crate depends on no other kiln crate: backends implement [`StepBackend`].
#![warn(missing_docs)]

pub mod batch;
pub mod checkpoint;
pub mod compiled;
pub mod dataset;
pub mod error;
pub mod exec;
pub mod idx;
pub mod padding;
pub mod report;
pub mod train;

pub use batch::{in_order, Batch, BatchError, Batcher, InOrder};
pub use checkpoint::{Checkpoint, CheckpointError, Checkpointable};
pub use dataset::{bundled, load_dir, pixel_value, DataSplit, Dataset};
pub use error::DataError;
pub use idx::{read_idx, write_idx_gz, IdxArray};
pub use train::{
    evaluate, fit, fit_with_epoch_end, BackendError, EarlyStopping, EpochEndResult, EpochMetrics,
    EvalOutput, StepBackend, TrainConfig, TrainError, TrainEvent, TrainReport,
};
