//! Time of the rewrite pass (egg equality saturation, then extraction) on the training step of
//! every example model at batch 64: the median of 21 runs, with the graph sizes and each
//! stage's stop reason, iterations and e-graph size. The target is < 20 ms for keras_cnn.
//!
//! `cargo bench -p kiln-compiler --bench rewrite [filter]` (a substring of the model name).

use std::time::Instant;

use kiln_compiler::rewrite::{rewrite, RewriteOptions};
use kiln_compiler::step::training_step;

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_default();
    println!("{:<24} {:>9} {:>12}  stages", "model (batch 64)", "median ms", "nodes");
    for (name, model) in common::example_models() {
        if !name.contains(&filter) {
            continue;
        }
        let step = training_step(&model, 64).unwrap_or_else(|e| panic!("{name}: {e}"));
        let options = RewriteOptions::default();
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..21 {
            let start = Instant::now();
            let r = rewrite(&step.graph, &options).unwrap_or_else(|e| panic!("{name}: {e}"));
            times.push(start.elapsed().as_secs_f64() * 1e3);
            last = Some(r);
        }
        times.sort_by(f64::total_cmp);
        let r = last.expect("21 runs");
        let stages: Vec<String> = r
            .report
            .stages
            .iter()
            .map(|s| format!("{} {} x{} {}n", s.name, s.stop_reason, s.iterations, s.nodes))
            .collect();
        let nodes = format!("{} -> {}", r.report.nodes.0, r.report.nodes.1);
        println!("{name:<24} {:>9.2} {nodes:>12}  {}", times[10], stages.join("; "));
    }
}
