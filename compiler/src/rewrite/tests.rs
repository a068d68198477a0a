//! One small test per rule, semantics preserved on random data, budgets enforced, and the
//! structure the pass gives the example models.

use std::collections::HashMap;
use std::time::Duration;

use egg::rewrite;
use kiln_ir::model::{Mode, Model};
use kiln_ir::ops::*;
use kiln_ir::{EvalCtx, Graph, NodeId, Shape, Tensor};

use super::*;
use crate::autodiff::gradients;
use crate::interp::{run, Variables};
use crate::step::training_step;

/// Random-ish values in (-1, 1) for every input and parameter, away from relu kinks.
fn fill(graph: &Graph, seed: u64) -> (HashMap<NodeId, Tensor>, Variables) {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let u = ((state >> 11) as f64) / ((1u64 << 53) as f64);
        let v = 2.0 * u - 1.0;
        if v.abs() < 0.05 {
            0.3
        } else {
            v
        }
    };
    let mut feeds = HashMap::new();
    let mut vars = Variables::default();
    for id in graph.node_ids() {
        let node = graph.node(id);
        let data: Vec<f64> = (0..node.shape.numel()).map(|_| next()).collect();
        match node.op {
            Op::Input(_) => {
                let data = if node.name == "labels" {
                    data.iter().map(|v| ((v + 1.0) * 4.99).floor()).collect()
                } else {
                    data
                };
                feeds.insert(id, Tensor::new(node.shape.clone(), data));
            }
            Op::Parameter(_) => {
                vars.set(&node.name, Tensor::new(node.shape.clone(), data));
            }
            Op::State(_) => {
                // Optimizer state (RMS, moments) is non-negative where it matters.
                let data = data.iter().map(|v| v.abs()).collect();
                vars.set(&node.name, Tensor::new(node.shape.clone(), data));
            }
            _ => {}
        }
    }
    (feeds, vars)
}

/// Runs the pass and checks that every output and updated variable keeps its value.
fn check_same_values(graph: &Graph) -> Rewritten {
    let rewritten = rewrite(graph, &RewriteOptions::default()).unwrap();
    let new = &rewritten.graph;
    let (feeds, vars) = fill(graph, 7);
    let new_feeds: HashMap<NodeId, Tensor> =
        feeds.iter().map(|(k, v)| (new.find(&graph.node(*k).name).unwrap(), v.clone())).collect();
    let ctx = EvalCtx { step: 3 };
    let (mut v1, mut v2) = (vars.clone(), vars);
    let a = run(graph, &feeds, &mut v1, &ctx).unwrap();
    let b = run(new, &new_feeds, &mut v2, &ctx).unwrap();
    let close = |what: &str, x: &Tensor, y: &Tensor| {
        assert_eq!(x.shape, y.shape, "{what}");
        for (p, q) in x.data.iter().zip(&y.data) {
            let same = (p.is_nan() && q.is_nan()) || (p - q).abs() <= 1e-9 * (1.0 + p.abs());
            assert!(same, "{what}: {p} vs {q}");
        }
    };
    for (name, old) in graph.outputs() {
        let new_id = new.find(&new.node(rewritten.renamed[&old]).name).unwrap();
        close(&format!("output {name}"), &a[&old], &b[&new_id]);
    }
    for name in v1.names() {
        close(&format!("variable {name}"), v1.get(name).unwrap(), v2.get(name).unwrap());
    }
    rewritten
}

fn ops_of(g: &Graph) -> Vec<&'static str> {
    let mut ops: Vec<&'static str> = g
        .topo_order()
        .unwrap()
        .into_iter()
        .map(|n| g.node(n).op.name())
        .filter(|&n| !matches!(n, "input" | "parameter" | "output" | "constant" | "state"))
        .collect();
    ops.dedup();
    ops
}

fn input(g: &mut Graph, dims: &[usize], name: &str) -> NodeId {
    g.leaf(Input {}, Shape::new(dims.to_vec()), name).unwrap()
}

fn param(g: &mut Graph, dims: &[usize], name: &str) -> NodeId {
    g.leaf(Parameter { init: Init::GlorotUniform, seed: 1 }, Shape::new(dims.to_vec()), name)
        .unwrap()
}

fn constant(g: &mut Graph, value: f64, dims: &[usize], name: &str) -> NodeId {
    g.leaf(Constant { value }, Shape::new(dims.to_vec()), name).unwrap()
}

fn output(g: &mut Graph, x: NodeId, name: &str) {
    g.add(Output { name: name.into() }, &[x], &format!("output.{name}")).unwrap();
}

