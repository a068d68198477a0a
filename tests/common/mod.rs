//! What the end-to-end tests share: running the `kiln` binary (or a built program) from the
//! repository root and reading its output.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program` with `args` in the repository root.
pub fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program).args(args).current_dir(root()).output().expect("run a program")
}

/// Runs `kiln` with `args` in the repository root.
pub fn kiln(args: &[&str]) -> Output {
    run(Path::new(env!("CARGO_BIN_EXE_kiln")), args)
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
