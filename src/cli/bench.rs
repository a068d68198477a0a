//! `kiln bench`: compile time, steady-state training throughput, arena size and peak memory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use kiln::backend::{JitBackend, JitOptions};
use kiln::compiler::step::CompileOptions;
use kiln::runtime::{self, Batcher, StepBackend};

use super::load;
use super::train::threads;

/// Arguments of `kiln bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The model file (JSON).
    model: PathBuf,
    /// Batch size (default: the model file's).
    #[arg(long)]
    batch: Option<usize>,
    /// Measured training steps (after 10 warm-up steps), split into 5 windows.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Threads for the compiled kernels (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Use plain SGD with this learning rate instead of the model file's optimizer (the peer
    /// baselines use SGD lr 0.01).
    #[arg(long)]
    sgd: Option<f64>,
    /// Also time every kernel (median over 20 steps) and print the slowest.
    #[arg(long)]
    profile: bool,
    /// Compile without the egg rewrite pass (fusion and clean-up), for comparison.
    #[arg(long)]
    no_fusion: bool,
}

/// Seconds since the kernel started this process (Linux), or `None` elsewhere.
fn seconds_since_process_start() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let start_ticks: f64 = fields.get(19)?.parse().ok()?;
    let uptime: f64 =
        std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    // Linux reports starttime in clock ticks of 1/100 s on every mainstream configuration.
    Some(uptime - start_ticks / 100.0)
}

/// Peak resident set size in MB (Linux), or `None` elsewhere.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Compiles the model, trains on the bundled data and prints one JSON line and a table.
pub fn run(args: BenchArgs) -> Result<()> {
    let start = Instant::now();
    let mut model = load(&args.model)?;
    if let Some(b) = args.batch {
        anyhow::ensure!(b > 0, "--batch must be at least 1");
        model.training.batch_size = b;
    }
    if let Some(lr) = args.sgd {
        anyhow::ensure!(lr > 0.0, "--sgd takes a learning rate > 0");
        model.training.optimizer =
            kiln::ir::model::Optimizer::Sgd { lr, momentum: 0.0, nesterov: false };
    }
    anyhow::ensure!(args.steps >= 5, "--steps must be at least 5");
    let batch = model.training.batch_size;
    let threads = threads(args.threads);
    let options = CompileOptions { fusion: !args.no_fusion, ..Default::default() };
    let mut backend =
        JitBackend::with_options(model.clone(), &JitOptions { threads, compile: options })?;
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let data = runtime::bundled()?;
    let mut batcher = Batcher::new(&data.train, batch, 0).context("batching the bundled data")?;
    let mut epoch = 0;
    let mut step = |backend: &mut JitBackend| -> Result<f32> {
        loop {
            if let Some(b) = batcher.next_batch() {
                if b.len == batch {
                    return Ok(backend.train_step(&b)?);
                }
            }
            epoch += 1;
            batcher.start_epoch(epoch);
        }
    };
    step(&mut backend)?;
    let first_step_s = seconds_since_process_start().unwrap_or(start.elapsed().as_secs_f64());
    for _ in 0..10 {
        step(&mut backend)?;
    }
    let per_window = args.steps / 5;
    let mut windows = Vec::new();
    let mut last_loss = 0.0;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..per_window {
            last_loss = step(&mut backend)?;
        }
        windows.push((per_window * batch) as f64 / t.elapsed().as_secs_f64());
    }
    let images_per_sec = median(windows.clone());
    let arena_mb = backend.stats().arena_len as f64 * 4.0 / 1e6;
    let rss = peak_rss_mb();
    let s = backend.stats();
    println!(
        "{{\"model\":\"{}\",\"batch\":{batch},\"threads\":{threads},\"compile_ms\":{compile_ms:.1},\"lower_ms\":{:.1},\"codegen_ms\":{:.1},\"kernels\":{},\"start_to_first_step_s\":{first_step_s:.3},\"images_per_sec\":{images_per_sec:.0},\"windows\":[{}],\"arena_mb\":{arena_mb:.2},\"peak_rss_mb\":{},\"last_loss\":{last_loss:.4}}}",
        model.name,
        s.lower_ms,
        s.codegen_ms,
        s.kernels,
        windows.iter().map(|w| format!("{w:.0}")).collect::<Vec<_>>().join(","),
        rss.map_or("null".into(), |r| format!("{r:.1}")),
    );
    eprintln!("model                      {}", model.name);
    eprintln!("batch, threads             {batch}, {threads}");
    eprintln!(
        "compile (file to ready)    {compile_ms:.1} ms ({} kernels; Cranelift {:.1} ms)",
        s.kernels, s.codegen_ms
    );
    eprintln!("process start → 1st step   {first_step_s:.3} s");
    eprintln!("training throughput        {images_per_sec:.0} images/s (median of 5 windows of {per_window} steps)");
    eprintln!("arena                      {arena_mb:.2} MB");
    if let Some(r) = rss {
        eprintln!("peak RSS                   {r:.1} MB");
    }
    if args.profile {
        let b = batcher.next_batch().filter(|b| b.len == batch);
        let b = match b {
            Some(b) => b,
            None => {
                batcher.start_epoch(epoch + 1);
                batcher.next_batch().context("a batch for profiling")?
            }
        };
        let profile = backend.profile(&b, 20)?;
        let total: f64 = profile.iter().map(|p| p.2).sum();
        eprintln!("kernel profile (median µs per step, {total:.0} µs in all):");
        for (name, work, us) in profile.iter().take(25) {
            eprintln!("  {us:>9.1} µs {:>5.1}%  {name} ({work} work items)", 100.0 * us / total);
        }
    }
    Ok(())
}