#[test]
fn rule_relu_relu() {
    let mut g = Graph::new();
    let x = input(&mut g, &[2, 3], "x");
    let r = g.add(Relu {}, &[x], "r1").unwrap();
    let r = g.add(Relu {}, &[r], "r2").unwrap();
    output(&mut g, r, "y");
    assert_eq!(ops_of(&check_same_values(&g).graph), ["relu"]);
}

#[test]
fn rules_mul_one_and_add_zero() {
    let mut g = Graph::new();
    let x = input(&mut g, &[2, 3], "x");
    let one = constant(&mut g, 1.0, &[], "one");
    let zero = constant(&mut g, 0.0, &[2, 3], "zero");
    let y = g.add(Mul {}, &[one, x], "y").unwrap();
    let y = g.add(Add {}, &[y, zero], "z").unwrap();
    let y = g.add(Exp {}, &[y], "e").unwrap();
    output(&mut g, y, "y");
    assert_eq!(ops_of(&check_same_values(&g).graph), ["exp"]);
    // A constant that broadcasts the other way is not a unit: x [] * ones [2, 3] keeps its shape.
    let mut g = Graph::new();
    let x = input(&mut g, &[], "x");
    let ones = constant(&mut g, 1.0, &[2, 3], "ones");
    let y = g.add(Mul {}, &[x, ones], "y").unwrap();
    output(&mut g, y, "y");
    assert_eq!(ops_of(&check_same_values(&g).graph), ["mul"]);
}

#[test]
fn rules_dropout_zero_identity_reshape_and_transposes() {
    let mut g = Graph::new();
    let x = input(&mut g, &[2, 3], "x");
    let y = g.add(Dropout { rate: 0.0, seed: 3 }, &[x], "drop0").unwrap();
    let y = g.add(Reshape { shape: vec![2, 3] }, &[y], "same").unwrap();
    let y = g.add(Transpose { perm: vec![1, 0] }, &[y], "t1").unwrap();
    let y = g.add(Transpose { perm: vec![1, 0] }, &[y], "t2").unwrap();
    let y = g.add(Exp {}, &[y], "e").unwrap();
    output(&mut g, y, "y");
    assert_eq!(ops_of(&check_same_values(&g).graph), ["exp"]);
    // A real dropout, a real reshape and one transpose stay.
    let mut g = Graph::new();
    let x = input(&mut g, &[2, 3], "x");
    let y = g.add(Dropout { rate: 0.5, seed: 3 }, &[x], "drop").unwrap();
    let y = g.add(Reshape { shape: vec![3, 2] }, &[y], "r").unwrap();
    let y = g.add(Transpose { perm: vec![1, 0] }, &[y], "t").unwrap();
    output(&mut g, y, "y");
    assert_eq!(ops_of(&check_same_values(&g).graph), ["dropout", "reshape", "transpose"]);
}

#[test]
fn rule_bias_bias_constants() {
    let mut g = Graph::new();
    let x = input(&mut g, &[2, 3], "x");
    let b1 = constant(&mut g, 0.5, &[3], "b1");
    let b2 = constant(&mut g, 0.25, &[3], "b2");
    let y = g.add(BiasAdd {}, &[x, b1], "y1").unwrap();
    let y = g.add(BiasAdd {}, &[y, b2], "y2").unwrap();
    output(&mut g, y, "y");
    let r = check_same_values(&g);
    assert_eq!(ops_of(&r.graph), ["bias_add"]);
    let constants = r.graph.nodes_where(|op| matches!(op, Op::Constant(c) if c.value == 0.75));
    assert_eq!(constants.len(), 1);
}

#[test]
fn rules_matmul_bias_relu() {
    let mut g = Graph::new();
    let x = input(&mut g, &[4, 3], "x");
    let w = param(&mut g, &[3, 5], "w");
    let b = param(&mut g, &[5], "b");
    let y = g.add(MatMul::default(), &[x, w], "dense").unwrap();
    let y = g.add(BiasAdd {}, &[y, b], "dense.bias_add").unwrap();
    let y = g.add(Relu {}, &[y], "dense.relu").unwrap();
    output(&mut g, y, "y");
    let r = check_same_values(&g);
    assert_eq!(ops_of(&r.graph), ["matmul_bias_act"]);
    let f = &r.report.fused[0];
    assert_eq!((f.name.as_str(), f.op), ("dense.relu", "matmul_bias_act"));
    assert_eq!(f.covers, ["dense", "dense.bias_add", "dense.relu"]);
    // A transposed product has no such epilogue.
    let mut g = Graph::new();
    let x = input(&mut g, &[3, 4], "x");
    let w = param(&mut g, &[3, 5], "w");
    let b = param(&mut g, &[5], "b");
    let y = g.add(MatMul { transpose_a: true, transpose_b: false }, &[x, w], "m").unwrap();
    let y = g.add(BiasAdd {}, &[y, b], "m.bias_add").unwrap();
    output(&mut g, y, "y");
    assert_eq!(ops_of(&check_same_values(&g).graph), ["matmul", "bias_add"]);
}

