//! Checkpoints: a model's parameters and optimizer state, saved to and loaded from a
//! [safetensors](https://huggingface.co/docs/safetensors) file.
//!
//! Every tensor is stored as F32 under its variable name; the model name, the step counter and
//! the number of epochs completed are stored in the file's metadata (`model`, `step`, `epoch`).
//! [`save`] is atomic: it writes a temporary file next to the target, syncs it and renames it
//! over the target, so a crash never leaves a half-written checkpoint behind.
//! [`save_every_epoch`] is the epoch-end callback of
//! [`fit_with_epoch_end`](crate::fit_with_epoch_end) that saves one after every epoch.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::train::{EpochEndResult, EpochMetrics};

/// A model's persistent values at some point of training.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The model's name.
    pub model: String,
    /// Training steps taken (the backend's step counter, which seeds dropout and noise).
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// Every parameter and optimizer-state tensor: name, shape and row-major values.
    /// [`load`] returns them sorted by name.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// A backend whose parameters and optimizer state can be saved and restored.
pub trait Checkpointable {
    /// The current model name, step counter and every persistent tensor, sorted by name.
    /// Backends do not count epochs: `epoch` is 0 and the caller sets it.
    fn checkpoint(&self) -> Checkpoint;
    /// Replaces the parameters, optimizer state and step counter with the checkpoint's.
    ///
    /// Fails, changing nothing, if the checkpoint is for another model or its tensors do not
    /// match the model's (a tensor missing, extra or of another shape).
    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), CheckpointError>;
}

/// Why a checkpoint could not be saved, loaded or restored. File errors name the path.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The checkpoint file does not exist.
    #[error("{}: checkpoint file not found", path.display())]
    NotFound {
        /// The missing file.
        path: PathBuf,
    },
    /// The checkpoint file exists but could not be read.
    #[error("{}: cannot read checkpoint: {source}", path.display())]
    Read {
        /// The unreadable file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The checkpoint could not be written (the target is left as it was).
    #[error("{}: cannot write checkpoint: {source}", path.display())]
    Write {
        /// The target file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The file is not a safetensors file, or is truncated or corrupt.
    #[error("{}: not a valid safetensors checkpoint: {message}", path.display())]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A metadata entry (`model`, `step` or `epoch`) is missing or not valid.
    #[error("{}: checkpoint metadata `{key}` is {problem}", path.display())]
    Metadata {
        /// The offending file.
        path: PathBuf,
        /// The metadata key.
        key: &'static str,
        /// "missing", or what is wrong with the value.
        problem: String,
    },
    /// A tensor in the file is not F32.
    #[error("{}: tensor `{tensor}` is {dtype}, expected F32", path.display())]
    Dtype {
        /// The offending file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its element type.
        dtype: String,
    },
    /// A tensor to save is malformed (values do not match its shape, or a name repeats).
    #[error("{}: cannot save tensor `{tensor}`: {message}", path.display())]
    InvalidTensor {
        /// The target file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint was saved from another model.
    #[error("checkpoint is for model `{checkpoint}`, not `{model}`")]
    WrongModel {
        /// The model named in the checkpoint.
        checkpoint: String,
        /// The model being restored.
        model: String,
    },
    /// The model has a tensor the checkpoint lacks.
    #[error("tensor `{tensor}` of model `{model}` is missing from the checkpoint")]
    MissingTensor {
        /// The model.
        model: String,
        /// The tensor.
        tensor: String,
    },
    /// The checkpoint has a tensor the model lacks.
    #[error("the checkpoint has a tensor `{tensor}` that model `{model}` does not")]
    UnexpectedTensor {
        /// The model.
        model: String,
        /// The tensor.
        tensor: String,
    },
    /// A tensor has another shape in the model than in the checkpoint.
    #[error(
        "tensor `{tensor}` has shape {model_shape:?} in the model but {checkpoint_shape:?} in the checkpoint"
    )]
    ShapeMismatch {
        /// The tensor.
        tensor: String,
        /// Its shape in the model.
        model_shape: Vec<usize>,
        /// Its shape in the checkpoint.
        checkpoint_shape: Vec<usize>,
    },
}

/// Checks that `checkpoint` is for `model` and holds exactly the tensors `shapes` lists (by
/// name) with the same shapes. Backends call this before touching anything in
/// [`Checkpointable::restore`].
pub fn check_compatible<'a>(
    checkpoint: &Checkpoint,
    model: &str,
    shapes: impl IntoIterator<Item = (&'a str, &'a [usize])>,
) -> Result<(), CheckpointError> {
    if checkpoint.model != model {
        return Err(CheckpointError::WrongModel {
            checkpoint: checkpoint.model.clone(),
            model: model.to_string(),
        });
    }
    let saved: HashMap<&str, &[usize]> =
        checkpoint.tensors.iter().map(|(n, s, _)| (n.as_str(), s.as_slice())).collect();
    let mut seen = HashSet::new();
    for (name, shape) in shapes {
        seen.insert(name);
        match saved.get(name) {
            None => {
                return Err(CheckpointError::MissingTensor {
                    model: model.to_string(),
                    tensor: name.to_string(),
                })
            }
            Some(&s) if s != shape => {
                return Err(CheckpointError::ShapeMismatch {
                    tensor: name.to_string(),
                    model_shape: shape.to_vec(),
                    checkpoint_shape: s.to_vec(),
                })
            }
            Some(_) => {}
        }
    }
    let mut extra: Vec<&str> = saved.keys().copied().filter(|n| !seen.contains(n)).collect();
    extra.sort_unstable();
    if let Some(name) = extra.first() {
        return Err(CheckpointError::UnexpectedTensor {
            model: model.to_string(),
            tensor: name.to_string(),
        });
    }
    Ok(())
}

