//! `kiln dump`: the IR of a model at a stage, as text or Graphviz.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use kiln::backend::lowered::{symbol, ProgramKind};
use kiln::compiler::codegen::{asm_text, clif_text};
use kiln::compiler::kernel::print::print as print_kernel;
use kiln::compiler::memory::{describe, Persistent};
use kiln::compiler::program::{build, Io};
use kiln::compiler::rewrite::RewriteOptions;
use kiln::compiler::step::{compiled_training_step, training_step, CompileOptions};
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
    /// Skip the rewrite pass (fusion and clean-up) before the memory, kernels and clif stages.
    #[arg(long)]
    no_fusion: bool,
    /// With `--stage fused`: for each fused node, the ops it covers and the rules that made it.
    #[arg(long)]
    explain: bool,
}

/// Compilation stages that can be dumped.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The forward graph with its loss, as built from the model file.
    Graph,
    /// The whole training step: forward, loss, gradients and optimizer updates.
    Train,
    /// The training step after the egg rewrite pass (clean-up and fusion), with its report.
    Fused,
    /// The training step's memory plan: the arena's regions and every buffer.
    Memory,
    /// The training step's kernels (loop nests).
    Kernels,
    /// The Cranelift IR of the training step's kernels.
    Clif,
    /// The machine code of the training step's kernels (after register allocation), each
    /// under the symbol it has in executables made by `kiln build`.
    Asm,
}

/// Prints the requested stage.
pub fn run(args: DumpArgs) -> Result<()> {
    let model = load(&args.model)?;
    let batch = args.batch.unwrap_or(model.training.batch_size);
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    let options = CompileOptions {
        fusion: !args.no_fusion,
        rewrite: RewriteOptions { explain: args.explain, ..Default::default() },
    };
    let graph: Graph = match args.stage {
        Stage::Graph => model.build(batch, Mode::Train)?.graph,
        Stage::Train => training_step(&model, batch)?.graph,
        Stage::Fused => {
            let options = CompileOptions { fusion: true, ..options };
            let (tg, report) = compiled_training_step(&model, batch, &options)?;
            if let (Some(report), Format::Text) = (report, args.format) {
                emit(&report.text())?;
            }
            tg.graph
        }
        Stage::Memory | Stage::Kernels | Stage::Clif | Stage::Asm => {
            let (tg, _) = compiled_training_step(&model, batch, &options)?;
            let mut persistent = Persistent::default();
            persistent.add_from(&tg.graph);
            let p = build(&tg.graph, Io::from(&tg), &persistent)?;
            let out = match args.stage {
                Stage::Memory => describe(&tg.graph, &p.order, &p.plan, &persistent),
                Stage::Kernels => p.kernels.iter().map(print_kernel).collect::<Vec<_>>().join("\n"),
                Stage::Asm => asm_listing(&p)?,
                _ => p
                    .kernels
                    .iter()
                    .map(clif_text)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .join("\n"),
            };
            return emit(&out);
        }
    };
    let out = match args.format {
        Format::Text => text::print(&graph)?,
        Format::Dot => text::dot(&graph)?,
    };
    emit(&out)?;
    Ok(())
}

/// Writes to stdout; a closed pipe (`kiln dump … | head`) ends the output quietly.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Every kernel's machine code under its symbol, like a disassembler's listing.
fn asm_listing(p: &kiln::compiler::program::Program) -> Result<String> {
    let mut out = String::new();
    for (i, k) in p.kernels.iter().enumerate() {
        let symbol = symbol(ProgramKind::Train, i, k);
        let code = asm_text(k).map_err(|e| anyhow::anyhow!("{e}"))?;
        out.push_str(&format!("{symbol}:  ; {} work items\n{code}\n", k.work_items()));
    }
    Ok(out)
}
