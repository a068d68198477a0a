//! Lowered matmuls, convolutions and pooling, run with `kernel::eval` against the ops'
//! reference semantics.

use kiln_ir::ops::{
    AvgPool2d, AvgPool2dGrad, Conv2d, Conv2dGradFilter, Conv2dGradInput, MatMul, MaxPool2d,
    MaxPool2dGrad, PadMode, Padding,
};
use kiln_ir::{Graph, Op, Shape, Tensor};
use proptest::prelude::*;

use crate::kernel::print::print;
use crate::kernel::{Kernel, LoopKind, Stmt};
use crate::lower::testing::{assert_close, random, run_op, Lcg, Lowered};

const VALID: Padding = Padding::Mode(PadMode::Valid);
const SAME: Padding = Padding::Mode(PadMode::Same);

fn matmul_inputs(ta: bool, tb: bool, m: usize, k: usize, n: usize, seed: u64) -> [Tensor; 2] {
    let mut rng = Lcg(seed);
    let a = random(&mut rng, &if ta { [k, m] } else { [m, k] }, -1.0, 1.0);
    let b = random(&mut rng, &if tb { [n, k] } else { [k, n] }, -1.0, 1.0);
    [a, b]
}

fn matmul(ta: bool, tb: bool, m: usize, k: usize, n: usize, seed: u64) -> Lowered {
    let inputs = matmul_inputs(ta, tb, m, k, n, seed);
    run_op(MatMul { transpose_a: ta, transpose_b: tb }, &inputs, 0)
}

fn check_seed(m: usize, k: usize, n: usize) -> u64 {
    (m * 10007 + k * 101 + n) as u64
}

/// The tolerance for sums of `k` products of values in [-1, 1): f32 rounding grows like √k.
fn tol(k: usize) -> f64 {
    1e-5 * (k as f64 / 64.0).sqrt().max(1.0)
}

fn check_matmul(ta: bool, tb: bool, m: usize, k: usize, n: usize) -> Lowered {
    let r = matmul(ta, tb, m, k, n, check_seed(m, k, n));
    let what = format!("matmul ta={ta} tb={tb} [{m}x{k}]·[{k}x{n}]");
    assert_close(&what, &r.got, &r.want, tol(k));
    r
}

const TRANSPOSES: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

/// The register arrays of the kernels, as (name, lanes, count).
fn regs(kernels: &[Kernel]) -> Vec<(String, u8, u32)> {
    kernels.iter().flat_map(|k| k.regs.iter().map(|r| (r.name.clone(), r.lanes, r.count))).collect()
}

fn names(kernels: &[Kernel]) -> Vec<&str> {
    kernels.iter().map(|k| k.name.as_str()).collect()
}

/// The outermost parallel loop of a kernel: (extent, step).
fn parallel(k: &Kernel) -> Option<(usize, usize)> {
    match k.body.as_slice() {
        [Stmt::For { kind: LoopKind::Parallel, extent, step, .. }] => Some((*extent, *step)),
        _ => None,
    }
}

#[test]
fn gemm_every_small_shape_and_transpose() {
    for (ta, tb) in TRANSPOSES {
        for m in 1..=13 {
            for k in 1..=13 {
                for n in 1..=13 {
                    check_matmul(ta, tb, m, k, n);
                }
            }
        }
    }
}

#[test]
fn gemm_model_shapes() {
    // (M, K, N): dense layers of MNIST/CIFAR models at batch 64 and their odd relatives.
    let shapes = [
        (64, 784, 128),
        (64, 128, 10),
        (64, 576, 64),
        (7, 9, 5),
        (2, 3, 10),
        (1, 784, 128),
        (3, 50, 40),
        (5, 7, 8),
        (6, 7, 10),
        (9, 4, 12),
        (10, 6, 3),
        (17, 33, 29),
    ];
    for (m, k, n) in shapes {
        for (ta, tb) in TRANSPOSES {
            check_matmul(ta, tb, m, k, n);
        }
    }
}

