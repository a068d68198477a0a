//! Finite-difference checks (central differences in f64) of every differentiable op's VJP.
//!
//! Each case builds `loss = sum(op(operands) * r)` with a random weighting `r`, differentiates it
//! with the real autodiff, runs it with the reference interpreter and compares each parameter's
//! gradient with `(loss(p + h) - loss(p - h)) / 2h`.

use std::collections::HashMap;

use kiln_compiler::autodiff::gradients;
use kiln_compiler::interp::{run, Variables};
use kiln_ir::ops::*;
use kiln_ir::{EvalCtx, Graph, NodeId, Op, Shape, Tensor};

/// How the values of an operand are drawn (keeping away from kinks and poles).
#[derive(Clone, Copy)]
enum Gen {
    /// Uniform in (-1, 1).
    Any,
    /// Uniform in (0.5, 2).
    Positive,
    /// Uniform in (0.05, 0.95).
    Prob,
    /// Magnitude in (0.1, 1), random sign: no value near 0 (relu, step, leaky relu, elu).
    AwayFromZero,
    /// A random permutation of well-separated values (max pool, maxout: the max is unique).
    Distinct,
}

/// An operand: a parameter that is differentiated, or a fixed input that is not.
enum Arg {
    Param(Vec<usize>, Gen),
    Fixed(Tensor),
}

struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }

    fn values(&mut self, n: usize, gen: Gen) -> Vec<f64> {
        match gen {
            Gen::Distinct => {
                let mut v: Vec<f64> = (0..n).map(|i| i as f64 * 0.1 - n as f64 * 0.05).collect();
                for i in (1..n).rev() {
                    let j = (self.uniform() * (i + 1) as f64) as usize;
                    v.swap(i, j);
                }
                v
            }
            _ => (0..n)
                .map(|_| {
                    let u = self.uniform();
                    match gen {
                        Gen::Any => 2.0 * u - 1.0,
                        Gen::Positive => 0.5 + 1.5 * u,
                        Gen::Prob => 0.05 + 0.9 * u,
                        Gen::AwayFromZero => {
                            let m = 0.1 + 0.9 * u;
                            if self.uniform() < 0.5 {
                                -m
                            } else {
                                m
                            }
                        }
                        Gen::Distinct => unreachable!(),
                    }
                })
                .collect(),
        }
    }
}

/// Checks the gradient of every parameter operand of `op`.
fn check(label: &str, op: impl Into<Op>, args: Vec<Arg>) {
    let op = op.into();
    let mut rng = Lcg(label.bytes().fold(17, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)));
    let mut g = Graph::new();
    let mut vars = Variables::default();
    let mut feeds: HashMap<NodeId, Tensor> = HashMap::new();
    let mut params = Vec::new();
    let mut operands = Vec::new();
    for (i, arg) in args.into_iter().enumerate() {
        let id = match arg {
            Arg::Param(dims, gen) => {
                let shape = Shape::new(dims);
                let name = format!("p{i}");
                let id =
                    g.leaf(Parameter { init: Init::Zeros, seed: 0 }, shape.clone(), &name).unwrap();
                vars.set(&name, Tensor::new(shape.clone(), rng.values(shape.numel(), gen)));
                params.push(id);
                id
            }
            Arg::Fixed(t) => {
                let id = g.leaf(Input {}, t.shape.clone(), &format!("x{i}")).unwrap();
                feeds.insert(id, t);
                id
            }
        };
        operands.push(id);
    }
    let y = g.add(op, &operands, "y").unwrap_or_else(|e| panic!("{label}: {e}"));
    let y_shape = g.node(y).shape.clone();
    let r = g.leaf(Input {}, y_shape.clone(), "r").unwrap();
    feeds.insert(r, Tensor::new(y_shape.clone(), rng.values(y_shape.numel(), Gen::Any)));
    let weighted = g.add(Mul {}, &[y, r], "weighted").unwrap();
    let loss = if y_shape.rank() == 0 {
        weighted
    } else {
        g.add(ReduceSum { axes: (0..y_shape.rank()).collect() }, &[weighted], "loss").unwrap()
    };
    let grads = gradients(&mut g, loss, &params).unwrap_or_else(|e| panic!("{label}: {e}"));
    g.validate().unwrap_or_else(|e| panic!("{label}: {e}"));

    let ctx = EvalCtx { step: 3 };
    let values = run(&g, &feeds, &mut vars, &ctx).unwrap();
    let loss_at = |vars: &Variables| -> f64 {
        let mut vars = vars.clone();
        run(&g, &feeds, &mut vars, &ctx).unwrap()[&loss].data[0]
    };
    let h = 1e-6;
    for (p, grad) in params.iter().zip(&grads) {
        let name = g.node(*p).name.clone();
        let analytic = &values[grad];
        let base = vars.get(&name).unwrap().clone();
        assert_eq!(analytic.shape, base.shape, "{label}: gradient shape of {name}");
        let n = base.data.len();
        let sample: Vec<usize> =
            if n <= 24 { (0..n).collect() } else { (0..24).map(|k| (k * 7919) % n).collect() };
        for i in sample {
            let mut plus = base.clone();
            plus.data[i] += h;
            let mut minus = base.clone();
            minus.data[i] -= h;
            let mut v = vars.clone();
            v.set(&name, plus);
            let lp = loss_at(&v);
            v.set(&name, minus);
            let lm = loss_at(&v);
            let fd = (lp - lm) / (2.0 * h);
            let an = analytic.data[i];
            let tol = 1e-6 + 1e-5 * fd.abs().max(an.abs());
            assert!(
                (fd - an).abs() <= tol,
                "{label}: d/d{name}[{i}]: finite difference {fd}, autodiff {an}"
            );
        }
    }
}

