//! `kiln build`: compile a model ahead of time into a standalone training executable.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use kiln::aot;

use super::load;

/// Arguments of `kiln build`.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The model file (JSON).
    model: PathBuf,
    /// The executable to write (default: `<model name>-train` in the current directory).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Batch size compiled in (default: the model file's).
    #[arg(long)]
    batch: Option<usize>,
    /// Seed of the initial weights and dropout compiled in (default: the model file's).
    #[arg(long)]
    seed: Option<u64>,
}

/// Builds the executable and prints what was built and how long it took.
pub fn run(args: BuildArgs) -> Result<()> {
    let start = Instant::now();
    let mut model = load(&args.model)?;
    if let Some(b) = args.batch {
        anyhow::ensure!(b > 0, "--batch must be at least 1");
        model.training.batch_size = b;
    }
    if let Some(s) = args.seed {
        model.training.seed = s;
    }
    let out = args.output.clone().unwrap_or_else(|| PathBuf::from(format!("{}-train", model.name)));
    // Find the library before compiling, so a missing one is reported at once.
    let lib = aot::find_trainer_lib()?;
    let source = args.model.file_name().map(|n| n.to_string_lossy().into_owned());
    let emitted = aot::emit(&model, source.as_deref())
        .with_context(|| format!("compiling {}", args.model.display()))?;
    let t = Instant::now();
    aot::link(&emitted.object, &lib, &out)?;
    let link_ms = t.elapsed().as_secs_f64() * 1e3;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "built {} ({:.1} MB) in {:.0} ms: {} kernels, lowering {:.0} ms, Cranelift {:.0} ms, link {:.0} ms (with {})",
        display(&out),
        size as f64 / 1e6,
        start.elapsed().as_secs_f64() * 1e3,
        emitted.kernels,
        emitted.lower_ms,
        emitted.codegen_ms,
        link_ms,
        lib.display()
    );
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