/// conv + bias + relu + max pool, with the activation also an output when `keep_activation`.
fn conv_block(keep_activation: bool) -> Graph {
    let mut g = Graph::new();
    let x = input(&mut g, &[2, 6, 6, 3], "x");
    let w = param(&mut g, &[3, 3, 3, 4], "w");
    let b = param(&mut g, &[4], "b");
    let conv = Conv2d { stride: [1, 1], pad: Padding::Mode(PadMode::Same) };
    let y = g.add(conv, &[x, w], "conv").unwrap();
    let y = g.add(BiasAdd {}, &[y, b], "conv.bias_add").unwrap();
    let a = g.add(Relu {}, &[y], "conv.relu").unwrap();
    let p = g.add(MaxPool2d { size: [2, 2], stride: [2, 2] }, &[a], "pool").unwrap();
    output(&mut g, p, "p");
    if keep_activation {
        output(&mut g, a, "a");
    }
    g
}

#[test]
fn rules_conv_bias_relu_pool() {
    let r = check_same_values(&conv_block(false));
    assert_eq!(ops_of(&r.graph), ["conv2d_bias_act_max_pool2d"]);
    assert_eq!(r.report.fused[0].covers, ["conv", "conv.bias_add", "conv.relu", "pool"]);
}

#[test]
fn cost_model_keeps_the_pool_separate_when_the_activation_is_needed() {
    // The fused conv+pool would recompute the activation that another user needs: the DAG
    // cost prefers one fused conv and a plain pool.
    let r = check_same_values(&conv_block(true));
    assert_eq!(ops_of(&r.graph), ["conv2d_bias_act", "max_pool2d"]);
    assert!(r.report.cost.1 < r.report.cost.0);
}

/// The training-step-like graph of a conv block with a loss, differentiated.
fn conv_block_backward() -> Graph {
    let mut g = conv_block(false);
    let p = g.find("pool").unwrap();
    let w = g.find("w").unwrap();
    let b = g.find("b").unwrap();
    let loss = g.add(ReduceSum { axes: vec![0, 1, 2, 3] }, &[p], "loss").unwrap();
    let grads = gradients(&mut g, loss, &[w, b]).unwrap();
    output(&mut g, grads[0], "dw");
    output(&mut g, grads[1], "db");
    g
}

#[test]
fn rules_relu_grad_pool_grad_relu_grad_and_bias_grad() {
    let r = check_same_values(&conv_block_backward());
    let ops = ops_of(&r.graph);
    let count = |op| r.report.count(&r.graph, op);
    // The pool, ReLU and bias gradients: one op, its two results read back as parts.
    assert_eq!(count("max_pool2d_grad_relu_bias"), 1, "{ops:?}");
    assert_eq!(count("part"), 2, "{ops:?}");
    assert_eq!(count("reduce_sum"), 0, "{ops:?}"); // the bias gradient's is fused
    assert!(!ops.contains(&"step") && !ops.contains(&"bias_add"), "{ops:?}");
    assert!(!ops.contains(&"max_pool2d_grad_relu"), "{ops:?}");
    assert_eq!(count("conv2d_bias_act"), 1, "{ops:?}");
    let fused = r.report.fused.iter().find(|f| f.op == "max_pool2d_grad_relu_bias").unwrap();
    assert_eq!(fused.covers, ["d.b", "d.conv.bias_add", "d.conv.relu", "d.conv.relu.step"]);
}

#[test]
fn rule_pool_grad_relu_bias_grad_needs_a_bias_gradient() {
    // A sum over the channels too is not a bias gradient: the pool+relu gradient stays.
    let mut g = conv_block_backward();
    let bias_grad = g.nodes_where(|op| matches!(op, Op::ReduceSum(r) if r.axes == [0, 1, 2]));
    let dz = g.operands(bias_grad[0])[0];
    let all = g.add(ReduceSum { axes: vec![0, 1, 2, 3] }, &[dz], "all").unwrap();
    output(&mut g, all, "all");
    let r = check_same_values(&g);
    assert_eq!(r.report.count(&r.graph, "max_pool2d_grad_relu_bias"), 1);
    assert_eq!(r.report.count(&r.graph, "reduce_sum"), 1, "{:?}", ops_of(&r.graph));
}

