//! Time of the rewrite pass (egg equality saturation, then extraction) on the training step of
//! every example model at batch 64: the median of 21 runs, with the graph sizes and each
//! stage's stop reason, iterations and e-graph size. The target is < 20 ms for keras_cnn.
//!
//! `cargo bench -p kiln-compiler --bench rewrite [filter]` (a substring of the model name).

use std::path::PathBuf;
use std::time::Instant;

use kiln_compiler::rewrite::{rewrite, RewriteOptions};
use kiln_compiler::step::training_step;
use kiln_ir::model::Model;

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_default();
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models"));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/models")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    println!("{:<24} {:>9} {:>12}  stages", "model (batch 64)", "median ms", "nodes");
    for path in paths {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if !name.contains(&filter) {
            continue;
        }
        let model = Model::load(&path).unwrap_or_else(|e| panic!("{e}"));
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
