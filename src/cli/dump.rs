//! `kiln dump`: the IR of a model at a stage, as text or Graphviz.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use kiln::compiler::step::training_step;
use kiln::ir::model::Mode;
use kiln::ir::{text, Graph};

use super::{load, Format};

/// Arguments of `kiln dump`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The model file (JSON).
    model: PathBuf,
    /// Which stage to print.
    #[arg(long, value_enum, default_value_t = Stage::Graph)]
    stage: Stage,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Batch size the graph is specialised to (default: the model file's).
    #[arg(long)]
    batch: Option<usize>,
}

/// Compilation stages that can be dumped.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The forward graph with its loss, as built from the model file.
    Graph,
    /// The whole training step: forward, loss, gradients and optimizer updates.
    Train,
}

/// Prints the requested stage.
pub fn run(args: DumpArgs) -> Result<()> {
    let model = load(&args.model)?;
    let batch = args.batch.unwrap_or(model.training.batch_size);
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    let graph: Graph = match args.stage {
        Stage::Graph => model.build(batch, Mode::Train)?.graph,
        Stage::Train => training_step(&model, batch)?.graph,
    };
    let out = match args.format {
        Format::Text => text::print(&graph)?,
        Format::Dot => text::dot(&graph)?,
    };
    print!("{out}");
    Ok(())
}
