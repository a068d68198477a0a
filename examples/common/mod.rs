//! What the example programs share: their command line, the data, and printing progress
//! in the style of `kiln train`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use kiln::backend::JitBackend;
use kiln::ir::model::Model;
use kiln::runtime::{self, fit, DataSplit, TrainConfig, TrainEvent, TrainReport};

/// The command line: `[DATA_DIR] [--steps N] [--threads N]`.
#[derive(Debug, Default)]
pub struct Args {
    /// A directory with MNIST IDX files; `None` is the bundled 5,000/1,000-image subset.
    pub data: Option<PathBuf>,
    /// Stop after this many training steps.
    pub steps: Option<usize>,
    /// Threads for the compiled kernels (default: all cores).
    pub threads: Option<usize>,
}

impl Args {
    /// Parses the arguments (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args> {
        let mut parsed = Args::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut number = |flag: &str| -> Result<usize> {
                let value = args.next().with_context(|| format!("{flag} needs a number"))?;
                value.parse().with_context(|| format!("{flag} {value}: not a number"))
            };
            match arg.as_str() {
                "--steps" => parsed.steps = Some(number("--steps")?),
                "--threads" => parsed.threads = Some(number("--threads")?.max(1)),
                flag if flag.starts_with('-') => {
                    bail!("unknown option {flag}; usage: [DATA_DIR] [--steps N] [--threads N]")
                }
                _ if parsed.data.is_none() => parsed.data = Some(arg.into()),
                _ => bail!("unexpected argument {arg}: only one data directory"),
            }
        }
        Ok(parsed)
    }

    /// The data: the directory given, or the bundled MNIST subset.
    pub fn data(&self) -> Result<DataSplit> {
        Ok(match &self.data {
            Some(dir) => runtime::load_dir(dir)?,
            None => runtime::bundled()?,
        })
    }

    /// The number of kernel threads.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// How to drive `fit`: the model's epochs, batch size and seed, and the step limit.
    pub fn config(&self, model: &Model) -> TrainConfig {
        let t = &model.training;
        TrainConfig {
            epochs: t.epochs,
            batch_size: t.batch_size,
            seed: t.seed,
            max_steps: self.steps,
            log_every: 50,
            ..TrainConfig::default()
        }
    }
}

/// Prints the loss every `log_every` steps and the test metrics after each epoch.
pub fn print_event(event: &TrainEvent) {
    match event {
        TrainEvent::Step { step, loss } => println!("step {step:>6}  loss {loss:.4}"),
        TrainEvent::Epoch {
            epoch,
            train_loss,
            test_loss,
            test_accuracy,
            images_per_sec,
            seconds,
        } => {
            let acc = test_accuracy
                .map(|a| format!(", test accuracy {:.2}%", 100.0 * a))
                .unwrap_or_default();
            println!(
                "epoch {epoch}: train loss {train_loss:.4}, test loss {test_loss:.4}{acc}, {images_per_sec:.0} images/s, {seconds:.1} s"
            );
        }
        _ => {}
    }
}

/// The final line: steps, epochs, and the test loss (named `loss_name`) and accuracy.
pub fn print_done(report: &TrainReport, loss_name: &str) {
    let acc = report
        .final_test_accuracy
        .map(|a| format!(", test accuracy {:.2}%", 100.0 * a))
        .unwrap_or_default();
    println!(
        "done: {} steps, {} epoch(s), final {loss_name} {:.4}{acc}",
        report.steps, report.epochs_run, report.final_test_loss
    );
}

/// Prints the model's layer table and what it is trained on.
pub fn announce(model: &Model, data: &DataSplit, config: &TrainConfig) -> Result<()> {
    println!("{}", model.summary()?);
    println!(
        "training {} on {}: {} epoch(s), batch {}",
        model.name, data.source, config.epochs, config.batch_size
    );
    Ok(())
}

/// JIT-trains `model` with the command-line `args` (`[DATA_DIR] [--steps N] [--threads N]`),
/// printing like `kiln train`; the final line names the test loss `loss_name`.
pub fn train(
    model: Model,
    args: impl IntoIterator<Item = String>,
    loss_name: &str,
) -> Result<TrainReport> {
    let args = Args::parse(args)?;
    let data = args.data()?;
    let config = args.config(&model);
    announce(&model, &data, &config)?;
    let mut backend = JitBackend::new(model, args.threads())?;
    let report = fit(&mut backend, &data, &config, print_event)?;
    print_done(&report, loss_name);
    Ok(report)
}