/// An epoch-end callback for [`fit_with_epoch_end`](crate::fit_with_epoch_end): saves the
/// backend's checkpoint to `path` with [`save`] after every epoch, recording the epoch's number
/// (which counts the epochs of a resumed run), and never stops training.
pub fn save_every_epoch<B: Checkpointable + ?Sized>(
    path: &Path,
) -> impl FnMut(&mut B, &EpochMetrics) -> EpochEndResult + '_ {
    move |backend, metrics| {
        let mut checkpoint = backend.checkpoint();
        checkpoint.epoch = metrics.epoch as u64;
        save(path, &checkpoint)?;
        Ok(ControlFlow::Continue(()))
    }
}

/// Checks that [`save`] can write `path`, by creating and removing the temporary file it would
/// write (`path` itself is not touched). Lets a caller report an unwritable path before a
/// long training run rather than after its first epoch.
pub fn check_writable(path: impl AsRef<Path>) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let write_err = |source| CheckpointError::Write { path: path.to_path_buf(), source };
    if path.is_dir() {
        return Err(write_err(io::Error::new(io::ErrorKind::IsADirectory, "it is a directory")));
    }
    let tmp = temp_path(path).map_err(write_err)?;
    File::create(&tmp).map_err(write_err)?;
    fs::remove_file(&tmp).map_err(write_err)
}

/// Where [`save`] writes before renaming: `<name>.tmp-<pid>` next to `path`.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    Ok(path.with_file_name(tmp_name))
}

/// Writes `checkpoint` to `path` atomically: into `<name>.tmp-<pid>` in the same directory,
/// synced, then renamed over `path`. On any error the temporary file is removed and `path` is
/// left as it was.
pub fn save(path: impl AsRef<Path>, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let bytes = serialize(path, checkpoint)?;
    let write_err = |source| CheckpointError::Write { path: path.to_path_buf(), source };
    let tmp = temp_path(path).map_err(write_err)?;

    let mut file = File::create(&tmp).map_err(write_err)?;
    let written = file.write_all(&bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    // Make the rename itself durable; best effort (not every platform can sync a directory).
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn serialize(path: &Path, checkpoint: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    let invalid = |tensor: &str, message: String| CheckpointError::InvalidTensor {
        path: path.to_path_buf(),
        tensor: tensor.to_string(),
        message,
    };
    let mut names = HashSet::new();
    let mut raw = Vec::with_capacity(checkpoint.tensors.len());
    for (name, shape, values) in &checkpoint.tensors {
        if !names.insert(name.as_str()) {
            return Err(invalid(name, "the name appears twice".into()));
        }
        let numel: usize = shape.iter().product();
        if numel != values.len() {
            return Err(invalid(
                name,
                format!("shape {shape:?} holds {numel} values but {} were given", values.len()),
            ));
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        raw.push((name.as_str(), shape.clone(), bytes));
    }
    let mut views = Vec::with_capacity(raw.len());
    for (name, shape, bytes) in &raw {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
            .map_err(|e| invalid(name, e.to_string()))?;
        views.push((*name, view));
    }
    let metadata = HashMap::from([
        ("model".to_string(), checkpoint.model.clone()),
        ("step".to_string(), checkpoint.step.to_string()),
        ("epoch".to_string(), checkpoint.epoch.to_string()),
    ]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| CheckpointError::Write {
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })
}

/// Reads a checkpoint written by [`save`]; its tensors come back sorted by name.
pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint, CheckpointError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => CheckpointError::NotFound { path: path.to_path_buf() },
        _ => CheckpointError::Read { path: path.to_path_buf(), source },
    })?;
    let corrupt = |e: safetensors::SafeTensorError| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(corrupt)?;
    let st = SafeTensors::deserialize(&bytes).map_err(corrupt)?;
    let empty = HashMap::new();
    let meta = header.metadata().as_ref().unwrap_or(&empty);
    let get = |key: &'static str| {
        meta.get(key).ok_or_else(|| CheckpointError::Metadata {
            path: path.to_path_buf(),
            key,
            problem: "missing".into(),
        })
    };
    let number = |key: &'static str| -> Result<u64, CheckpointError> {
        let v = get(key)?;
        v.parse().map_err(|_| CheckpointError::Metadata {
            path: path.to_path_buf(),
            key,
            problem: format!("`{v}`, not a non-negative integer"),
        })
    };
    let model = get("model")?.clone();
    let step = number("step")?;
    let epoch = number("epoch")?;

    let mut tensors = Vec::with_capacity(st.len());
    for (name, view) in st.iter() {
        if view.dtype() != Dtype::F32 {
            return Err(CheckpointError::Dtype {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                dtype: format!("{:?}", view.dtype()),
            });
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.push((name.to_string(), view.shape().to_vec(), values));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Checkpoint { model, step, epoch, tensors })
}
