//! End-to-end tests of the `kiln` binary: exit statuses, messages and a short training run.

mod common;

use common::{kiln, root, stderr, stdout};
use std::path::{Path, PathBuf};

/// The last `test accuracy N%` that `kiln train` printed, in percent.
fn final_test_accuracy(text: &str) -> f32 {
    text.split("test accuracy ")
        .last()
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .expect("a test accuracy")
}

/// The malformed corpus: `(file, fragment the message must contain)`.
fn malformed_cases() -> Vec<(PathBuf, String)> {
    let dir = root().join("tests/malformed");
    let listing = std::fs::read_to_string(dir.join("expected.txt")).expect("expected.txt");
    listing
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (file, fragment) = l.split_once(": ").expect("`file: fragment`");
            (dir.join(file.trim()), fragment.trim().to_string())
        })
        .collect()
}

#[test]
fn every_malformed_model_exits_2_with_a_message_naming_the_problem() {
    let cases = malformed_cases();
    assert!(cases.len() >= 20, "only {} malformed files", cases.len());
    for (file, fragment) in cases {
        let path = file.to_str().unwrap();
        for command in ["check", "summary"] {
            let out = kiln(&[command, path]);
            let err = stderr(&out);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} {path}: status {:?}\n{err}",
                out.status
            );
            assert!(err.starts_with("error: "), "{command} {path}: {err}");
            assert!(err.contains(&fragment), "{command} {path}: `{fragment}` not in:\n{err}");
            assert!(!err.contains("panicked"), "{command} {path} panicked:\n{err}");
            let name = Path::new(path).file_name().unwrap().to_str().unwrap();
            assert!(err.contains(name), "{command} {path}: message does not name the file:\n{err}");
        }
    }
}

#[test]
fn summary_prints_keras_parameter_counts() {
    for (model, total) in [("keras_cnn", "93,322"), ("lenet5", "61,706"), ("mlp", "101,770")] {
        let out = kiln(&["summary", &format!("examples/models/{model}.json")]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains(total), "{model}: {total} not in\n{text}");
    }
}

#[test]
fn check_accepts_every_example_model() {
    for entry in std::fs::read_dir(root().join("examples/models")).unwrap() {
        let path = entry.unwrap().path();
        let out = kiln(&["check", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
        assert!(stdout(&out).contains(": ok"));
    }
}

#[test]
fn dump_prints_text_and_dot() {
    let out = kiln(&["dump", "examples/models/mlp.json", "--stage", "train", "--batch", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("%dense_1.kernel.assign = assign(%dense_1.kernel,"), "{text}");
    // The dump parses back.
    let parsed = kiln::ir::text::parse(&text).expect("dump parses");
    assert_eq!(kiln::ir::text::print(&parsed).unwrap(), text);

    let out = kiln(&["dump", "examples/models/lenet5.json", "--format", "dot"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("digraph kiln {"));
}

#[test]
fn dump_fused_explains_each_fusion() {
    let args = ["dump", "examples/models/keras_cnn.json", "--stage", "fused", "--explain"];
    let out = kiln(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("# stage fusion: Saturated"), "{text}");
    assert!(
        text.contains(
            "# %conv2d_1.relu = conv2d_bias_act covers conv2d_1, conv2d_1.bias_add, conv2d_1.relu"
        ),
        "{text}"
    );
    assert!(text.contains("#   by conv-bias -> conv-bias-relu"), "{text}");
    assert!(
        text.contains("= max_pool2d_grad_relu_bias(%conv2d_2.relu, %d.max_pool2d_2)"),
        "{text}"
    );
    assert!(text.contains("%d.conv2d_2.bias = part(%d.conv2d_2.bias."), "{text}");
    // The graph part parses back.
    let graph: String =
        text.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    let parsed = kiln::ir::text::parse(&graph).expect("dump parses");
    assert_eq!(kiln::ir::text::print(&parsed).unwrap(), graph);
}

#[test]
fn missing_files_and_bad_arguments_exit_2() {
    let out = kiln(&["check", "no/such/model.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no/such/model.json"), "{}", stderr(&out));

    let out = kiln(&["train", "examples/models/mlp.json", "--data", "no/such/dir"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no/such/dir"), "{}", stderr(&out));

    let out = kiln(&["train", "examples/models/mlp.json", "--batch", "0"]);
    assert_eq!(out.status.code(), Some(2));

    let out = kiln(&["dump", "examples/models/mlp.json", "--stage", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn interpreter_training_lowers_the_mlp_loss_on_bundled_data() {
    let out = kiln(&[
        "train",
        "examples/models/mlp.json",
        "--backend",
        "interp",
        "--steps",
        "300",
        "--log-every",
        "25",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}\n{text}", stderr(&out));
    let losses: Vec<f32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("step "))
        .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 12, "{text}");
    let first = losses[0];
    let last_mean = losses[8..].iter().sum::<f32>() / 4.0;
    assert!(last_mean < 0.6 * first, "loss did not fall: {losses:?}");
    let acc = final_test_accuracy(&text);
    assert!(acc > 80.0, "test accuracy {acc}% after 300 steps\n{text}");
}

#[test]
fn jit_training_reaches_the_interpreters_accuracy_on_bundled_data() {
    let out = kiln(&["train", "examples/models/mlp.json", "--steps", "300", "--log-every", "100"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}\n{text}", stderr(&out));
    assert!(stderr(&out).contains("with the jit backend"), "{}", stderr(&out));
    let acc = final_test_accuracy(&text);
    assert!(acc > 85.0, "test accuracy {acc}% after 300 steps\n{text}");
}

#[test]
fn dump_shows_memory_kernels_and_clif() {
    let out = kiln(&["dump", "examples/models/lenet5.json", "--stage", "memory", "--batch", "8"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("arena: ") && text.contains("conv2d_1.kernel"), "{text}");

    let out = kiln(&["dump", "examples/models/mlp.json", "--stage", "kernels", "--batch", "8"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("kernel dense_1.relu {") && text.contains("fma("), "{text}");

    let out = kiln(&["dump", "examples/models/mlp.json", "--stage", "clif", "--batch", "8"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("function %kiln_k") && text.contains(" fma "),
        "{}",
        &text[..text.len().min(2000)]
    );
}

#[test]
fn bench_prints_a_json_line() {
    let out = kiln(&["bench", "examples/models/mlp.json", "--steps", "10", "--batch", "16"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    for key in ["compile_ms", "images_per_sec", "arena_mb", "start_to_first_step_s"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {line}");
    }
}
