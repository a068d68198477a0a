//! Finite-difference checks of whole example models: the gradient of the loss graph with respect
//! to sampled elements of every parameter, at batch 2, in f64.

mod common;

use std::collections::HashMap;

use common::Lcg;
use kiln_compiler::autodiff::gradients;
use kiln_compiler::interp::{run, Variables};
use kiln_ir::model::Mode;
use kiln_ir::{EvalCtx, NodeId, Op, Tensor};

#[test]
fn whole_models_match_finite_differences() {
    for (name, model) in common::example_models() {
        let mut lg = model.build(2, Mode::Train).unwrap();
        let params = lg.graph.nodes_where(|op| matches!(op, Op::Parameter(_)));
        let grads = gradients(&mut lg.graph, lg.loss, &params).unwrap();
        let mut vars = Variables::default();
        vars.init_from(&lg.graph);
        let mut rng = Lcg(11);
        // Biases start at zero; give them values so relu kinks are not all at the same point.
        for &p in &params {
            let node = lg.graph.node(p);
            if node.name.ends_with(".bias") {
                let data = (0..node.shape.numel()).map(|_| 0.1 * (rng.uniform() - 0.5)).collect();
                vars.set(&node.name, Tensor::new(node.shape.clone(), data));
            }
        }
        let mut feeds: HashMap<NodeId, Tensor> = HashMap::new();
        let x_shape = lg.graph.node(lg.input).shape.clone();
        feeds.insert(
            lg.input,
            Tensor::new(x_shape.clone(), (0..x_shape.numel()).map(|_| rng.uniform()).collect()),
        );
        if let Some(l) = lg.labels {
            feeds.insert(l, Tensor::new([2], vec![3.0, 7.0]));
        }
        feeds.insert(lg.weights, Tensor::new([2], vec![0.5, 0.5]));
        let ctx = EvalCtx { step: 1 };
        let values = run(&lg.graph, &feeds, &mut vars.clone(), &ctx).unwrap();
        let loss_with = |vars: &Variables| {
            run(&lg.graph, &feeds, &mut vars.clone(), &ctx).unwrap()[&lg.loss].data[0]
        };
        let h = 1e-6;
        for (&p, g) in params.iter().zip(&grads) {
            let pname = lg.graph.node(p).name.clone();
            let base = vars.get(&pname).unwrap().clone();
            let n = base.data.len();
            for k in 0..3 {
                let i = (k * 7919 + 13) % n;
                let mut v = vars.clone();
                let mut t = base.clone();
                t.data[i] += h;
                v.set(&pname, t.clone());
                let lp = loss_with(&v);
                t.data[i] -= 2.0 * h;
                v.set(&pname, t);
                let lm = loss_with(&v);
                let fd = (lp - lm) / (2.0 * h);
                let an = values[g].data[i];
                let tol = 1e-6 + 1e-4 * fd.abs().max(an.abs());
                assert!(
                    (fd - an).abs() <= tol,
                    "{name}: d loss / d {pname}[{i}]: finite difference {fd}, autodiff {an}"
                );
            }
        }
    }
}
