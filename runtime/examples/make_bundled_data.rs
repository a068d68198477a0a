//! Writes the bundled MNIST subset: the first 5,000 training and first 1,000 test examples.
//!
//! Usage: `cargo run -p kiln-runtime --example make_bundled_data -- SRC_DIR OUT_DIR`
//! where SRC_DIR holds the four original MNIST files (raw or gzipped).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kiln_runtime::dataset::{
    BUNDLED_TEST_LEN, BUNDLED_TRAIN_LEN, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS,
};
use kiln_runtime::{read_idx, write_idx_gz};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, out] = args.as_slice() else {
        eprintln!("usage: make_bundled_data SRC_DIR OUT_DIR");
        return ExitCode::from(2);
    };
    match run(Path::new(src), Path::new(out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(src: &Path, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: cannot create: {e}", out.display()))?;
    for (name, count) in [
        (TRAIN_IMAGES, BUNDLED_TRAIN_LEN),
        (TRAIN_LABELS, BUNDLED_TRAIN_LEN),
        (TEST_IMAGES, BUNDLED_TEST_LEN),
        (TEST_LABELS, BUNDLED_TEST_LEN),
    ] {
        let input = source_file(src, name);
        let array = read_idx(&input).map_err(|e| e.to_string())?;
        let total = array.dims.first().copied().unwrap_or(0);
        if total < count {
            return Err(format!("{}: holds {total} items, need at least {count}", input.display()));
        }
        let rest = &array.dims[1..];
        let item_len: usize = rest.iter().product();
        let mut dims = array.dims.clone();
        dims[0] = count;
        let output = out.join(format!("{name}.gz"));
        write_idx_gz(&output, &dims, &array.data[..count * item_len]).map_err(|e| e.to_string())?;
        println!("{} -> {} ({count} items)", input.display(), output.display());
    }
    Ok(())
}

/// `SRC/NAME.gz` if present, else `SRC/NAME`.
fn source_file(src: &Path, name: &str) -> PathBuf {
    let gz = src.join(format!("{name}.gz"));
    if gz.is_file() {
        gz
    } else {
        src.join(name)
    }
}