#[test]
fn gemm_uses_4x8_tiles_of_f32x4_accumulators() {
    let r = check_matmul(false, false, 64, 384, 128);
    assert_eq!(names(&r.kernels), ["y"]);
    assert_eq!(regs(&r.kernels), [("acc".to_string(), 4, 8), ("b4".to_string(), 4, 2)]);
    assert_eq!(parallel(&r.kernels[0]), Some((64, 4)));
    assert_eq!(r.kernels[0].work_items(), 16);
    let text = print(&r.kernels[0]);
    assert!(text.contains("for v1 in 0..128 step 8 {"), "{text}");
    // k loop by 4, k-steps unrolled; B in registers, one splat(load A) per fma.
    assert!(text.contains("in 0..384 step 4 {"), "{text}");
    assert!(text.contains("b4[v"), "{text}");
    assert!(text.contains("= fma(splat(%x0["), "{text}");

    // All tile shapes: 4x8, 4-wide and scalar columns, then the 3 remaining rows.
    let r = check_matmul(false, false, 7, 5, 15);
    assert_eq!(names(&r.kernels), ["y", "y.rows"]);
    let want = [
        ("acc", 4, 8),
        ("b4", 4, 2),
        ("acc4", 4, 4),
        ("b4", 4, 1),
        ("acc1", 1, 12),
        ("b1", 1, 3),
        ("acc", 4, 6),
        ("b4", 4, 2),
        ("acc4", 4, 3),
        ("b4", 4, 1),
        ("acc1", 1, 9),
        ("b1", 1, 3),
    ]
    .map(|(n, l, c)| (n.to_string(), l, c));
    assert_eq!(regs(&r.kernels), want);
    assert_eq!(parallel(&r.kernels[1]), None);

    // Transposed B is packed into the scratch first.
    let r = check_matmul(false, true, 64, 128, 10);
    assert_eq!(names(&r.kernels), ["y.pack_b", "y"]);
    assert_eq!(parallel(&r.kernels[0]), Some((128, 1)));
}

/// `C = A·B` summed as the lowering promises: per element, an f32 fma chain over `k` from 0;
/// with `split` chunks of `chunk` k-steps, the chains of the chunks summed in order, then the
/// chain continued over the k-steps left.
fn fma_chains(r: &Lowered, ta: bool, tb: bool, m: usize, k: usize, n: usize, split: Option<usize>) {
    let [a, b] = matmul_inputs(ta, tb, m, k, n, check_seed(m, k, n));
    let (a, b) = (&a.data, &b.data);
    let at = |i: usize, p: usize| (if ta { a[p * m + i] } else { a[i * k + p] }) as f32;
    let bt = |p: usize, j: usize| (if tb { b[j * k + p] } else { b[p * n + j] }) as f32;
    let chain = |i: usize, j: usize, ps: std::ops::Range<usize>, acc: f32| {
        ps.fold(acc, |acc, p| at(i, p).mul_add(bt(p, j), acc))
    };
    for i in 0..m {
        for j in 0..n {
            let want = match split {
                None => chain(i, j, 0..k, 0.0),
                Some(chunk) => {
                    let parts = (0..super::gemm::SPLIT)
                        .map(|s| chain(i, j, s * chunk..(s + 1) * chunk, 0.0))
                        .reduce(|x, y| x + y)
                        .unwrap();
                    chain(i, j, super::gemm::SPLIT * chunk..k, parts)
                }
            };
            let got = r.got.data[i * n + j] as f32;
            assert_eq!(got.to_bits(), want.to_bits(), "C[{i},{j}] of {m}x{k}x{n}: {got} vs {want}");
        }
    }
}

#[test]
fn gemm_long_k_blocks_are_exact_fma_chains() {
    // Blocks of K reload the accumulators from C: bit-identical to one chain per element.
    // (M, K, N): 9 row blocks, B large enough to group 2 per work item (then a kernel for the
    // last block and one for the last row, parallel over column tiles, plus their column tail);
    // K not a multiple of the block size nor of 4.
    for (ta, tb) in TRANSPOSES {
        let (m, k, n) = (37, 1030, 43);
        let r = check_matmul(ta, tb, m, k, n);
        fma_chains(&r, ta, tb, m, k, n, None);
        let gemm: Vec<_> = r.kernels.iter().filter(|k| !k.name.ends_with("pack_b")).collect();
        let names: Vec<&str> = gemm.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["y", "y.blocks", "y.rows", "y.rows_tail"]);
        assert_eq!(parallel(gemm[0]), Some((32, 8)));
        assert_eq!(parallel(gemm[1]), Some((4, 4)));
        assert_eq!(parallel(gemm[2]), Some((40, 8)));
        let text = print(gemm[0]);
        // The first block starts at zero, the next full blocks (a loop) and the tail reload C.
        assert!(text.contains("acc[2*v") && text.contains("= %y["), "{text}");
    }
    // Short B: one block of 4 rows per work item.
    let r = check_matmul(false, false, 12, 600, 5);
    fma_chains(&r, false, false, 12, 600, 5, None);
    assert_eq!(parallel(&r.kernels[0]), Some((12, 4)));
}

