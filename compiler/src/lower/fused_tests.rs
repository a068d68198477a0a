//! The fused ops' kernels, run with `kernel::eval` against their reference semantics (the
//! composition of the ops each one replaces), over odd shapes, strides, paddings and exact
//! zeros.

use kiln_ir::ops::{
    Conv2dBiasAct, Conv2dBiasActMaxPool2d, MatMulBiasAct, MaxPool2dGradRelu, MaxPool2dGradReluBias,
    PadMode, Padding, ReluGrad, Softmax, SoftmaxCrossEntropyGrad,
};
use kiln_ir::{Shape, Tensor};
use proptest::prelude::*;

use crate::kernel::{Kernel, LoopKind, Stmt};
use crate::lower::testing::{assert_close, random, run_op, Lcg, Lowered};

const VALID: Padding = Padding::Mode(PadMode::Valid);
const SAME: Padding = Padding::Mode(PadMode::Same);

fn tensor(dims: &[usize], data: Vec<f64>) -> Tensor {
    Tensor::new(Shape::new(dims.to_vec()), data)
}

fn names(kernels: &[Kernel]) -> Vec<&str> {
    kernels.iter().map(|k| k.name.as_str()).collect()
}

fn is_parallel(k: &Kernel) -> bool {
    matches!(k.body.as_slice(), [Stmt::For { kind: LoopKind::Parallel, .. }])
}

/// The tolerance for sums of `k` products of values in [-1, 1): f32 rounding grows like √k.
fn tol(k: usize) -> f64 {
    1e-5 * (k as f64 / 64.0).sqrt().max(1.0)
}

/// Values in {-1, 0, 1} (exact zeros and ties), with some negative zeros.
fn ternary(rng: &mut Lcg, dims: &[usize]) -> Tensor {
    let t = random(rng, dims, -1.5, 1.5).map(f64::round);
    let data = t.data.iter().map(|&v| if v == 0.0 && rng.uniform() < 0.5 { -0.0 } else { v });
    Tensor::new(t.shape.clone(), data.collect())
}

/// Example weights for `n` rows: `1/m` for the first `m = n - n/3` rows, then 0 (padding).
fn weights(n: usize) -> Tensor {
    let m = n - n / 3;
    tensor(&[n], (0..n).map(|i| if i < m { 1.0 / m as f64 } else { 0.0 }).collect())
}

// ---------------------------------------------------------------------------------------------
// relu_grad

