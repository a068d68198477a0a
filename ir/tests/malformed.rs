//! Every file in `tests/malformed/` must fail to load or build, with a message naming the file
//! and containing the fragment listed for it in `tests/malformed/expected.txt`.
//! Run with `--nocapture` to see all the messages.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_ir::model::{Mode, Model};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/malformed");

/// `file.json: fragment` lines; blank lines and `#` comments are skipped.
fn expected() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(Path::new(DIR).join("expected.txt"))
        .expect("tests/malformed/expected.txt");
    let mut map = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (file, fragment) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("expected.txt:{}: not `file.json: fragment`", n + 1));
        assert!(
            map.insert(file.to_string(), fragment.to_string()).is_none(),
            "expected.txt:{}: `{file}` is listed twice",
            n + 1
        );
    }
    map
}

fn json_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(DIR)
        .expect("tests/malformed")
        .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    files
}

/// The error of loading and building (training mode) the model, if any.
fn error_of(path: &Path) -> Option<String> {
    let result = Model::load(path).and_then(|m| m.build(2, Mode::Train));
    result.err().map(|e| e.to_string())
}

#[test]
fn malformed_model_files_are_all_listed() {
    let files = json_files();
    assert!(files.len() >= 20, "only {} malformed files", files.len());
    let expected = expected();
    for f in &files {
        assert!(expected.contains_key(f), "{f} is not listed in expected.txt");
    }
    for f in expected.keys() {
        assert!(files.contains(f), "expected.txt lists {f}, which does not exist");
    }
}

#[test]
fn malformed_model_files_fail_with_their_message() {
    let expected = expected();
    let mut failures = Vec::new();
    for file in json_files() {
        let path = Path::new(DIR).join(&file);
        let fragment = expected.get(&file).map(String::as_str).unwrap_or("");
        let outcome = std::panic::catch_unwind(|| error_of(&path));
        match outcome {
            Err(_) => failures.push(format!("{file}: panicked")),
            Ok(None) => failures.push(format!("{file}: loaded and built without an error")),
            Ok(Some(message)) => {
                println!("{message}");
                if !message.contains(&file) {
                    failures.push(format!("{file}: the message does not name the file: {message}"));
                }
                if !message.contains(fragment) {
                    failures.push(format!(
                        "{file}: the message does not contain `{fragment}`: {message}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