#[test]
fn gemm_long_k_with_few_rows_is_split() {
    // (M, K, N): few rows and a long K: 8 chunks of K into partial products, then their sum.
    for (m, k, n) in [(9, 4100, 5), (6, 2050, 11), (2, 2200, 17), (4, 2053, 8)] {
        for (ta, tb) in TRANSPOSES {
            let r = check_matmul(ta, tb, m, k, n);
            let chunk = k / super::gemm::SPLIT / super::gemm::KU * super::gemm::KU;
            fma_chains(&r, ta, tb, m, k, n, Some(chunk));
            let gemm: Vec<_> = r.kernels.iter().filter(|k| !k.name.ends_with("pack_b")).collect();
            assert_eq!(gemm[0].name, "y.split");
            assert_eq!(parallel(gemm[0]), Some((8, 1)));
            assert!(gemm[1..].iter().all(|k| k.name.starts_with("y.sum")));
        }
    }
}

#[test]
fn gemm_with_few_rows_is_parallel_over_column_tiles() {
    let r = check_matmul(false, false, 1, 784, 130);
    assert_eq!(names(&r.kernels), ["y.rows", "y.rows_tail"]);
    assert_eq!(parallel(&r.kernels[0]), Some((128, 8)));
    assert_eq!(regs(&r.kernels)[0], ("acc".to_string(), 4, 2));
    let r = check_matmul(true, true, 6, 20, 40);
    assert_eq!(names(&r.kernels), ["y.pack_b", "y", "y.rows"]);
    assert_eq!(parallel(&r.kernels[2]), Some((40, 8)));
}

#[test]
fn scratch_sizes() {
    let scratch = |op: Op, a: &[usize], b: &[usize]| {
        let mut g = Graph::new();
        let x = g.leaf(kiln_ir::ops::Input {}, Shape::from(a), "a").unwrap();
        let w = g.leaf(kiln_ir::ops::Input {}, Shape::from(b), "b").unwrap();
        let y = g.add(op, &[x, w], "y").unwrap();
        super::scratch_len(&g, y)
    };
    let mm = |ta, tb| Op::from(MatMul { transpose_a: ta, transpose_b: tb });
    assert_eq!(scratch(mm(false, false), &[5, 7], &[7, 3]), 0);
    assert_eq!(scratch(mm(true, false), &[7, 5], &[7, 3]), 0);
    assert_eq!(scratch(mm(false, true), &[5, 7], &[3, 7]), 21);
    // A split K: 8 partial products after the packed B.
    assert_eq!(scratch(mm(true, false), &[4100, 9], &[4100, 5]), 8 * 45);
    assert_eq!(scratch(mm(false, true), &[9, 4100], &[5, 4100]), 5 * 4100 + 8 * 45);
    assert_eq!(scratch(mm(false, false), &[64, 4100], &[4100, 5]), 0);
    let conv = |stride, pad| Op::from(Conv2d { stride, pad });
    // 3x3 same on 2x5x5x3 -> 50 rows of 27 taps.
    assert_eq!(scratch(conv([1, 1], SAME), &[2, 5, 5, 3], &[3, 3, 3, 4]), 50 * 27);
    assert_eq!(scratch(conv([1, 1], VALID), &[2, 5, 5, 3], &[1, 1, 3, 4]), 0);
    assert_eq!(scratch(conv([2, 2], VALID), &[2, 5, 5, 3], &[1, 1, 3, 4]), 18 * 3);
    let gf = Op::from(Conv2dGradFilter { stride: [1, 1], pad: VALID, kernel_hw: [3, 3] });
    assert_eq!(scratch(gf.clone(), &[2, 5, 5, 3], &[2, 3, 3, 4]), 18 * 27);
    // 2x48x48 rows of 9 taps: a split K (8 partial 9x4 products after the columns).
    assert_eq!(scratch(gf, &[2, 50, 50, 1], &[2, 48, 48, 4]), 4608 * 9 + 8 * 36);
    let gi = Op::from(Conv2dGradInput { stride: [1, 1], pad: VALID, input_hw: [5, 5] });
    assert_eq!(scratch(gi, &[2, 3, 3, 4], &[3, 3, 3, 4]), 4 * 27 + 18 * 27);
    let gi = Op::from(Conv2dGradInput { stride: [1, 1], pad: VALID, input_hw: [5, 5] });
    assert_eq!(scratch(gi, &[2, 5, 5, 4], &[1, 1, 3, 4]), 4 * 3);
    let pool = Op::from(MaxPool2dGrad { size: [2, 2], stride: [2, 2] });
    assert_eq!(scratch(pool, &[1, 4, 4, 2], &[1, 2, 2, 2]), 0);
}

