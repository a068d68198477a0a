//! The executable's command line: `NAME [train options]` or `NAME eval --checkpoint FILE`,
//! with `--help` naming the model and its hyper-parameters.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use kiln_runtime::compiled::ModelLayout;

/// The parsed command line.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; training when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Training options.
    #[command(flatten)]
    pub train: TrainArgs,
}

/// Subcommands besides training (the default).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Evaluate a checkpoint on the test set: test loss and accuracy.
    Eval(EvalArgs),
}

/// Options of training (the default command).
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A directory with MNIST-format IDX files (train-images-idx3-ubyte[.gz], …); default: the
    /// bundled 5,000/1,000-image MNIST subset.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Epochs (default: the model file's).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after this many training steps in total (without --epochs, as many epochs as that
    /// takes are run).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Threads for the kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the shuffle (default: the model file's). The initial weights and the dropout
    /// masks were fixed by `kiln build` from the model's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the loss every N steps (0: only per epoch).
    #[arg(long, default_value_t = 50)]
    pub log_every: usize,
    /// Save the parameters, optimizer state and step counter to FILE (safetensors) after every
    /// epoch; each save atomically replaces the file.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Start from a checkpoint of the same model saved with --checkpoint (by this executable or
    /// by `kiln train`).
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
}

/// Options of `eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The checkpoint to evaluate.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// A directory with MNIST-format IDX files; default: the bundled MNIST subset.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Threads for the kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Leaks a string for clap, which takes `&'static str` (once per process).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Parses `args` (the first is the program's name); `--help`, `--version` and usage errors
/// print and exit as clap does (status 0, 0 and 2).
pub fn parse(args: Vec<OsString>, layout: &ModelLayout) -> Cli {
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map_or_else(|| format!("{}-train", layout.model), |n| n.to_string_lossy().into_owned());
    let version = format!("{} (model `{}`)", env!("CARGO_PKG_VERSION"), layout.model);
    let command = Cli::command()
        .name(leak(name))
        .version(leak(version))
        .about(leak(about(layout)))
        .after_help(leak(hyper_parameters(layout)));
    let matches = command.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn about(layout: &ModelLayout) -> String {
    format!(
        "Trains the model `{}`, compiled ahead of time by kiln {}, on MNIST-format data.",
        layout.model,
        env!("CARGO_PKG_VERSION")
    )
}

fn hyper_parameters(layout: &ModelLayout) -> String {
    let t = &layout.training;
    let mut lines = vec![format!("Model `{}`:", layout.model)];
    let width = t.description.iter().map(|(k, _)| k.len()).max().unwrap_or(0).max(14);
    let mut row = |k: &str, v: String| lines.push(format!("  {k:<width$}  {v}"));
    for (k, v) in &t.description {
        row(k, v.clone());
    }
    row("epochs", t.epochs.to_string());
    row(
        "early stopping",
        t.early_stopping
            .map_or("off".into(), |e| format!("patience {} min_delta {}", e.patience, e.min_delta)),
    );
    lines.join("\n")
}
