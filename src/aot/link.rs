//! Linking an object file with the trainer library into an executable, with the system `cc`.
//!
//! The trainer library is found, in this order:
//! 1. the path in the environment variable `KILN_TRAINER_LIB`;
//! 2. `libkiln_trainer.a` next to the running `kiln` executable — where `cargo build [--release]`
//!    puts it, since the `kiln` package depends on the `kiln-trainer` crate;
//! 3. the newest `libkiln_trainer-*.a` in the `deps/` folder next to it (where Cargo leaves it
//!    when it builds `kiln` only as a dependency of tests, as `cargo test` does).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The file name of the trainer library.
pub const TRAINER_LIB: &str = "libkiln_trainer.a";
/// The environment variable that overrides where the trainer library is.
pub const TRAINER_LIB_ENV: &str = "KILN_TRAINER_LIB";

/// The C libraries the Rust standard library in the trainer needs (`rustc --print
/// native-static-libs` for `*-linux-gnu`).
const NATIVE_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"];

/// Why an executable could not be linked.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// `KILN_TRAINER_LIB` names a file that does not exist.
    #[error("{}: the trainer library named by {TRAINER_LIB_ENV} does not exist", path.display())]
    EnvLibMissing {
        /// The path in the variable.
        path: PathBuf,
    },
    /// No trainer library anywhere.
    #[error(
        "cannot find the trainer library {TRAINER_LIB} (looked in {}); build it with `cargo build --release` in kiln's source tree, or set {TRAINER_LIB_ENV} to its path",
        searched.display()
    )]
    LibNotFound {
        /// The folder searched.
        searched: PathBuf,
    },
    /// The C compiler could not be started.
    #[error("cannot run the C compiler `{}` to link: {source}; install one (e.g. `apt-get install gcc`) or set CC", cc.to_string_lossy())]
    NoCc {
        /// The command tried.
        cc: OsString,
        /// Why it did not start.
        source: io::Error,
    },
    /// The C compiler failed.
    #[error("linking with `{}` failed ({status}):\n{stderr}", cc.to_string_lossy())]
    LinkFailed {
        /// The command run.
        cc: OsString,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed.
        stderr: String,
    },
    /// A file could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Where the trainer library is (see the module documentation).
pub fn find_trainer_lib() -> Result<PathBuf, LinkError> {
    if let Some(path) = std::env::var_os(TRAINER_LIB_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() { Ok(path) } else { Err(LinkError::EnvLibMissing { path }) };
    }
    let exe = std::env::current_exe().map_err(|source| LinkError::Io {
        path: PathBuf::from("the running kiln executable"),
        source,
    })?;
    let dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
    let beside = dir.join(TRAINER_LIB);
    if beside.is_file() {
        return Ok(beside);
    }
    newest_in_deps(&dir.join("deps")).ok_or(LinkError::LibNotFound { searched: dir })
}

/// The most recently modified `libkiln_trainer-*.a` in `deps`.
fn newest_in_deps(deps: &Path) -> Option<PathBuf> {
    fs::read_dir(deps)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libkiln_trainer-") && name.ends_with(".a")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
}

/// Links `object` (the bytes of the generated object file) with the trainer library `lib` into
/// the executable `out`, using `$CC` (default `cc`). The executable is written next to `out`
/// and renamed over it, so `out` is never left half-written.
pub fn link(object: &[u8], lib: &Path, out: &Path) -> Result<(), LinkError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LinkError::Io { path, source }
    };
    // One folder per call: builds in other processes or threads never share it.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let tag = format!("{}-{call}", std::process::id());
    let dir = std::env::temp_dir().join(format!("kiln-build-{tag}"));
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    // A fixed file name: it may end up in the executable's symbol table.
    let obj = dir.join("kiln_model.o");
    let result =
        fs::write(&obj, object).map_err(io_err(&obj)).and_then(|()| run_cc(&obj, lib, out, &tag));
    let _ = fs::remove_dir_all(&dir);
    result
}

/// Links into `out` through `<out>.tmp-<tag>`.
fn run_cc(obj: &Path, lib: &Path, out: &Path, tag: &str) -> Result<(), LinkError> {
    let cc = std::env::var_os("CC").filter(|c| !c.is_empty()).unwrap_or_else(|| "cc".into());
    let mut tmp_name = out.file_name().unwrap_or(out.as_os_str()).to_os_string();
    tmp_name.push(format!(".tmp-{tag}"));
    let tmp = out.with_file_name(tmp_name);
    let output = Command::new(&cc)
        .arg("-o")
        .arg(&tmp)
        .arg(obj)
        .arg(lib)
        .args(["-Wl,--gc-sections", "-Wl,--strip-debug"])
        .args(NATIVE_LIBS)
        .output()
        .map_err(|source| LinkError::NoCc { cc: cc.clone(), source })?;
    if !output.status.success() {
        let _ = fs::remove_file(&tmp);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        return Err(LinkError::LinkFailed { cc, status: output.status, stderr });
    }
    fs::rename(&tmp, out).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        LinkError::Io { path: out.to_path_buf(), source }
    })
}