#[test]
fn relu_grad_is_exact_at_every_size_and_zero_at_zero() {
    let mut rng = Lcg(1);
    for n in [1, 3, 4, 5, 7, 8, 16, 37, 64, 1000, 4096, 4097, 5000] {
        let g = random(&mut rng, &[n], -2.0, 2.0);
        let a = ternary(&mut rng, &[n]);
        let r = run_op(ReluGrad {}, &[g.clone(), a.clone()], 0);
        assert_close(&format!("relu_grad [{n}]"), &r.got, &r.want, 0.0);
        for i in 0..n {
            let want = if a.data[i] > 0.0 { g.data[i] as f32 as f64 } else { 0.0 };
            assert_eq!(r.got.data[i], want, "relu_grad [{n}] at {i}: a = {}", a.data[i]);
        }
        if n >= 4096 {
            assert!(is_parallel(&r.kernels[0]), "relu_grad [{n}] is parallel");
        }
    }
    // Image-shaped, as after a convolution.
    let g = random(&mut rng, &[2, 5, 3, 7], -1.0, 1.0);
    let a = ternary(&mut rng, &[2, 5, 3, 7]);
    let r = run_op(ReluGrad {}, &[g, a], 0);
    assert_close("relu_grad [2,5,3,7]", &r.got, &r.want, 0.0);
    assert_eq!(r.kernels.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// softmax_cross_entropy_grad

fn sce_grad(x: Tensor, labels: Tensor, w: Tensor, g: f64) -> Lowered {
    run_op(SoftmaxCrossEntropyGrad {}, &[x, labels, w, tensor(&[], vec![g])], 0)
}

#[test]
fn softmax_cross_entropy_grad_matches_reference() {
    let mut rng = Lcg(2);
    let cases = [
        (5, 10, 3.0),
        (5, 10, 80.0),
        (3, 37, 5.0),
        (4, 3, 2.0),
        (1, 1, 1.0),
        (1, 7, 100.0),
        (64, 10, 10.0),
        (200, 33, 5.0),
        (2, 5000, 3.0),
    ];
    for (n, c, scale) in cases {
        let x = random(&mut rng, &[n, c], -scale, scale);
        let labels = random(&mut rng, &[n], 0.0, c as f64).map(f64::floor);
        let g = random(&mut rng, &[], -2.0, 2.0).data[0];
        let r = sce_grad(x, labels, weights(n), g);
        assert_close(&format!("sce_grad [{n},{c}]±{scale}"), &r.got, &r.want, 1e-6);
        assert!(r.got.data.iter().all(|v| v.is_finite()));
        assert_eq!(r.kernels.len(), 1);
        assert_eq!(is_parallel(&r.kernels[0]), n > 1 && n * c >= 4096, "[{n},{c}]");
    }
    // Labels outside the classes (or not integers) match none, as in one_hot.
    let x = random(&mut rng, &[4, 6], -3.0, 3.0);
    let labels = tensor(&[4], vec![-1.0, 6.0, 2.5, 5.0]);
    let r = sce_grad(x, labels, tensor(&[4], vec![0.25; 4]), 1.0);
    assert_close("sce_grad with invalid labels", &r.got, &r.want, 1e-6);
}

#[test]
fn softmax_cross_entropy_grad_uses_the_softmax_kernels_exp() {
    // With no matching label, unit weights and g = 1 the gradient is the softmax itself:
    // bit-identical to the softmax kernel's result.
    let mut rng = Lcg(3);
    for (n, c) in [(3, 10), (2, 37), (1, 3), (130, 40)] {
        let x = random(&mut rng, &[n, c], -20.0, 20.0);
        let fused =
            sce_grad(x.clone(), tensor(&[n], vec![-1.0; n]), tensor(&[n], vec![1.0; n]), 1.0);
        let softmax = run_op(Softmax {}, &[x], 0);
        let bits = |t: &Tensor| t.data.iter().map(|&v| (v as f32).to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused.got), bits(&softmax.got), "[{n},{c}]");
    }
}

// ---------------------------------------------------------------------------------------------
// max_pool2d_grad_relu

fn pool_grad_relu(a: Tensor, size: [usize; 2], stride: [usize; 2], seed: u64) -> Lowered {
    let mut rng = Lcg(seed);
    let [n, h, w, c]: [usize; 4] = a.shape.dims().try_into().unwrap();
    let (oh, ow) = ((h - size[0]) / stride[0] + 1, (w - size[1]) / stride[1] + 1);
    let g = random(&mut rng, &[n, oh, ow, c], -1.0, 1.0);
    let r = run_op(MaxPool2dGradRelu { size, stride }, &[a.clone(), g.clone()], 0);
    let case = format!("max_pool2d_grad_relu {:?} size {size:?} stride {stride:?}", a.shape);
    assert_close(&case, &r.got, &r.want, 1e-6);
    for (i, (&v, &d)) in a.data.iter().zip(&r.got.data).enumerate() {
        assert!(v > 0.0 || d == 0.0, "{case}: dx[{i}] = {d} where a = {v}");
    }
    pool_grad_relu_bias(&r, a, g, size, stride, &case);
    r
}

/// `max_pool2d_grad_relu_bias` on the operands `plain` ran on: its gradient part bit-identical
/// to `plain`'s, its bias part (summed in the same kernel) close to the reference.
fn pool_grad_relu_bias(
    plain: &Lowered,
    a: Tensor,
    g: Tensor,
    size: [usize; 2],
    stride: [usize; 2],
    case: &str,
) {
    let r = run_op(MaxPool2dGradReluBias { size, stride }, &[a.clone(), g], 0);
    let (numel, c) = (a.shape.numel(), a.shape.dim(-1));
    assert_eq!(r.got.data[..numel], plain.got.data[..], "{case}: the bias variant's gradient");
    let tail = |t: &Tensor| tensor(&[c], t.data[numel..].to_vec());
    let rows = numel / c;
    assert_close(&format!("{case}: bias"), &tail(&r.got), &tail(&r.want), tol(rows) / 10.0);
    assert_eq!(names(&r.kernels), ["y", "y.bias"], "{case}");
    assert!(is_parallel(&r.kernels[0]) || a.shape.dim(0) == 1, "{case}: parallel over images");
}

#[test]
fn max_pool2d_grad_relu_windows_channels_and_zeros() {
    let mut rng = Lcg(4);
    for c in [1, 5, 6, 16] {
        for n in [1, 3] {
            for (hw, size, stride) in [
                ([8, 8], [2, 2], [2, 2]),
                ([7, 9], [2, 2], [2, 2]),
                ([7, 7], [3, 3], [2, 2]),
                ([9, 6], [3, 2], [1, 2]),
                ([5, 5], [2, 2], [1, 1]),
            ] {
                let dims = [n, hw[0], hw[1], c];
                // A ReLU's output: exact zeros and ties, as the rewriter's input has.
                let relu_out = ternary(&mut rng, &dims).map(|v| v.max(0.0));
                pool_grad_relu(relu_out, size, stride, 5);
                pool_grad_relu(ternary(&mut rng, &dims), size, stride, 6);
                pool_grad_relu(random(&mut rng, &dims, -1.0, 1.0), size, stride, 7);
            }
        }
    }
    // A large window (serial window loops) and a global pool.
    pool_grad_relu(ternary(&mut rng, &[2, 6, 6, 5]), [5, 4], [1, 2], 8);
    pool_grad_relu(random(&mut rng, &[2, 5, 5, 8], -1.0, 1.0), [5, 5], [1, 1], 9);
}

#[test]
fn max_pool2d_grad_relu_gives_no_gradient_to_windows_of_zeros() {
    // Every window's maximum is 0 (or negative): the plain gradient would be nonzero there.
    let a = tensor(&[1, 2, 4, 1], vec![0.0, -1.0, 0.0, 0.0, -2.0, 0.0, 0.0, 0.5]);
    let r = pool_grad_relu(a, [2, 2], [2, 2], 10);
    assert_eq!(r.got.data[..7], [0.0; 7]);
    assert_ne!(r.got.data[7], 0.0);
    assert_eq!(r.kernels.len(), 1);
    assert!(crate::kernel::print::print(&r.kernels[0]).contains("reg gm1: f32"));
}

// ---------------------------------------------------------------------------------------------
// matmul_bias_act, conv2d_bias_act, conv2d_bias_act_max_pool2d

fn check_matmul_bias_act(m: usize, k: usize, n: usize, relu: bool, seed: u64) -> Lowered {
    let mut rng = Lcg(seed);
    let x = random(&mut rng, &[m, k], -1.0, 1.0);
    let w = random(&mut rng, &[k, n], -1.0, 1.0);
    let b = random(&mut rng, &[n], -1.0, 1.0);
    let r = run_op(MatMulBiasAct { relu }, &[x, w, b], 0);
    assert_close(&format!("matmul_bias_act {m}x{k}x{n} relu={relu}"), &r.got, &r.want, tol(k));
    r
}

#[test]
fn matmul_bias_act_shapes() {
    let shapes = [
        (1, 1, 1),
        (1, 784, 130),
        (2, 3, 10),
        (7, 9, 5),
        (5, 7, 8),
        (17, 33, 29),
        (64, 128, 10),
        (64, 784, 128),
        (37, 1030, 43),
        (9, 4100, 5),
    ];
    for (m, k, n) in shapes {
        for relu in [false, true] {
            check_matmul_bias_act(m, k, n, relu, (m * 31 + k * 7 + n) as u64);
        }
    }
    // Only the GEMM's own kernels: the bias and ReLU are their store epilogue.
    let r = check_matmul_bias_act(7, 5, 15, true, 1);
    assert_eq!(names(&r.kernels), ["y", "y.rows"]);
    let text = crate::kernel::print::print(&r.kernels[0]);
    assert!(text.contains("= max(add(acc[2*v10 + v11], %x2[4*v11..+4]), splat(0.0))"), "{text}");
    // A split K: the partial products in the scratch, the epilogue in their final sum.
    let r = check_matmul_bias_act(9, 4100, 5, false, 2);
    assert_eq!(r.kernels[0].name, "y.split");
    assert_eq!(names(&r.kernels), ["y.split", "y.sum", "y.sum.rows"]);
    let text = crate::kernel::print::print(r.kernels.last().unwrap());
    assert!(text.contains("= add(acc4, %x2[0..+4])"), "{text}");
}

fn conv_inputs(x: [usize; 4], w: [usize; 4], seed: u64) -> [Tensor; 3] {
    let mut rng = Lcg(seed);
    let xt = random(&mut rng, &x, -1.0, 1.0);
    let wt = random(&mut rng, &w, -1.0, 1.0);
    let bt = random(&mut rng, &[w[3]], -1.0, 1.0);
    [xt, wt, bt]
}

fn check_conv_bias_act(
    x: [usize; 4],
    w: [usize; 4],
    stride: [usize; 2],
    pad: Padding,
    relu: bool,
    seed: u64,
) -> Lowered {
    let op = Conv2dBiasAct { stride, pad, relu };
    let r = run_op(op, &conv_inputs(x, w, seed), 0);
    let case = format!("conv2d_bias_act x {x:?} w {w:?} stride {stride:?} {pad:?} relu={relu}");
    assert_close(&case, &r.got, &r.want, tol(w[0] * w[1] * w[2]));
    r
}

#[allow(clippy::too_many_arguments)]
fn check_conv_pool(
    x: [usize; 4],
    w: [usize; 4],
    stride: [usize; 2],
    pad: Padding,
    relu: bool,
    pool_size: [usize; 2],
    pool_stride: [usize; 2],
    seed: u64,
) -> Lowered {
    let op = Conv2dBiasActMaxPool2d { stride, pad, relu, pool_size, pool_stride };
    let r = run_op(op, &conv_inputs(x, w, seed), 0);
    let case = format!(
        "conv2d_bias_act_max_pool2d x {x:?} w {w:?} stride {stride:?} {pad:?} relu={relu} \
         pool {pool_size:?}/{pool_stride:?}"
    );
    assert_close(&case, &r.got, &r.want, tol(w[0] * w[1] * w[2]));
    r
}

#[test]
fn conv2d_bias_act_shapes() {
    for (c, f) in [(1, 6), (3, 4), (5, 7), (16, 8)] {
        for n in [1, 3] {
            for relu in [false, true] {
                check_conv_bias_act([n, 6, 5, c], [3, 3, c, f], [1, 1], VALID, relu, 1);
                check_conv_bias_act([n, 7, 7, c], [3, 3, c, f], [2, 2], SAME, relu, 2);
                check_conv_bias_act([n, 6, 6, c], [3, 3, c, f], [1, 1], SAME, relu, 3);
                check_conv_bias_act([n, 5, 4, c], [1, 1, c, f], [1, 1], VALID, relu, 4);
                check_conv_bias_act([n, 5, 4, c], [1, 1, c, f], [2, 2], VALID, relu, 5);
                let pad = Padding::Explicit([1, 0, 2, 1]);
                check_conv_bias_act([n, 5, 6, c], [3, 2, c, f], [2, 1], pad, relu, 6);
            }
        }
    }
    check_conv_bias_act([2, 28, 28, 1], [5, 5, 1, 6], [1, 1], SAME, true, 7);
    // im2col, then the GEMM's kernels (the bias and ReLU their epilogue); a pointwise conv has
    // no im2col.
    let r = check_conv_bias_act([3, 5, 5, 6], [3, 3, 6, 8], [1, 1], SAME, true, 8);
    assert_eq!(names(&r.kernels), ["y.im2col", "y.gemm", "y.gemm.rows"]);
    let r = check_conv_bias_act([3, 5, 5, 6], [1, 1, 6, 8], [1, 1], VALID, true, 9);
    assert_eq!(names(&r.kernels), ["y.gemm", "y.gemm.rows"]);
}

#[test]
fn conv2d_bias_act_max_pool2d_shapes() {
    for (c, f) in [(1, 6), (3, 5), (6, 16)] {
        for n in [1, 2] {
            for relu in [false, true] {
                check_conv_pool([n, 8, 8, c], [3, 3, c, f], [1, 1], SAME, relu, [2, 2], [2, 2], 1);
                check_conv_pool([n, 9, 7, c], [3, 3, c, f], [1, 1], VALID, relu, [2, 2], [2, 2], 2);
                check_conv_pool([n, 9, 9, c], [3, 3, c, f], [2, 2], SAME, relu, [3, 3], [2, 2], 3);
                check_conv_pool([n, 6, 5, c], [1, 1, c, f], [1, 1], VALID, relu, [2, 1], [1, 1], 4);
            }
        }
    }
    // The activation lives in the scratch; the pool reads it from there.
    let r = check_conv_pool([2, 8, 8, 3], [3, 3, 3, 5], [1, 1], SAME, true, [2, 2], [2, 2], 5);
    assert_eq!(names(&r.kernels), ["y.im2col", "y.gemm", "y.pool"]);
    let act = r.kernels[2].bufs.iter().find(|b| b.name == "y.act").expect("pool reads y.act");
    assert_eq!(act.len, 2 * 8 * 8 * 5);
}

fn padding() -> impl Strategy<Value = Padding> {
    prop_oneof![
        Just(VALID),
        Just(SAME),
        prop::array::uniform4(0usize..3).prop_map(Padding::Explicit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn matmul_bias_act_random_shapes(
        m in 1usize..24, k in 1usize..24, n in 1usize..40, relu: bool, seed: u64,
    ) {
        check_matmul_bias_act(m, k, n, relu, seed);
    }

    #[test]
    fn conv2d_bias_act_random_shapes(
        n in 1usize..3, h in 1usize..9, w in 1usize..9, c in 1usize..7, f in 1usize..6,
        kh in 1usize..4, kw in 1usize..4, sh in 1usize..3, sw in 1usize..3,
        pad in padding(), relu: bool, seed: u64,
    ) {
        let p = pad.resolve([h, w], [kh, kw], [sh, sw]);
        prop_assume!(kh <= h + p[0] + p[1] && kw <= w + p[2] + p[3]);
        check_conv_bias_act([n, h, w, c], [kh, kw, c, f], [sh, sw], pad, relu, seed);
    }

    #[test]
    fn conv2d_bias_act_max_pool2d_random_shapes(
        n in 1usize..3, h in 2usize..10, w in 2usize..10, c in 1usize..6, f in 1usize..7,
        kh in 1usize..4, kw in 1usize..4, stride in 1usize..3,
        ph in 1usize..4, pw in 1usize..4, ps in 1usize..3,
        pad in padding(), relu: bool, seed: u64,
    ) {
        let p = pad.resolve([h, w], [kh, kw], [stride, stride]);
        prop_assume!(kh <= h + p[0] + p[1] && kw <= w + p[2] + p[3]);
        let oh = (h + p[0] + p[1] - kh) / stride + 1;
        let ow = (w + p[2] + p[3] - kw) / stride + 1;
        prop_assume!(ph <= oh && pw <= ow);
        let conv = ([n, h, w, c], [kh, kw, c, f], [stride, stride], pad);
        check_conv_pool(conv.0, conv.1, conv.2, conv.3, relu, [ph, pw], [ps, ps], seed);
    }

    #[test]
    fn max_pool2d_grad_relu_random_shapes(
        n in 1usize..3, h in 1usize..9, w in 1usize..9, c in 1usize..10,
        kh in 1usize..4, kw in 1usize..4, sh in 1usize..4, sw in 1usize..4,
        ties: bool, seed: u64,
    ) {
        prop_assume!(kh <= h && kw <= w);
        let mut rng = Lcg(seed);
        let a = if ties { ternary(&mut rng, &[n, h, w, c]) } else {
            random(&mut rng, &[n, h, w, c], -1.0, 1.0)
        };
        pool_grad_relu(a, [kh, kw], [sh, sw], seed);
    }

    #[test]
    fn softmax_cross_entropy_grad_random_shapes(
        n in 1usize..20, c in 1usize..40, scale in 0.1f64..50.0, seed: u64,
    ) {
        let mut rng = Lcg(seed);
        let x = random(&mut rng, &[n, c], -scale, scale);
        let labels = random(&mut rng, &[n], 0.0, c as f64).map(f64::floor);
        let r = sce_grad(x, labels, weights(n), 0.5 + rng.uniform());
        assert_close(&format!("sce_grad [{n},{c}]"), &r.got, &r.want, 1e-6);
    }
}
