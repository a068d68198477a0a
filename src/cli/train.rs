//! `kiln train`: train a model on the bundled MNIST subset or a data directory.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use kiln::backend::{InterpreterBackend, JitBackend, JitOptions};
use kiln::compiler::step::CompileOptions;
use kiln::runtime::checkpoint::{self, Checkpointable};
use kiln::runtime::{self, fit_with_epoch_end, StepBackend, TrainConfig};

use super::load;

/// Arguments of `kiln train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The model file (JSON).
    model: PathBuf,
    /// Which backend runs the training step.
    #[arg(long, value_enum, default_value_t = Backend::Jit)]
    backend: Backend,
    /// Threads for the compiled kernels (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Compile without the egg rewrite pass (fusion and clean-up), for comparison.
    #[arg(long)]
    no_fusion: bool,
    /// A directory with MNIST-format IDX files (train-images-idx3-ubyte[.gz], …); default: the
    /// bundled 5,000/1,000-image MNIST subset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Epochs (default: the model file's).
    #[arg(long)]
    epochs: Option<usize>,
    /// Batch size (default: the model file's).
    #[arg(long)]
    batch: Option<usize>,
    /// Stop after this many training steps in total (without --epochs, as many epochs as that
    /// takes are run).
    #[arg(long)]
    steps: Option<usize>,
    /// Seed for initialisation, shuffling and dropout (default: the model file's).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the loss every N steps (0: only per epoch).
    #[arg(long, default_value_t = 50)]
    log_every: usize,
    /// Save the parameters, optimizer state, step counter and epoch number to FILE
    /// (safetensors) after every epoch (the last one too, even if cut short by --steps); each
    /// save atomically replaces the file.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Start from a checkpoint of the same model saved with --checkpoint: restores the
    /// parameters, optimizer state and step counter, then trains the requested epochs/steps
    /// (counted afresh) starting with the epoch after the checkpoint's, shuffled as in an
    /// uninterrupted run.
    #[arg(long, value_name = "FILE")]
    resume: Option<PathBuf>,
}

/// A checkpoint error as one message: its text already includes the I/O error it wraps.
fn flat(e: checkpoint::CheckpointError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// A backend that can also be checkpointed.
trait TrainBackend: StepBackend + Checkpointable {}

impl<T: StepBackend + Checkpointable> TrainBackend for T {}

/// Backends that can run a training step.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// Native kernels generated with Cranelift.
    Jit,
    /// The reference interpreter (f64 plain loops): slow, the oracle for compiled backends.
    Interp,
}

/// The number of threads to use: the flag, or every core.
pub fn threads(flag: Option<usize>) -> usize {
    flag.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1)
}

/// Trains and prints progress, per-epoch metrics and a final line.
pub fn run(args: TrainArgs) -> Result<()> {
    let mut model = load(&args.model)?;
    if let Some(b) = args.batch {
        anyhow::ensure!(b > 0, "--batch must be at least 1");
        model.training.batch_size = b;
    }
    if let Some(e) = args.epochs {
        anyhow::ensure!(e > 0, "--epochs must be at least 1");
        model.training.epochs = e;
    }
    if let Some(s) = args.seed {
        model.training.seed = s;
    }
    if let Some(path) = &args.checkpoint {
        // Report an unwritable path now, not after the first epoch.
        checkpoint::check_writable(path).map_err(flat)?;
    }
    let data = match &args.data {
        Some(dir) => runtime::load_dir(dir)?,
        None => runtime::bundled()?,
    };
    if let (Some(steps), None) = (args.steps, args.epochs) {
        // `--steps N` alone means N steps, however many epochs that takes.
        let per_epoch = data.train.len.div_ceil(model.training.batch_size).max(1);
        model.training.epochs = model.training.epochs.max(steps.div_ceil(per_epoch));
    }
    let t = &model.training;
    let mut config = TrainConfig {
        epochs: t.epochs,
        completed_epochs: 0,
        batch_size: t.batch_size,
        seed: t.seed,
        max_steps: args.steps,
        early_stopping: t.early_stopping.as_ref().map(|e| runtime::EarlyStopping {
            patience: e.patience,
            min_delta: e.min_delta as f32,
        }),
        log_every: args.log_every,
        show_progress: true,
    };
    eprintln!(
        "training {} on {} with the {} backend: {} epoch(s), batch {}",
        args.model.display(),
        data.source,
        args.backend.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default(),
        config.epochs,
        config.batch_size
    );
    let options = CompileOptions { fusion: !args.no_fusion, ..Default::default() };
    let mut backend: Box<dyn TrainBackend> = match args.backend {
        Backend::Jit => {
            let b = JitBackend::with_options(
                model.clone(),
                &JitOptions { threads: threads(args.threads), compile: options },
            )?;
            let s = b.stats();
            eprintln!(
                "compiled {} kernels in {:.1} ms (graph and lowering {:.1} ms, Cranelift {:.1} ms); arena {:.1} MB",
                s.kernels,
                s.lower_ms + s.codegen_ms,
                s.lower_ms,
                s.codegen_ms,
                s.arena_len as f64 * 4.0 / 1e6
            );
            Box::new(b)
        }
        Backend::Interp => Box::new(InterpreterBackend::with_options(model.clone(), options)?),
    };
    if let Some(path) = &args.resume {
        let c = checkpoint::load(path).map_err(flat)?;
        backend.restore(&c).with_context(|| format!("cannot resume from {}", path.display()))?;
        eprintln!("resumed from {} (step {}, epoch {})", path.display(), c.step, c.epoch);
        config.completed_epochs = usize::try_from(c.epoch)
            .with_context(|| format!("{}: epoch {} is too large", path.display(), c.epoch))?;
    }
    let mut on_epoch_end = args.checkpoint.as_deref().map(checkpoint::save_every_epoch);
    let report = fit_with_epoch_end(
        backend.as_mut(),
        &data,
        &config,
        runtime::report::print_event,
        |b, m| match on_epoch_end.as_mut() {
            Some(save) => save(b, m),
            None => Ok(ControlFlow::Continue(())),
        },
    )
    .with_context(|| format!("training {}", args.model.display()))?;
    if let Some(path) = &args.checkpoint {
        let epoch = config.completed_epochs + report.epochs_run;
        eprintln!("saved checkpoint {} (epoch {epoch})", path.display());
    }
    println!("{}", runtime::report::done_line(&report));
    Ok(())
}