/// Runs conv2d and both gradients on random data and compares them with the reference.
fn check_conv(x: [usize; 4], w: [usize; 4], stride: [usize; 2], pad: Padding, seed: u64) {
    let mut rng = Lcg(seed);
    let xt = random(&mut rng, &x, -1.0, 1.0);
    let wt = random(&mut rng, &w, -1.0, 1.0);
    let case = format!("x {x:?} w {w:?} stride {stride:?} {pad:?}");
    let y = run_op(Conv2d { stride, pad }, &[xt.clone(), wt.clone()], 0);
    assert_close(&format!("conv2d {case}"), &y.got, &y.want, tol(w[0] * w[1] * w[2]));
    let g = random(&mut rng, y.want.shape.dims(), -1.0, 1.0);
    let dx = run_op(
        Conv2dGradInput { stride, pad, input_hw: [x[1], x[2]] },
        &[g.clone(), wt.clone()],
        0,
    );
    let taps = w[0] * w[1] * w[3];
    assert_close(&format!("conv2d_grad_input {case}"), &dx.got, &dx.want, tol(taps));
    let dw = run_op(Conv2dGradFilter { stride, pad, kernel_hw: [w[0], w[1]] }, &[xt, g], 0);
    let rows = y.want.shape.numel() / w[3];
    assert_close(&format!("conv2d_grad_filter {case}"), &dw.got, &dw.want, tol(rows));
}

#[test]
fn conv_3x3_valid_and_same() {
    for (c, f) in [(3, 4), (6, 16), (16, 8)] {
        for n in [1, 3] {
            check_conv([n, 6, 5, c], [3, 3, c, f], [1, 1], VALID, 1);
            check_conv([n, 7, 7, c], [3, 3, c, f], [2, 2], SAME, 2);
            check_conv([n, 6, 6, c], [3, 3, c, f], [1, 1], SAME, 3);
        }
    }
}

#[test]
fn conv_lenet_first_layer() {
    // 5x5 'same' on one-channel 28x28 images: scalar im2col copies.
    check_conv([2, 28, 28, 1], [5, 5, 1, 6], [1, 1], SAME, 4);
    check_conv([1, 14, 14, 6], [5, 5, 6, 16], [1, 1], VALID, 5);
}

#[test]
fn conv_1x1_and_explicit_padding() {
    for c in [3, 6, 16] {
        for n in [1, 3] {
            check_conv([n, 5, 4, c], [1, 1, c, 5], [1, 1], VALID, 6);
            check_conv([n, 5, 4, c], [1, 1, c, 5], [2, 2], VALID, 7);
            check_conv([n, 5, 6, c], [3, 2, c, 3], [2, 1], Padding::Explicit([1, 0, 2, 1]), 8);
            check_conv([n, 4, 5, c], [2, 3, c, 9], [1, 2], Padding::Explicit([2, 1, 0, 3]), 9);
        }
    }
}

#[test]
fn conv_gradients_with_long_k() {
    // The filter gradient sums over N*OH*OW rows: blocks of K (144 taps in 36 row blocks), and a
    // split K with partial products in the scratch (9 taps).
    check_conv([1, 30, 30, 16], [3, 3, 16, 8], [1, 1], VALID, 10);
    check_conv([2, 40, 40, 1], [3, 3, 1, 4], [1, 1], SAME, 11);
    let mut rng = Lcg(12);
    let x = random(&mut rng, &[2, 40, 40, 1], -1.0, 1.0);
    let g = random(&mut rng, &[2, 40, 40, 4], -1.0, 1.0);
    let gf = Conv2dGradFilter { stride: [1, 1], pad: SAME, kernel_hw: [3, 3] };
    let r = run_op(gf, &[x, g], 0);
    assert_eq!(names(&r.kernels), ["y.im2col", "y.gemm.split", "y.gemm.sum", "y.gemm.sum.rows"]);
}

