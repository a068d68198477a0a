//! Unit tests of model files: the examples, lowering conventions, errors.

use super::*;
use crate::ops::{self, Op};

const EXAMPLES: &[&str] = &[
    "mlp",
    "keras_cnn",
    "lenet5",
    "autoencoder",
    "denoising_autoencoder",
    "resnet_block",
    "maxout_mlp",
];

fn example_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/models")
        .join(format!("{name}.json"))
}

fn example(name: &str) -> Model {
    Model::load(&example_path(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn parse(text: &str) -> Result<Model, ModelError> {
    Model::from_json(text, "t.json")
}

fn err(text: &str) -> String {
    match parse(text).and_then(|m| m.build(2, Mode::Train).map(|_| m)) {
        Ok(_) => panic!("expected an error for {text}"),
        Err(e) => e.to_string(),
    }
}

fn count(g: &LossGraph, pred: impl Fn(&Op) -> bool) -> usize {
    g.graph.nodes_where(pred).len()
}

#[test]
fn model_examples_load() {
    for name in EXAMPLES {
        let m = example(name);
        assert_eq!(m.name, *name);
        assert!(!m.layers.is_empty());
    }
}

#[test]
fn model_examples_build_in_both_modes() {
    for name in EXAMPLES {
        let m = example(name);
        for mode in [Mode::Train, Mode::Eval] {
            let g = m.build(4, mode).unwrap_or_else(|e| panic!("{name}: {e}"));
            g.graph.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(g.graph.node(g.input).shape.dim(0), 4);
            assert_eq!(g.graph.node(g.loss).shape, Shape::scalar());
            let outputs: Vec<String> = g.graph.outputs().into_iter().map(|(n, _)| n).collect();
            assert_eq!(outputs, ["prediction", "loss"], "{name}");
        }
    }
}

#[test]
fn model_parameter_counts_dense() {
    assert_eq!(example("mlp").parameter_count().unwrap(), 101_770);
    assert_eq!(example("autoencoder").parameter_count().unwrap(), 209_968);
    assert_eq!(example("denoising_autoencoder").parameter_count().unwrap(), 209_968);
    assert_eq!(example("maxout_mlp").parameter_count().unwrap(), 784 * 512 + 512 + 256 * 10 + 10);
}

#[test]
fn model_parameter_counts_conv() {
    assert_eq!(example("keras_cnn").parameter_count().unwrap(), 93_322);
    assert_eq!(example("lenet5").parameter_count().unwrap(), 61_706);
}

#[test]
fn model_summaries_show_totals() {
    let s = example("mlp").summary().unwrap();
    assert!(s.contains("Total params: 101,770"), "{s}");
    assert!(s.contains("dense_1 (dense)"), "{s}");
    assert!(s.contains("(None, 128)"), "{s}");
    let s = example("autoencoder").summary().unwrap();
    assert!(s.contains("Total params: 209,968"), "{s}");
}

#[test]
fn model_summaries_show_conv_totals() {
    let s = example("keras_cnn").summary().unwrap();
    assert!(s.contains("Total params: 93,322"), "{s}");
    assert!(s.contains("(None, 26, 26, 32)"), "{s}");
    let s = example("lenet5").summary().unwrap();
    assert!(s.contains("Total params: 61,706"), "{s}");
    let s = example("resnet_block").summary().unwrap();
    assert!(s.contains("stem, conv_b"), "{s}");
}

#[test]
fn model_maxout_dropout_only_in_train() {
    let m = example("maxout_mlp");
    let train = m.build(8, Mode::Train).unwrap();
    let eval = m.build(8, Mode::Eval).unwrap();
    let dropout = |op: &Op| matches!(op, Op::Dropout(_));
    assert_eq!(count(&train, dropout), 1);
    assert_eq!(count(&eval, dropout), 0);
    assert_eq!(count(&train, |op| matches!(op, Op::Maxout(_))), 1);
    // Same parameters, same seeds, in both modes.
    let params = |g: &LossGraph| -> Vec<(String, Op)> {
        g.graph
            .nodes_where(|op| matches!(op, Op::Parameter(_)))
            .into_iter()
            .map(|id| (g.graph.node(id).name.clone(), g.graph.node(id).op.clone()))
            .collect()
    };
    assert_eq!(params(&train), params(&eval));
    let d = train.graph.find("dropout_1").expect("dropout node named after its layer");
    assert_eq!(train.graph.node(d).shape, Shape::new([8, 256]));
}

#[test]
fn model_noise_only_in_train() {
    let m = example("denoising_autoencoder");
    let noise = |op: &Op| matches!(op, Op::GaussianNoise(_));
    let train = m.build(2, Mode::Train).unwrap();
    assert_eq!(count(&train, noise), 1);
    assert_eq!(count(&m.build(2, Mode::Eval).unwrap(), noise), 0);
    // The target is the clean input.
    let loss_operands = train.graph.operands(train.loss);
    assert_eq!(loss_operands[1], train.input);
    assert!(matches!(train.graph.node(train.loss).op, Op::MeanSquaredError(_)));
    assert!(train.labels.is_none());
}

#[test]
fn model_default_layer_names() {
    let m = example("keras_cnn");
    assert_eq!(
        m.layer_names(),
        [
            "conv2d_1",
            "max_pool2d_1",
            "conv2d_2",
            "max_pool2d_2",
            "conv2d_3",
            "flatten_1",
            "dense_1",
            "dense_2"
        ]
    );
    // Given names are kept and not reused by defaults.
    let m = Model::new(
        "m",
        [4],
        vec![
            Layer::new(DenseLayer::new(3)).named("dense_1"),
            Layer::new(DenseLayer::new(3)),
            Layer::new(DenseLayer::new(3)).named("head"),
        ],
    );
    assert_eq!(m.layer_names(), ["dense_1", "dense_2", "head"]);
}

#[test]
fn model_mlp_lowering_conventions() {
    let g = example("mlp").build(16, Mode::Train).unwrap();
    let graph = &g.graph;
    let node = |name: &str| graph.find(name).unwrap_or_else(|| panic!("no node `{name}`"));
    assert!(matches!(graph.node(node("flatten_1")).op, Op::Reshape(_)));
    assert_eq!(graph.node(node("flatten_1")).shape, Shape::new([16, 784]));
    assert!(matches!(graph.node(node("dense_1")).op, Op::MatMul(_)));
    assert!(matches!(graph.node(node("dense_1.bias_add")).op, Op::BiasAdd(_)));
    assert!(matches!(graph.node(node("dense_1.relu")).op, Op::Relu(_)));
    assert_eq!(graph.node(node("dense_1.kernel")).shape, Shape::new([784, 128]));
    assert_eq!(graph.node(node("dense_1.bias")).shape, Shape::new([128]));
    // The final softmax is folded into the loss: the prediction is the logits.
    assert_eq!(count(&g, |op| matches!(op, Op::Softmax(_))), 0);
    assert_eq!(g.prediction, node("dense_2.bias_add"));
    assert!(matches!(graph.node(g.loss).op, Op::SoftmaxCrossEntropy(_)));
    let labels = g.labels.expect("labels");
    assert_eq!(graph.node(labels).shape, Shape::new([16]));
    assert_eq!(graph.node(labels).name, "labels");
    assert_eq!(graph.node(g.weights).shape, Shape::new([16]));
    assert_eq!(graph.node(g.weights).name, "weights");
    assert_eq!(graph.operands(g.loss), [g.prediction, labels, g.weights]);
    // Every parameter has its own seed.
    let mut seeds: Vec<u64> = graph
        .nodes_where(|op| matches!(op, Op::Parameter(_)))
        .into_iter()
        .map(|id| match &graph.node(id).op {
            Op::Parameter(p) => p.seed,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(seeds.len(), 4);
    seeds.sort_unstable();
    seeds.dedup();
    assert_eq!(seeds.len(), 4);
    let infos: Vec<(&str, usize)> = g.layers.iter().map(|l| (l.name.as_str(), l.params)).collect();
    assert_eq!(infos, [("flatten_1", 0), ("dense_1", 100_480), ("dense_2", 1_290)]);
    assert_eq!(g.layers[2].output_shape, Shape::new([16, 10]));
}

#[test]
fn model_graph_form_add_has_two_operands() {
    let m = example("resnet_block");
    let g = m.build(2, Mode::Train).unwrap();
    let add = g.graph.find("residual").expect("the add node is named after its layer");
    assert!(matches!(g.graph.node(add).op, Op::Add(_)));
    let operands = g.graph.operands(add);
    assert_eq!(operands.len(), 2);
    assert_eq!(operands[0], g.graph.find("stem.relu").unwrap());
    assert_eq!(operands[1], g.graph.find("conv_b.bias_add").unwrap());
    assert!(g.graph.find("residual.relu").is_some());
}

#[test]
fn model_graph_form_without_conv() {
    let text = r#"{
      "input": {"shape": [8]},
      "layers": [
        {"type": "dense", "name": "a", "units": 4, "activation": "tanh"},
        {"type": "dense", "name": "b", "units": 4, "inputs": ["input"]},
        {"type": "add", "inputs": ["a", "b", "a"], "activation": {"type": "leaky_relu", "alpha": 0.1}},
        {"type": "concat", "inputs": ["add_1", "a"]},
        {"type": "dense", "units": 3, "activation": "softmax"}
      ]
    }"#;
    let m = parse(text).unwrap();
    let g = m.build(5, Mode::Train).unwrap();
    let add = g.graph.find("add_1").unwrap();
    assert_eq!(g.graph.operands(add).len(), 2);
    assert!(g.graph.find("add_1.partial_1").is_some());
    match &g.graph.node(g.graph.find("add_1.leaky_relu").unwrap()).op {
        Op::LeakyRelu(l) => assert_eq!(l.alpha, 0.1),
        other => panic!("{other:?}"),
    }
    assert_eq!(g.graph.node(g.graph.find("concat_1").unwrap()).shape, Shape::new([5, 8]));
    g.graph.validate().unwrap();
}

#[test]
fn model_unused_layers_are_checked_then_left_out() {
    let text = r#"{
      "input": {"shape": [8]},
      "layers": [
        {"type": "dense", "units": 4, "name": "head"},
        {"type": "dense", "units": 2}
      ],
      "output": "head"
    }"#;
    let g = parse(text).unwrap().build(1, Mode::Eval).unwrap();
    assert_eq!(g.layers.len(), 1);
    assert_eq!(g.graph.parameter_count(), 36);
    let bad = r#"{
      "input": {"shape": [8]},
      "layers": [
        {"type": "dense", "units": 4, "name": "head"},
        {"type": "conv2d", "filters": 2, "kernel_size": 3}
      ],
      "output": "head"
    }"#;
    assert!(err(bad).contains("layer 2 `conv2d_1` (conv2d)"));
}

#[test]
fn model_mse_with_labels_uses_one_hot() {
    let text = r#"{
      "input": {"shape": [4]},
      "layers": [{"type": "dense", "units": 3, "activation": "sigmoid"}],
      "training": {"loss": "binary_cross_entropy", "target": "labels"}
    }"#;
    let g = parse(text).unwrap().build(2, Mode::Train).unwrap();
    let operands = g.graph.operands(g.loss);
    assert!(matches!(g.graph.node(operands[1]).op, Op::OneHot(ops::OneHot { classes: 3 })));
    assert!(g.labels.is_some());
    assert!(g.graph.find("dense_1.sigmoid").is_some());
}

#[test]
fn model_training_defaults_and_values() {
    let m =
        parse(r#"{"input": {"shape": [2]}, "layers": [{"type": "dense", "units": 2}]}"#).unwrap();
    assert_eq!(m.training, Training::default());
    assert_eq!(m.training.optimizer, Optimizer::Sgd { lr: 0.01, momentum: 0.0, nesterov: false });
    assert_eq!(m.training.target(), Target::Labels);
    let m = example("keras_cnn");
    assert_eq!(m.training.optimizer, Optimizer::Rmsprop { lr: 0.001, rho: 0.9, eps: 1e-7 });
    let m = example("lenet5");
    assert_eq!(m.training.optimizer, Optimizer::Sgd { lr: 0.05, momentum: 0.9, nesterov: false });
    let m = example("autoencoder");
    assert_eq!(m.training.target(), Target::Input);
    let text = r#"{"input": {"shape": [2]}, "layers": [{"type": "dense", "units": 2}],
      "training": {"optimizer": "adam", "early_stopping": {"patience": 3}, "seed": 7}}"#;
    let m = parse(text).unwrap();
    assert_eq!(m.training.optimizer, Optimizer::with_defaults("adam").unwrap());
    assert_eq!(m.training.early_stopping, Some(EarlyStopping { patience: 3, min_delta: 0.0 }));
    assert_eq!(m.training.seed, 7);
}

#[test]
fn model_layer_settings() {
    let text = r#"{"input": {"shape": [8, 8, 3]}, "layers": [
      {"type": "conv2d", "filters": 4, "kernel_size": [3, 1], "strides": [2, 1],
       "padding": [1, 1, 0, 0], "activation": "elu", "use_bias": false,
       "kernel_initializer": "he_normal"},
      {"type": "avg_pool2d", "pool_size": [2, 1], "strides": 1},
      {"type": "activation", "activation": {"type": "elu", "alpha": 0.5}}
    ]}"#;
    let m = parse(text).unwrap();
    let LayerKind::Conv2d(c) = &m.layers[0].kind else { panic!() };
    assert_eq!(c.kernel_size, [3, 1]);
    assert_eq!(c.strides, [2, 1]);
    assert_eq!(c.padding, ops::Padding::Explicit([1, 1, 0, 0]));
    assert_eq!(c.activation, Activation::Elu { alpha: 1.0 });
    assert!(!c.use_bias);
    assert_eq!(c.kernel_initializer, crate::init::Init::HeNormal);
    let LayerKind::AvgPool2d(p) = &m.layers[1].kind else { panic!() };
    assert_eq!((p.pool_size, p.strides()), ([2, 1], [1, 1]));
    let LayerKind::Activation(a) = &m.layers[2].kind else { panic!() };
    assert_eq!(a.activation, Activation::Elu { alpha: 0.5 });
    let leaky = parse(
        r#"{"input": {"shape": [2]}, "layers": [{"type": "activation", "activation": "leaky_relu"}]}"#,
    )
    .unwrap();
    let LayerKind::Activation(a) = &leaky.layers[0].kind else { panic!() };
    assert_eq!(a.activation, Activation::LeakyRelu { alpha: 0.2 });
}

