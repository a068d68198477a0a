//! Command-line definitions (clap) and their dispatch. Every error reaching `main` is printed
//! as one message and exits with status 2.

mod bench;
mod build;
mod dump;
mod train;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use kiln::ir::model::{thousands, Model};

/// kiln: compile and train neural networks on the CPU.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a model file: parse, validate and build its training step.
    Check {
        /// The model file (JSON).
        model: PathBuf,
    },
    /// Print a Keras-style table of layers, output shapes and parameter counts.
    Summary {
        /// The model file (JSON).
        model: PathBuf,
    },
    /// Print the IR of a model at a compilation stage.
    Dump(dump::DumpArgs),
    /// Train a model.
    Train(train::TrainArgs),
    /// Measure compile time, training throughput and memory of the compiled training step.
    Bench(bench::BenchArgs),
    /// Compile a model ahead of time into a standalone training executable.
    Build(build::BuildArgs),
}

/// Output formats of `kiln dump`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One node per line (parses back).
    Text,
    /// Graphviz DOT.
    Dot,
}

/// Runs one command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Check { model } => {
            let m = load(&model)?;
            let step = kiln::compiler::step::training_step(&m, m.training.batch_size)?;
            println!(
                "{}: ok ({} layers, {} parameters, training step of {} nodes)",
                model.display(),
                m.layers.len(),
                thousands(m.parameter_count()?),
                step.graph.len()
            );
            Ok(())
        }
        Command::Summary { model } => {
            print!("{}", load(&model)?.summary()?);
            Ok(())
        }
        Command::Dump(args) => dump::run(args),
        Command::Train(args) => train::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Build(args) => build::run(args),
    }
}

/// Loads a model file; its errors already name the file.
pub fn load(path: &Path) -> Result<Model> {
    Ok(Model::load(path)?)
}