#[test]
fn conv_kernel_structure() {
    let mut rng = Lcg(1);
    let x = random(&mut rng, &[3, 5, 5, 6], -1.0, 1.0);
    let w = random(&mut rng, &[3, 3, 6, 8], -1.0, 1.0);
    let r = run_op(Conv2d { stride: [1, 1], pad: SAME }, &[x.clone(), w.clone()], 0);
    assert_close("conv", &r.got, &r.want, 1e-5);
    assert_eq!(names(&r.kernels), ["y.im2col", "y.gemm", "y.gemm.rows"]);
    assert_eq!(parallel(&r.kernels[0]), Some((3, 1)));
    assert_eq!(parallel(&r.kernels[1]), Some((72, 4)));
    assert!(regs(&r.kernels[1..2]).contains(&("acc".into(), 4, 8)));
    let text = print(&r.kernels[0]);
    assert!(text.contains("..+4]"), "channels are vectorised: {text}");
    // Pointwise: no im2col, the input is the GEMM's A.
    let w1 = random(&mut rng, &[1, 1, 6, 8], -1.0, 1.0);
    let r = run_op(Conv2d { stride: [1, 1], pad: VALID }, &[x.clone(), w1.clone()], 0);
    assert_eq!(names(&r.kernels), ["y.gemm", "y.gemm.rows"]);
    let g = random(&mut rng, &[3, 5, 5, 8], -1.0, 1.0);
    let gi = Conv2dGradInput { stride: [1, 1], pad: SAME, input_hw: [5, 5] };
    let r = run_op(gi, &[g.clone(), w], 0);
    assert_close("grad input", &r.got, &r.want, 1e-5);
    // dcols has 75 rows of 54 taps: the 3 last rows are parallel over 6 column tiles.
    let want = ["y.pack_w", "y.gemm", "y.gemm.rows", "y.gemm.rows_tail", "y.col2im"];
    assert_eq!(names(&r.kernels), want);
    assert_eq!(parallel(&r.kernels[2]), Some((48, 8)));
    assert_eq!(parallel(&r.kernels[4]), Some((3, 1)));
    let gf = Conv2dGradFilter { stride: [1, 1], pad: SAME, kernel_hw: [3, 3] };
    let r = run_op(gf, &[x, g], 0);
    assert_close("grad filter", &r.got, &r.want, 1e-5);
    assert_eq!(names(&r.kernels), ["y.im2col", "y.gemm", "y.gemm.rows"]);
}

#[test]
fn prints_small_gemm_and_conv_kernels() {
    let r = check_matmul(false, false, 5, 3, 13);
    let mut rng = Lcg(2);
    let x = random(&mut rng, &[1, 4, 4, 5], -1.0, 1.0);
    let w = random(&mut rng, &[3, 3, 5, 2], -1.0, 1.0);
    let c = run_op(Conv2d { stride: [2, 2], pad: SAME }, &[x, w], 0);
    assert_close("conv", &c.got, &c.want, 1e-5);
    for k in r.kernels.iter().chain(&c.kernels) {
        println!("{}", print(k));
    }
    let text = print(&r.kernels[0]);
    assert!(text.contains("reg acc: f32x4 x 8"), "{text}");
    assert!(text.contains("parallel for v0 in 0..4 step 4 {"), "{text}");
    assert!(text.contains("unrolled for"), "{text}");
}

fn pools(x: [usize; 4], size: [usize; 2], stride: [usize; 2], seed: u64, ties: bool) {
    let mut rng = Lcg(seed);
    let mut xt = random(&mut rng, &x, -1.0, 1.0);
    if ties {
        // Values in {-1, 0, 1}: windows with several maxima.
        xt = xt.map(|v| (v * 1.5).round());
    }
    let case = format!("x {x:?} size {size:?} stride {stride:?} ties {ties}");
    let y = run_op(MaxPool2d { size, stride }, std::slice::from_ref(&xt), 0);
    assert_close(&format!("max_pool2d {case}"), &y.got, &y.want, 1e-6);
    let g = random(&mut rng, y.want.shape.dims(), -1.0, 1.0);
    let dx = run_op(MaxPool2dGrad { size, stride }, &[xt.clone(), g.clone()], 0);
    assert_close(&format!("max_pool2d_grad {case}"), &dx.got, &dx.want, 1e-6);
    let y = run_op(AvgPool2d { size, stride }, &[xt], 0);
    assert_close(&format!("avg_pool2d {case}"), &y.got, &y.want, 1e-6);
    let dx = run_op(AvgPool2dGrad { size, stride, input_hw: [x[1], x[2]] }, &[g], 0);
    assert_close(&format!("avg_pool2d_grad {case}"), &dx.got, &dx.want, 1e-6);
}

