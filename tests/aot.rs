//! `kiln build` end to end: executables for mlp and keras_cnn train bit-identically to
//! `kiln train`, round-trip checkpoints through `eval` and `--resume`, rebuild byte-identically,
//! and exit with status 2 and a message naming the file on bad input.

mod common;

use common::{kiln, root, run, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use kiln::runtime::checkpoint::{load, Checkpoint};

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "status {:?}\n{}\n{}", o.status, stdout(&o), stderr(&o));
    o
}

/// A folder that lives as long as the test process, shared by the tests.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The executable built from `examples/models/<name>.json`, built once per test process.
fn executable(name: &'static str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<&'static str>>> = OnceLock::new();
    let out = scratch().join(format!("{name}-train"));
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if !built.contains(&name) {
        let model = format!("examples/models/{name}.json");
        ok(kiln(&["build", &model, "-o", path(&out)]));
        built.push(name);
    }
    out
}

/// stdout without the timings (images/s and seconds differ between runs).
fn without_timings(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| match l.find(" images/s") {
            Some(i) => l[..l[..i].rfind(", ").unwrap_or(i)].to_string(),
            None => l.to_string(),
        })
        .collect()
}

/// Asserts that two checkpoints hold the same model, counters and bit-identical tensors.
fn assert_same(a: &Checkpoint, b: &Checkpoint, what: &str) {
    assert_eq!((&a.model, a.step, a.epoch), (&b.model, b.step, b.epoch), "{what}");
    assert_eq!(a.tensors.len(), b.tensors.len(), "{what}");
    for ((na, sa, va), (nb, sb, vb)) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!((na, sa), (nb, sb), "{what}");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(va) == bits(vb), "{what}: tensor `{na}` differs");
    }
}

/// Trains `name` for `steps` steps with `kiln train` and with its executable, on the bundled
/// data, and checks that they print the same losses and save bit-identical checkpoints.
fn jit_and_aot_agree(name: &'static str, steps: &str, threads: &str) -> PathBuf {
    let exe = executable(name);
    let (jit, aot) =
        (scratch().join(format!("{name}-jit.st")), scratch().join(format!("{name}-aot.st")));
    let common = ["--steps", steps, "--threads", threads, "--log-every", "10"];
    let model = format!("examples/models/{name}.json");
    let mut args = vec!["train", model.as_str(), "--checkpoint", path(&jit)];
    args.extend(common);
    let j = ok(kiln(&args));
    let mut args = vec!["--checkpoint", path(&aot)];
    args.extend(common);
    let a = ok(run(&exe, &args));
    assert_eq!(without_timings(&stdout(&a)), without_timings(&stdout(&j)), "{name}: output");
    assert!(stdout(&a).contains(&format!("done: {steps} steps")), "{}", stdout(&a));
    assert_same(&load(&aot).unwrap(), &load(&jit).unwrap(), name);
    aot
}

#[test]
fn mlp_executable_trains_bit_identically_to_the_jit_and_round_trips_checkpoints() {
    let checkpoint = jit_and_aot_agree("mlp", "300", "1");
    let exe = executable("mlp");

    // eval of the checkpoint prints the final test loss and accuracy of training.
    let out = ok(run(&exe, &["eval", "--checkpoint", path(&checkpoint), "--threads", "1"]));
    let c = load(&checkpoint).unwrap();
    assert!(
        stdout(&out).contains(&format!("step {}, epoch {}", c.step, c.epoch)),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("test accuracy"), "{}", stdout(&out));

    // Resuming continues identically in both.
    let (a, j) = (scratch().join("mlp-resumed-aot.st"), scratch().join("mlp-resumed-jit.st"));
    let resume = ["--resume", path(&checkpoint), "--steps", "20", "--threads", "1"];
    ok(run(&exe, &[&resume[..], &["--checkpoint", path(&a)]].concat()));
    let args = [&["train", "examples/models/mlp.json"][..], &resume, &["--checkpoint", path(&j)]];
    ok(kiln(&args.concat()));
    assert_same(&load(&a).unwrap(), &load(&j).unwrap(), "resumed");
}

#[test]
fn mlp_on_two_threads_matches_the_jit() {
    jit_and_aot_agree("mlp", "20", "2");
}

