//! Helpers shared by the compiler's integration tests (each test binary uses some of them).
#![allow(dead_code)]

use std::path::PathBuf;

use kiln_ir::model::Model;

/// The example model zoo, by file stem, sorted.
pub fn example_models() -> Vec<(String, Model)> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models"));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/models")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let model = Model::load(&p).unwrap_or_else(|e| panic!("{e}"));
            (stem, model)
        })
        .collect()
}

/// A deterministic uniform generator in [0, 1) for test data.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }
}
