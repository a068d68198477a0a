//! The commands: train (with checkpoints) and eval.

use std::ffi::OsString;
use std::ops::ControlFlow;
use std::path::Path;

use kiln_runtime::checkpoint::{self, Checkpointable};
use kiln_runtime::compiled::Executor;
use kiln_runtime::report::{done_line, print_event};
use kiln_runtime::{
    bundled, evaluate, fit_with_epoch_end, load_dir, DataSplit, EarlyStopping, TrainConfig,
};

use crate::cli::{parse, Command, EvalArgs, TrainArgs};
use crate::manifest::Embedded;

/// A failure, as the one line printed after `error: `.
pub type Error = Box<dyn std::error::Error>;

/// Parses the command line and runs the command.
pub fn main(args: Vec<OsString>, embedded: Embedded) -> Result<(), Error> {
    let cli = parse(args, &embedded.layout);
    match cli.command {
        Some(Command::Eval(args)) => eval(args, embedded),
        None => train(cli.train, embedded),
    }
}

/// The number of threads to use: the flag, or every core.
fn threads(flag: Option<usize>) -> usize {
    flag.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1)
}

fn data(dir: Option<&Path>) -> Result<DataSplit, Error> {
    Ok(match dir {
        Some(dir) => load_dir(dir)?,
        None => bundled()?,
    })
}

fn executor(embedded: Embedded, threads: usize) -> Result<Executor, Error> {
    // SAFETY: the kernels and the layout come from the same generated object.
    let e = unsafe {
        Executor::new(
            embedded.layout,
            embedded.initial,
            embedded.train,
            Some(embedded.eval),
            threads,
        )
    }?;
    Ok(e)
}

/// Loads a checkpoint and restores it, with errors naming the file.
fn resume(executor: &mut Executor, path: &Path) -> Result<checkpoint::Checkpoint, Error> {
    let c = checkpoint::load(path)?;
    executor.restore(&c).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(c)
}

fn train(args: TrainArgs, embedded: Embedded) -> Result<(), Error> {
    let layout = &embedded.layout;
    let t = &layout.training;
    let model = layout.model.clone();
    let batch_size = layout.train.batch;
    let mut epochs = t.epochs;
    if let Some(e) = args.epochs {
        if e == 0 {
            return Err("--epochs must be at least 1".into());
        }
        epochs = e;
    }
    if let Some(path) = &args.checkpoint {
        // Report an unwritable path now, not after the first epoch.
        checkpoint::check_writable(path)?;
    }
    let data = data(args.data.as_deref())?;
    if let (Some(steps), None) = (args.steps, args.epochs) {
        // `--steps N` alone means N steps, however many epochs that takes.
        let per_epoch = data.train.len.div_ceil(batch_size).max(1);
        epochs = epochs.max(steps.div_ceil(per_epoch));
    }
    let mut config = TrainConfig {
        epochs,
        completed_epochs: 0,
        batch_size,
        seed: args.seed.unwrap_or(t.seed),
        max_steps: args.steps,
        early_stopping: t
            .early_stopping
            .map(|e| EarlyStopping { patience: e.patience, min_delta: e.min_delta }),
        log_every: args.log_every,
        show_progress: true,
    };
    let mut executor = executor(embedded, threads(args.threads))?;
    eprintln!(
        "training {model} on {} with the compiled kernels of this executable: {} epoch(s), batch {}",
        data.source, config.epochs, config.batch_size
    );
    if let Some(path) = &args.resume {
        let c = resume(&mut executor, path)?;
        eprintln!("resumed from {} (step {}, epoch {})", path.display(), c.step, c.epoch);
        config.completed_epochs = usize::try_from(c.epoch)
            .map_err(|_| format!("{}: epoch {} is too large", path.display(), c.epoch))?;
    }
    let mut on_epoch_end = args.checkpoint.as_deref().map(checkpoint::save_every_epoch);
    let report = fit_with_epoch_end(&mut executor, &data, &config, print_event, |b, m| {
        match on_epoch_end.as_mut() {
            Some(save) => save(b, m),
            None => Ok(ControlFlow::Continue(())),
        }
    })
    .map_err(|e| format!("training {model}: {e}"))?;
    if let Some(path) = &args.checkpoint {
        let epoch = config.completed_epochs + report.epochs_run;
        eprintln!("saved checkpoint {} (epoch {epoch})", path.display());
    }
    println!("{}", done_line(&report));
    Ok(())
}

fn eval(args: EvalArgs, embedded: Embedded) -> Result<(), Error> {
    let batch_size = embedded.layout.train.batch;
    let mut executor = executor(embedded, threads(args.threads))?;
    let c = resume(&mut executor, &args.checkpoint)?;
    let data = data(args.data.as_deref())?;
    let (loss, accuracy) = evaluate(&mut executor, &data.test, batch_size, 0)?;
    println!(
        "{}: step {}, epoch {}: test loss {loss:.4}{} on {} images",
        args.checkpoint.display(),
        c.step,
        c.epoch,
        kiln_runtime::report::accuracy(accuracy),
        data.test.len
    );
    Ok(())
}