#[test]
fn rule_softmax_cross_entropy_grad() {
    let mut g = Graph::new();
    let x = param(&mut g, &[4, 5], "x");
    let l = input(&mut g, &[4], "labels");
    let w = input(&mut g, &[4], "weights");
    let loss = g.add(SoftmaxCrossEntropy {}, &[x, l, w], "loss").unwrap();
    let dx = gradients(&mut g, loss, &[x]).unwrap()[0];
    output(&mut g, dx, "dx");
    let r = check_same_values(&g);
    assert_eq!(ops_of(&r.graph), ["softmax_cross_entropy_grad"]);
}

#[test]
fn explanations_name_the_rules() {
    let options = RewriteOptions { explain: true, ..Default::default() };
    let r = rewrite(&conv_block(false), &options).unwrap();
    assert_eq!(r.report.fused[0].rules, ["conv-bias", "conv-bias-relu", "conv-bias-relu-pool"]);
    assert!(r.report.text().contains("by conv-bias -> conv-bias-relu -> conv-bias-relu-pool"));
}

#[test]
fn an_explosive_rule_set_stops_within_its_budget() {
    // Commutativity and associativity over a chain of 12 adds blow up exponentially.
    let mut g = Graph::new();
    let mut y = input(&mut g, &[2], "x0");
    for i in 1..12 {
        let x = input(&mut g, &[2], &format!("x{i}"));
        y = g.add(Add {}, &[y, x], &format!("s{i}")).unwrap();
    }
    output(&mut g, y, "y");
    let explosive: Vec<Rule> = vec![
        rewrite!("commute"; "(add ?a ?b)" => "(add ?b ?a)"),
        rewrite!("assoc"; "(add (add ?a ?b) ?c)" => "(add ?a (add ?b ?c))"),
    ];
    let budget = Budget { iterations: 100, nodes: 2_000, time: Duration::from_secs(5) };
    let options = RewriteOptions { budget, explain: false };
    let start = std::time::Instant::now();
    let r = rewrite_with(&g, &[("explosive", explosive)], &options).unwrap();
    let stage = &r.report.stages[0];
    assert!(stage.stop_reason.starts_with("NodeLimit"), "{stage:?}");
    // egg checks the limit between iterations: at most one iteration's growth past it.
    assert!(stage.iterations < 10 && stage.nodes < 5 * 2_000, "{stage:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // The result still computes the same sum.
    assert_eq!(r.graph.nodes_where(|op| matches!(op, Op::Add(_))).len(), 11);
}

fn example(name: &str) -> Model {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/models")
        .join(format!("{name}.json"));
    Model::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn keras_cnn_training_step_fuses_every_layer() {
    let step = training_step(&example("keras_cnn"), 4).unwrap();
    let r = check_same_values(&step.graph);
    let count = |op| r.report.count(&r.graph, op);
    assert_eq!(count("conv2d_bias_act"), 3);
    assert_eq!(count("matmul_bias_act"), 2);
    assert_eq!(count("max_pool2d_grad_relu_bias"), 2); // with conv2d_1's and conv2d_2's bias
    assert_eq!(count("part"), 4);
    assert_eq!(count("reduce_sum"), 3); // the other bias gradients
    assert_eq!(count("max_pool2d_grad_relu"), 0);
    assert_eq!(count("relu_grad"), 2); // conv2d_3 (no pool after it) and dense_1
    assert_eq!(count("softmax_cross_entropy_grad"), 1);
    assert_eq!(count("max_pool2d"), 2); // kept: the backward pass reads the activations
    for op in ["relu", "step", "bias_add", "softmax", "one_hot"] {
        assert_eq!(count(op), 0, "{op} left in {:?}", ops_of(&r.graph));
    }
}

#[test]
fn keras_cnn_evaluation_fuses_conv_relu_pool() {
    let lg = example("keras_cnn").build(4, Mode::Eval).unwrap();
    let r = check_same_values(&lg.graph);
    assert_eq!(r.report.count(&r.graph, "conv2d_bias_act_max_pool2d"), 2);
    assert_eq!(r.report.count(&r.graph, "conv2d_bias_act"), 1);
}

#[test]
fn every_example_model_keeps_its_values() {
    for name in
        ["mlp", "lenet5", "autoencoder", "denoising_autoencoder", "maxout_mlp", "resnet_block"]
    {
        let step = training_step(&example(name), 3).unwrap();
        let r = check_same_values(&step.graph);
        assert!(r.report.nodes.1 <= r.report.nodes.0, "{name}: {:?}", r.report.nodes);
    }
}