#[test]
fn pooling_windows_and_channels() {
    for c in [6, 16, 32, 1, 5] {
        for n in [1, 3] {
            pools([n, 8, 8, c], [2, 2], [2, 2], 1, false);
            pools([n, 7, 9, c], [2, 2], [2, 2], 2, false);
            pools([n, 7, 7, c], [3, 3], [2, 2], 3, false);
            pools([n, 9, 6, c], [3, 2], [1, 2], 4, false);
            pools([n, 7, 7, c], [3, 3], [2, 2], 5, true);
            pools([n, 5, 5, c], [2, 2], [1, 1], 6, true);
        }
    }
    // A large window (serial window loops) and a global pool.
    pools([2, 6, 6, 5], [5, 4], [1, 2], 7, true);
    pools([2, 5, 5, 8], [5, 5], [1, 1], 8, false);
}

#[test]
fn pooling_kernel_structure() {
    let mut rng = Lcg(3);
    let x = random(&mut rng, &[2, 8, 8, 6], -1.0, 1.0);
    let y = run_op(MaxPool2d { size: [2, 2], stride: [2, 2] }, std::slice::from_ref(&x), 0);
    assert_eq!(y.kernels.len(), 1);
    // 4 output rows > 2 images: parallel over rows.
    assert_eq!(parallel(&y.kernels[0]), Some((4, 1)));
    let text = print(&y.kernels[0]);
    assert!(text.contains("reg m4: f32x4") && text.contains("reg m1: f32"), "{text}");
    let g = random(&mut rng, &[2, 4, 4, 6], -1.0, 1.0);
    let dx = run_op(MaxPool2dGrad { size: [2, 2], stride: [2, 2] }, &[x, g], 0);
    assert_eq!(parallel(&dx.kernels[0]), Some((2, 1)));
    let text = print(&dx.kernels[0]);
    assert!(text.contains("select("), "{text}");
}

fn padding() -> impl Strategy<Value = Padding> {
    prop_oneof![
        Just(VALID),
        Just(SAME),
        prop::array::uniform4(0usize..3).prop_map(Padding::Explicit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn gemm_random_shapes(
        m in 1usize..24, k in 1usize..24, n in 1usize..40,
        ta: bool, tb: bool, seed: u64,
    ) {
        let r = matmul(ta, tb, m, k, n, seed);
        assert_close(&format!("matmul ta={ta} tb={tb} {m}x{k}x{n}"), &r.got, &r.want, 1e-5);
    }

    #[test]
    fn conv_random_shapes(
        n in 1usize..3, h in 1usize..9, w in 1usize..9, c in 1usize..7, f in 1usize..6,
        kh in 1usize..4, kw in 1usize..4, sh in 1usize..4, sw in 1usize..4,
        pad in padding(), seed: u64,
    ) {
        let p = pad.resolve([h, w], [kh, kw], [sh, sw]);
        prop_assume!(kh <= h + p[0] + p[1] && kw <= w + p[2] + p[3]);
        check_conv([n, h, w, c], [kh, kw, c, f], [sh, sw], pad, seed);
    }

    #[test]
    fn pool_random_shapes(
        n in 1usize..3, h in 1usize..9, w in 1usize..9, c in 1usize..10,
        kh in 1usize..4, kw in 1usize..4, sh in 1usize..4, sw in 1usize..4,
        ties: bool, seed: u64,
    ) {
        prop_assume!(kh <= h && kw <= w);
        pools([n, h, w, c], [kh, kw], [sh, sw], seed, ties);
    }
}

#[test]
fn tensors_are_compared() {
    // The harness really detects a wrong result (guards against vacuous comparisons).
    let r = matmul(false, false, 4, 3, 8, 1);
    let mut bad = r.got.clone();
    bad.data[5] += 0.01;
    let caught = std::panic::catch_unwind(|| assert_close("bad", &bad, &r.want, 1e-5));
    assert!(caught.is_err());
}
