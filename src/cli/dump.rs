//! `kiln dump`: the IR of a model at a stage, as text or Graphviz.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use kiln::compiler::codegen::clif_text;
use kiln::compiler::kernel::print::print as print_kernel;
use kiln::compiler::memory::{describe, Persistent};
use kiln::compiler::program::{build, Io};
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
    /// The training step's memory plan: the arena's regions and every buffer.
    Memory,
    /// The training step's kernels (loop nests).
    Kernels,
    /// The Cranelift IR of the training step's kernels.
    Clif,
}

/// Prints the requested stage.
pub fn run(args: DumpArgs) -> Result<()> {
    let model = load(&args.model)?;
    let batch = args.batch.unwrap_or(model.training.batch_size);
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    let graph: Graph = match args.stage {
        Stage::Graph => model.build(batch, Mode::Train)?.graph,
        Stage::Train => training_step(&model, batch)?.graph,
        Stage::Memory | Stage::Kernels | Stage::Clif => {
            let tg = training_step(&model, batch)?;
            let mut persistent = Persistent::default();
            persistent.add_from(&tg.graph);
            let p = build(&tg.graph, Io::from(&tg), &persistent)?;
            let out = match args.stage {
                Stage::Memory => describe(&tg.graph, &p.order, &p.plan, &persistent),
                Stage::Kernels => p.kernels.iter().map(print_kernel).collect::<Vec<_>>().join("\n"),
                _ => p
                    .kernels
                    .iter()
                    .map(clif_text)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .join("\n"),
            };
            print!("{out}");
            return Ok(());
        }
    };
    let out = match args.format {
        Format::Text => text::print(&graph)?,
        Format::Dot => text::dot(&graph)?,
    };
    print!("{out}");
    Ok(())
}
