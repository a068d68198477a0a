//! Optimizer updates against hand-computed formulas, and interpreter training on a tiny problem.

mod common;

use std::collections::HashMap;

use common::Lcg;
use kiln_compiler::autodiff::gradients;
use kiln_compiler::interp::{run, Variables};
use kiln_compiler::optimizer::append_updates;
use kiln_compiler::step::training_step;
use kiln_ir::model::{Model, Optimizer};
use kiln_ir::ops::{Init, Input, Mul, Parameter, ReduceSum};
use kiln_ir::{EvalCtx, Graph, NodeId, Shape, Tensor};

/// Runs `steps` updates of `w` (3 elements) under `loss = sum(w * c)` whose gradient is the
/// fed constant `c`, so each step's gradient is known exactly. Returns w after each step.
fn trajectory(optimizer: &Optimizer, weight_decay: f64, c: &[f64], steps: usize) -> Vec<Vec<f64>> {
    let mut g = Graph::new();
    let w = g.leaf(Parameter { init: Init::Zeros, seed: 0 }, Shape::new([3]), "w").unwrap();
    let x = g.leaf(Input {}, Shape::new([3]), "c").unwrap();
    let prod = g.add(Mul {}, &[w, x], "prod").unwrap();
    let loss = g.add(ReduceSum { axes: vec![0] }, &[prod], "loss").unwrap();
    let grads = gradients(&mut g, loss, &[w]).unwrap();
    append_updates(&mut g, &[w], &grads, optimizer, weight_decay).unwrap();
    g.validate().unwrap();
    let mut vars = Variables::default();
    vars.init_from(&g);
    vars.set("w", Tensor::new([3], vec![1.0, -2.0, 0.5]));
    let feeds: HashMap<NodeId, Tensor> = HashMap::from([(x, Tensor::new([3], c.to_vec()))]);
    (0..steps)
        .map(|s| {
            run(&g, &feeds, &mut vars, &EvalCtx { step: s as u64 }).unwrap();
            vars.get("w").unwrap().data.clone()
        })
        .collect()
}

fn assert_close(got: &[Vec<f64>], want: &[Vec<f64>], what: &str) {
    for (s, (g, w)) in got.iter().zip(want).enumerate() {
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() < 1e-12, "{what}, step {}: got {g:?}, want {w:?}", s + 1);
        }
    }
}

/// Hand-written reference of each optimizer, step by step, on the same problem.
fn reference(optimizer: &Optimizer, wd: f64, c: &[f64], steps: usize) -> Vec<Vec<f64>> {
    let mut w = vec![1.0, -2.0, 0.5];
    let (mut s1, mut s2) = (vec![0.0; 3], vec![0.0; 3]);
    let mut out = Vec::new();
    for t in 1..=steps {
        for i in 0..3 {
            let g = c[i] + wd * w[i];
            w[i] -= match *optimizer {
                Optimizer::Sgd { lr, momentum, nesterov } => {
                    s1[i] = momentum * s1[i] + g;
                    lr * if nesterov {
                        g + momentum * s1[i]
                    } else if momentum > 0.0 {
                        s1[i]
                    } else {
                        g
                    }
                }
                Optimizer::Rmsprop { lr, rho, eps } => {
                    s1[i] = rho * s1[i] + (1.0 - rho) * g * g;
                    lr * g / (s1[i].sqrt() + eps)
                }
                Optimizer::Adam { lr, beta1, beta2, eps } => {
                    s1[i] = beta1 * s1[i] + (1.0 - beta1) * g;
                    s2[i] = beta2 * s2[i] + (1.0 - beta2) * g * g;
                    let m_hat = s1[i] / (1.0 - beta1.powi(t as i32));
                    let v_hat = s2[i] / (1.0 - beta2.powi(t as i32));
                    lr * m_hat / (v_hat.sqrt() + eps)
                }
            };
        }
        out.push(w.clone());
    }
    out
}

#[test]
fn updates_match_the_textbook_formulas() {
    let c = [0.3, -1.2, 2.0];
    let optimizers = [
        ("sgd", Optimizer::Sgd { lr: 0.1, momentum: 0.0, nesterov: false }),
        ("momentum", Optimizer::Sgd { lr: 0.1, momentum: 0.9, nesterov: false }),
        ("nesterov", Optimizer::Sgd { lr: 0.05, momentum: 0.8, nesterov: true }),
        ("rmsprop", Optimizer::Rmsprop { lr: 0.01, rho: 0.9, eps: 1e-7 }),
        ("adam", Optimizer::Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-7 }),
    ];
    for (name, opt) in &optimizers {
        for wd in [0.0, 0.01] {
            let got = trajectory(opt, wd, &c, 4);
            assert_close(&got, &reference(opt, wd, &c, 4), &format!("{name} wd={wd}"));
        }
    }
}

#[test]
fn interpreter_training_lowers_the_loss_on_a_tiny_problem() {
    // Three Gaussian blobs in 4-D; a small MLP must separate them.
    let json = |opt: &str| {
        format!(
            r#"{{"name": "tiny", "input": {{"shape": [4]}},
                 "layers": [{{"type": "dense", "units": 8, "activation": "tanh"}},
                            {{"type": "dense", "units": 3, "activation": "softmax"}}],
                 "training": {{"loss": "softmax_cross_entropy", "optimizer": {opt}, "batch_size": 16, "seed": 3}}}}"#
        )
    };
    let mut rng = Lcg(5);
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..16 {
        let class = i % 3;
        for d in 0..4 {
            let centre = if d == class { 2.0 } else { 0.0 };
            x.push(centre + rng.uniform() - 0.5);
        }
        y.push(class as f64);
    }
    for opt in [
        r#"{"type": "sgd", "lr": 0.5}"#,
        r#"{"type": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": true}"#,
        r#"{"type": "rmsprop", "lr": 0.01}"#,
        r#"{"type": "adam", "lr": 0.02}"#,
    ] {
        let model = Model::from_json(&json(opt), "tiny.json").unwrap();
        let step = training_step(&model, 16).unwrap();
        let mut vars = Variables::default();
        vars.init_from(&step.graph);
        let feeds = HashMap::from([
            (step.input, Tensor::new([16, 4], x.clone())),
            (step.labels.unwrap(), Tensor::new([16], y.clone())),
            (step.weights, Tensor::new([16], vec![1.0 / 16.0; 16])),
        ]);
        let losses: Vec<f64> = (0..60)
            .map(|s| {
                run(&step.graph, &feeds, &mut vars, &EvalCtx { step: s }).unwrap()[&step.loss].data
                    [0]
            })
            .collect();
        assert!(losses[59] < 0.2 * losses[0], "{opt}: loss went {} -> {}", losses[0], losses[59]);
    }
}