#[test]
fn keras_cnn_executable_trains_bit_identically_to_the_jit() {
    let checkpoint = jit_and_aot_agree("keras_cnn", "200", "1");
    let out = ok(run(&executable("keras_cnn"), &["eval", "--checkpoint", path(&checkpoint)]));
    assert!(stdout(&out).contains("test loss"), "{}", stdout(&out));
}

#[test]
fn building_twice_gives_identical_bytes() {
    let again = scratch().join("mlp-again");
    ok(kiln(&["build", "examples/models/mlp.json", "-o", path(&again)]));
    let first = std::fs::read(executable("mlp")).unwrap();
    assert!(first == std::fs::read(&again).unwrap(), "two builds of mlp differ");
}

#[test]
fn help_and_version_name_the_model() {
    let exe = executable("mlp");
    let help = stdout(&ok(run(&exe, &["--help"])));
    for fragment in ["`mlp`", "sgd lr=0.1", "mlp.json", "101,770", "--checkpoint", "eval"] {
        assert!(help.contains(fragment), "{fragment} in\n{help}");
    }
    assert!(stdout(&ok(run(&exe, &["--version"]))).contains("(model `mlp`)"));
}

/// Asserts exit status 2 and a message containing every fragment.
fn fails(out: Output, fragments: &[&str]) {
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for f in fragments {
        assert!(err.contains(f), "`{f}` in {err}");
    }
}

#[test]
fn bad_input_exits_2_naming_the_file() {
    let exe = executable("mlp");
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p);

    fails(run(&exe, &["--data", path(&d("nowhere"))]), &["nowhere"]);
    std::fs::create_dir(d("corrupt")).unwrap();
    for f in kiln::runtime::dataset::FILE_NAMES {
        std::fs::write(d("corrupt").join(f), b"not an idx file").unwrap();
    }
    fails(run(&exe, &["--data", path(&d("corrupt"))]), &["corrupt"]);

    let unwritable = d("missing-dir/a.st");
    fails(run(&exe, &["--steps", "1", "--checkpoint", path(&unwritable)]), &["a.st"]);
    assert!(!d("missing-dir").exists());

    fails(run(&exe, &["--resume", path(&d("absent.st"))]), &["absent.st", "not found"]);
    std::fs::write(d("garbage.st"), b"garbage").unwrap();
    fails(run(&exe, &["eval", "--checkpoint", path(&d("garbage.st"))]), &["garbage.st"]);

    // A checkpoint of another model, and one of a model called `mlp` with another width.
    let lenet = d("lenet.st");
    ok(kiln(&[
        "train",
        "examples/models/lenet5.json",
        "--steps",
        "1",
        "--checkpoint",
        path(&lenet),
    ]));
    fails(run(&exe, &["--resume", path(&lenet)]), &["lenet.st", "`lenet5`, not `mlp`"]);
    let model = std::fs::read_to_string(root().join("examples/models/mlp.json")).unwrap();
    let narrow = model.replacen("128", "96", 1);
    assert_ne!(narrow, model);
    std::fs::write(d("mlp.json"), narrow).unwrap();
    let wide = d("narrow.st");
    ok(kiln(&["train", path(&d("mlp.json")), "--steps", "1", "--checkpoint", path(&wide)]));
    fails(run(&exe, &["eval", "--checkpoint", path(&wide)]), &["narrow.st", "shape", "96"]);
    let left: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().contains(".tmp")), "{left:?}");
}

#[test]
fn kiln_build_without_the_library_or_cc_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "examples/models/mlp.json", "-o"])
        .arg(scratch().join("never"))
        .env("KILN_TRAINER_LIB", "/nonexistent/libkiln_trainer.a")
        .current_dir(root())
        .output()
        .unwrap();
    fails(out, &["/nonexistent/libkiln_trainer.a", "KILN_TRAINER_LIB"]);
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "examples/models/mlp.json", "-o"])
        .arg(scratch().join("never"))
        .env("CC", "/nonexistent/cc")
        .current_dir(root())
        .output()
        .unwrap();
    fails(out, &["/nonexistent/cc", "C compiler"]);
    assert!(!scratch().join("never").exists());
}

#[test]
fn dump_asm_lists_every_kernel_under_its_symbol() {
    let out = ok(kiln(&["dump", "examples/models/mlp.json", "--stage", "asm"]));
    let text = stdout(&out);
    assert!(text.starts_with("kiln_train_k0_"), "{}", &text[..text.len().min(200)]);
    assert!(text.contains("ret"), "no return instruction");
}