use Arg::{Fixed, Param};
use Gen::*;

#[test]
fn unary_ops() {
    let s = || vec![2, 3, 5];
    check("neg", Neg {}, vec![Param(s(), Any)]);
    check("exp", Exp {}, vec![Param(s(), Any)]);
    check("log", Log {}, vec![Param(s(), Positive)]);
    check("sqrt", Sqrt {}, vec![Param(s(), Positive)]);
    check("relu", Relu {}, vec![Param(s(), AwayFromZero)]);
    check("leaky_relu", LeakyRelu { alpha: 0.1 }, vec![Param(s(), AwayFromZero)]);
    check("elu", Elu { alpha: 0.7 }, vec![Param(s(), AwayFromZero)]);
    check("sigmoid", Sigmoid {}, vec![Param(s(), Any)]);
    check("tanh", Tanh {}, vec![Param(s(), Any)]);
    check("softmax", Softmax {}, vec![Param(vec![3, 7], Any)]);
    check("maxout", Maxout { pieces: 3 }, vec![Param(vec![2, 9], Distinct)]);
}

#[test]
fn binary_ops_with_and_without_scalar_broadcast() {
    for (name, op) in [
        ("add", Op::from(Add {})),
        ("sub", Sub {}.into()),
        ("mul", Mul {}.into()),
        ("div", Div {}.into()),
    ] {
        let gen_b = if name == "div" { Positive } else { Any };
        check(name, op.clone(), vec![Param(vec![3, 4], Any), Param(vec![3, 4], gen_b)]);
        check(
            &format!("{name}_scalar_b"),
            op.clone(),
            vec![Param(vec![3, 4], Any), Param(vec![], gen_b)],
        );
        check(
            &format!("{name}_scalar_a"),
            op.clone(),
            vec![Param(vec![], Positive), Param(vec![2, 5], gen_b)],
        );
    }
}

#[test]
fn reductions_and_data_movement() {
    check("reduce_sum", ReduceSum { axes: vec![0, 2] }, vec![Param(vec![2, 3, 4], Any)]);
    check(
        "broadcast",
        Broadcast { shape: vec![2, 3, 4], axes: vec![1] },
        vec![Param(vec![2, 4], Any)],
    );
    check("reshape", Reshape { shape: vec![6, 4] }, vec![Param(vec![2, 3, 4], Any)]);
    check("transpose", Transpose { perm: vec![2, 0, 1] }, vec![Param(vec![2, 3, 4], Any)]);
    check(
        "concat",
        Concat { axis: 3 },
        vec![Param(vec![1, 2, 2, 3], Any), Param(vec![1, 2, 2, 1], Any)],
    );
    check("bias_add", BiasAdd {}, vec![Param(vec![2, 3, 5], Any), Param(vec![5], Any)]);
}

#[test]
fn matmul_all_transposes() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = if ta { vec![4, 3] } else { vec![3, 4] };
        let b = if tb { vec![5, 4] } else { vec![4, 5] };
        check(
            &format!("matmul_{ta}_{tb}"),
            MatMul { transpose_a: ta, transpose_b: tb },
            vec![Param(a, Any), Param(b, Any)],
        );
    }
}

#[test]
fn conv2d_strides_paddings_and_odd_sizes() {
    let valid = Padding::Mode(PadMode::Valid);
    let same = Padding::Mode(PadMode::Same);
    let cases = [
        ("3x3_valid", [1, 1], valid, vec![2, 5, 6, 3], vec![3, 3, 3, 5]),
        ("3x3_same_stride2_odd", [2, 2], same, vec![1, 7, 7, 2], vec![3, 3, 2, 3]),
        ("5x5_same", [1, 1], same, vec![1, 6, 5, 1], vec![5, 5, 1, 2]),
        ("1x1", [1, 1], valid, vec![2, 3, 3, 5], vec![1, 1, 5, 3]),
        (
            "explicit_pad_stride_2x1",
            [2, 1],
            Padding::Explicit([1, 0, 2, 1]),
            vec![1, 5, 4, 2],
            vec![2, 3, 2, 2],
        ),
    ];
    for (name, stride, pad, x, w) in cases {
        check(
            &format!("conv2d_{name}"),
            Conv2d { stride, pad },
            vec![Param(x, Any), Param(w, Any)],
        );
    }
}