#[test]
fn model_errors_are_located() {
    let text = "{\n  \"input\": {\"shape\": [4]},\n  \"layers\": [\n    {\"type\": \"dense\", \"unitz\": 3}\n  ]\n}";
    let e = parse(text).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Schema);
    assert_eq!(e.location, Some(Location { line: 4, column: 23 }));
    assert_eq!(
        e.to_string(),
        "t.json:4:23: layer 1 `dense_1` (dense): unknown field `unitz`; did you mean `units`?"
    );
    // Unknown keys are pointed at from their start.
    let e = parse("{\n  \"inputs\": 3\n}").unwrap_err();
    assert_eq!(e.to_string(), "t.json:2:3: unknown field `inputs`; did you mean `input`?");
    // Nested values are named by their path, and pointed at from their start.
    let text = "{\"input\": {\"shape\": [4]}, \"layers\": [{\"type\": \"dense\", \"units\": 2}],\n \"training\": {\"optimizer\": {\"type\": \"sgd\", \"lr\": -1}}}";
    let e = parse(text).unwrap_err().to_string();
    assert!(e.starts_with("t.json:2:50: `training.optimizer.lr`: must be > 0, got -1"), "{e}");
}

#[test]
fn model_error_messages() {
    let base =
        |layers: &str| format!(r#"{{"input": {{"shape": [28, 28, 1]}}, "layers": [{layers}]}}"#);
    let cases = [
        (base(r#"{"type": "conv2", "filters": 3}"#), "unknown layer type `conv2`; did you mean `conv2d`?"),
        (base(r#"{"type": "MaxPooling2D"}"#), "did you mean `max_pool2d`?"),
        (base(r#"{"type": "dense", "units": "ten"}"#), "`units`: invalid type: string \"ten\", expected a positive integer"),
        (base(r#"{"type": "flatten"}, {"type": "dense", "units": 0}"#), "layer 2 `dense_1` (dense)"),
        (base(r#"{"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": "smae"}"#), "did you mean `same`?"),
        (base(r#"{"type": "activation", "activation": "rleu"}"#), "`activation`: unknown value `rleu`; did you mean `relu`?"),
        (base(r#"{"type": "dense", "units": 3}"#), "dense expects a flat input [N, features], but `input` gives (None, 28, 28, 1); add a flatten layer before it"),
        (base(r#"{"type": "flatten", "input": ["input"]}"#), "did you mean `inputs`?"),
        (base(r#"{"type": "flatten", "name": "a"}, {"type": "flatten", "name": "a"}"#), "duplicate layer name `a`"),
        (base(r#"{"type": "flatten", "name": "stem"}, {"type": "flatten", "inputs": ["stme"]}"#), "unknown input `stme`; did you mean `stem`?"),
        (base(r#"{"type": "flatten", "inputs": ["b"]}, {"type": "flatten", "name": "b"}"#), "`b` is layer 2, which comes later"),
        (base(r#"{"type": "add", "inputs": ["input"]}"#), "add reads two or more inputs, got 1"),
        (base(r#"{"type": "flatten", "name": "input"}"#), "reserved"),
        (base(r#"{"type": "activation", "activation": {"type": "relu", "alpha": 1}}"#), "`alpha` applies only to leaky_relu and elu"),
        (base(r#"{"type": "dropout", "rate": 1.5}"#), "`rate`: must be in [0, 1), got 1.5"),
        (base(r#""dense""#), "a layer is an object"),
        (base(r#"{"units": 3}"#), "missing `type`"),
        (base(r#"{"type": "max_pool2d", "pool_size": 30}"#), "the pooling window 30x30 is larger than the input 28x28"),
        (base(r#"{"type": "reshape", "shape": [10]}"#), "cannot reshape"),
        (base(r#"{"type": "flatten"}, {"type": "maxout", "pieces": 5}"#), "maxout with pieces=5"),
    ];
    for (text, want) in cases {
        let e = err(&text);
        assert!(e.contains(want), "error for {text}:\n  got  {e}\n  want {want}");
        assert!(e.starts_with("t.json:"), "{e}");
    }
}

#[test]
fn model_built_in_code() {
    let mut m = Model::new(
        "code",
        [28, 28, 1],
        vec![
            Layer::new(LayerKind::Flatten),
            Layer::new(DenseLayer::new(128).activation(Activation::Relu)),
            Layer::new(DenseLayer::new(10).activation(Activation::Softmax)),
        ],
    );
    assert_eq!(m.parameter_count().unwrap(), 101_770);
    m.layers[1] = Layer::new(DenseLayer::new(0));
    let e = m.build(1, Mode::Eval).unwrap_err().to_string();
    assert_eq!(e, "<code>: layer 2 `dense_1` (dense): `units` must be in 1..=16777216, got 0");
    assert!(Model::new("empty", [3], vec![]).build(1, Mode::Eval).is_err());
    assert!(Model::new("zero", [0], vec![Layer::new(LayerKind::Flatten)])
        .build(1, Mode::Eval)
        .is_err());
    let ok = Model::new("b", [3], vec![Layer::new(LayerKind::Flatten)]);
    assert!(ok.build(0, Mode::Eval).is_err());
}

#[test]
fn model_load_names_the_path() {
    let e = Model::load(std::path::Path::new("/no/such/model.json")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(e.to_string().starts_with("/no/such/model.json: cannot read the model file"), "{e}");
}

#[test]
fn model_never_panics_on_truncated_or_mangled_files() {
    for name in EXAMPLES {
        let text = std::fs::read_to_string(example_path(name)).unwrap();
        for cut in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
            let truncated = &text[..cut];
            if truncated.trim_end() == text.trim_end() {
                continue;
            }
            let e = parse(truncated).expect_err("a truncated file fails");
            assert!(e.to_string().starts_with("t.json"), "{e}");
        }
        // Replace each byte by characters that keep it parseable more often than not.
        let bytes = text.as_bytes();
        for i in 0..bytes.len() {
            for c in [b'0', b'"', b'-', b'x', b']'] {
                let mut b = bytes.to_vec();
                b[i] = c;
                if let Ok(t) = String::from_utf8(b) {
                    if let Ok(m) = parse(&t) {
                        let _ = m.build(2, Mode::Train);
                        let _ = m.summary();
                    }
                }
            }
        }
    }
}

/// One layer of a random model: a template and small or extreme numbers.
fn random_layer(t: usize, a: usize, b: usize, act: usize, i: usize) -> String {
    const INTS: [i64; 10] = [1, 2, 3, 4, 5, 28, 0, -1, 16_777_216, 16_777_217];
    const ACTS: [&str; 4] =
        ["\"relu\"", "\"softmax\"", "{\"type\": \"elu\", \"alpha\": 0.5}", "\"linear\""];
    let (a, b, act) = (INTS[a], INTS[b], ACTS[act]);
    let prev = if i == 0 { "input".to_string() } else { format!("l{}", i - 1) };
    let body = match t {
        0 => format!(r#""type": "dense", "units": {a}, "activation": {act}"#),
        1 => {
            let pad = ["\"valid\"", "\"same\"", &format!("[{a}, {b}, 0, 1]")]
                [a.unsigned_abs() as usize % 3]
                .to_string();
            format!(
                r#""type": "conv2d", "filters": {a}, "kernel_size": {b}, "padding": {pad}, "activation": {act}"#
            )
        }
        2 => format!(r#""type": "max_pool2d", "pool_size": {a}, "strides": {b}"#),
        3 => format!(r#""type": "avg_pool2d", "pool_size": [{a}, {b}]"#),
        4 => r#""type": "flatten""#.to_string(),
        5 => format!(r#""type": "reshape", "shape": [{a}, {b}]"#),
        6 => format!(r#""type": "dropout", "rate": {}"#, (a % 12) as f64 / 10.0),
        7 => format!(r#""type": "gaussian_noise", "stddev": {}"#, (b % 12) as f64 / 10.0),
        8 => format!(r#""type": "activation", "activation": {act}"#),
        9 => format!(r#""type": "maxout", "pieces": {a}"#),
        10 => format!(r#""type": "add", "inputs": ["{prev}", "input"], "activation": {act}"#),
        _ => format!(r#""type": "concat", "inputs": ["{prev}", "input"]"#),
    };
    format!(r#"{{"name": "l{i}", {body}}}"#)
}

/// An index into the numbers of [`random_layer`]: mostly valid ones.
fn int() -> impl proptest::strategy::Strategy<Value = usize> {
    proptest::prop_oneof![9 => 0usize..6, 1 => 6usize..10]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

    #[test]
    fn model_random_models_never_panic(
        layers in proptest::collection::vec((0usize..12, int(), int(), 0usize..4), 1..6),
        shape in proptest::collection::vec(
            proptest::prop_oneof![9 => proptest::sample::select(vec![1usize, 2, 3, 5, 28]), 1 => proptest::strategy::Just(0usize)],
            1..4,
        ),
        loss in 0usize..3,
    ) {
        let layers: Vec<String> = layers
            .iter()
            .enumerate()
            .map(|(i, &(t, a, b, act))| random_layer(t, a, b, act, i))
            .collect();
        let loss = ["softmax_cross_entropy", "mse", "binary_cross_entropy"][loss];
        let text = format!(
            r#"{{"input": {{"shape": {shape:?}}}, "layers": [{}], "training": {{"loss": "{loss}"}}}}"#,
            layers.join(", ")
        );
        if let Ok(m) = parse(&text) {
            for mode in [Mode::Train, Mode::Eval] {
                if let Ok(g) = m.build(3, mode) {
                    proptest::prop_assert!(g.graph.validate().is_ok(), "{text}");
                }
            }
            let _ = m.summary();
        }
    }
}