#[test]
fn pooling() {
    check(
        "max_pool_2x2",
        MaxPool2d { size: [2, 2], stride: [2, 2] },
        vec![Param(vec![2, 4, 4, 3], Distinct)],
    );
    check(
        "max_pool_overlapping_odd",
        MaxPool2d { size: [3, 3], stride: [2, 2] },
        vec![Param(vec![1, 7, 5, 2], Distinct)],
    );
    check(
        "avg_pool_2x2_odd_input",
        AvgPool2d { size: [2, 2], stride: [2, 2] },
        vec![Param(vec![2, 5, 5, 3], Any)],
    );
    check(
        "avg_pool_overlapping",
        AvgPool2d { size: [3, 2], stride: [2, 1] },
        vec![Param(vec![1, 7, 4, 2], Any)],
    );
}

#[test]
fn random_ops_with_a_fixed_step() {
    check("dropout", Dropout { rate: 0.3, seed: 5 }, vec![Param(vec![4, 6], Any)]);
    check("gaussian_noise", GaussianNoise { stddev: 0.5, seed: 9 }, vec![Param(vec![4, 6], Any)]);
}

#[test]
fn losses() {
    // Uneven example weights, one of them zero (a padding row).
    let labels = Tensor::new([4], vec![2.0, 0.0, 4.0, 2.0]);
    let weights4 = Tensor::new([4], vec![0.25, 0.5, 0.0, 0.25]);
    check(
        "softmax_cross_entropy",
        SoftmaxCrossEntropy {},
        vec![Param(vec![4, 5], Any), Fixed(labels), Fixed(weights4)],
    );
    let weights3 = Tensor::new([3], vec![0.5, 0.0, 0.5]);
    check(
        "mse",
        MeanSquaredError {},
        vec![Param(vec![3, 4], Any), Param(vec![3, 4], Any), Fixed(weights3.clone())],
    );
    check(
        "mse_rank4",
        MeanSquaredError {},
        vec![Param(vec![3, 2, 2, 1], Any), Fixed(Tensor::zeros([3, 2, 2, 1])), Fixed(weights3)],
    );
    let target = Tensor::new([2, 3], vec![0.0, 1.0, 0.3, 1.0, 0.0, 0.8]);
    check(
        "binary_cross_entropy",
        BinaryCrossEntropy {},
        vec![Param(vec![2, 3], Prob), Fixed(target), Fixed(Tensor::new([2], vec![0.7, 0.3]))],
    );
}

/// A loss over a batch padded with zero-weight rows equals the loss over the real rows alone,
/// and the padding rows get no gradient.
#[test]
fn padding_rows_do_not_count() {
    let logits: Vec<f64> = (0..15).map(|i| ((i * 7) % 11) as f64 / 3.0 - 1.5).collect();
    let build = |n: usize, weights: Vec<f64>| {
        let mut g = Graph::new();
        let x = g.leaf(Parameter { init: Init::Zeros, seed: 0 }, Shape::new([n, 5]), "x").unwrap();
        let l = g.leaf(Input {}, Shape::new([n]), "labels").unwrap();
        let w = g.leaf(Input {}, Shape::new([n]), "weights").unwrap();
        let loss = g.add(SoftmaxCrossEntropy {}, &[x, l, w], "loss").unwrap();
        let dx = gradients(&mut g, loss, &[x]).unwrap()[0];
        let mut feeds = HashMap::new();
        feeds.insert(l, Tensor::new([n], vec![1.0, 4.0, 0.0][..n].to_vec()));
        feeds.insert(w, Tensor::new([n], weights));
        let mut vars = Variables::default();
        vars.set("x", Tensor::new([n, 5], logits[..n * 5].to_vec()));
        let values = run(&g, &feeds, &mut vars, &EvalCtx::default()).unwrap();
        (values[&loss].data[0], values[&dx].data.clone())
    };
    let (real, d_real) = build(2, vec![0.5, 0.5]);
    let (padded, d_padded) = build(3, vec![0.5, 0.5, 0.0]);
    assert!((real - padded).abs() < 1e-12, "{real} vs {padded}");
    assert_eq!(&d_padded[..10], &d_real[..]);
    assert!(d_padded[10..].iter().all(|&v| v == 0.0), "{:?}", &d_padded[10..]);
}

#[test]
fn data_inputs_get_no_gradient_nodes() {
    // conv over a data input: only the filter gradient is built, never the input gradient.
    let mut g = Graph::new();
    let x = g.leaf(Input {}, Shape::new([1, 5, 5, 1]), "x").unwrap();
    let w = g
        .leaf(Parameter { init: Init::GlorotUniform, seed: 1 }, Shape::new([3, 3, 1, 2]), "w")
        .unwrap();
    let y =
        g.add(Conv2d { stride: [1, 1], pad: Padding::Mode(PadMode::Valid) }, &[x, w], "y").unwrap();
    let loss = g.add(ReduceSum { axes: vec![0, 1, 2, 3] }, &[y], "loss").unwrap();
    gradients(&mut g, loss, &[w]).unwrap();
    assert!(g.nodes_where(|op| matches!(op, Op::Conv2dGradInput(_))).is_empty());
    assert_eq!(g.nodes_where(|op| matches!(op, Op::Conv2dGradFilter(_))).len(), 1);
}
