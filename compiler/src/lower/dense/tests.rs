//! Lowered matmuls, convolutions and pooling, run with `kernel::eval` against the ops'
//! reference semantics.

use kiln_ir::ops::{
    AvgPool2d, AvgPool2dGrad, Conv2d, Conv2dGradFilter, Conv2dGradInput, MatMul, MaxPool2d,
    MaxPool2dGrad, PadMode, Padding,
};
use kiln_ir::{EvalCtx, Graph, Op, Shape, Tensor};
use proptest::prelude::*;

use super::Epilogue;
use crate::kernel::print::print;
use crate::kernel::{eval, Buffer, Kernel, LoopKind, Stmt};
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
    // B (384x128) is packed into panels of 8 columns first, in parallel over its rows.
    assert_eq!(names(&r.kernels), ["y.pack_b", "y"]);
    assert_eq!(parallel(&r.kernels[0]), Some((384, 1)));
    assert_eq!(regs(&r.kernels), [("acc".to_string(), 4, 8), ("b4".to_string(), 4, 2)]);
    assert_eq!(parallel(&r.kernels[1]), Some((64, 4)));
    assert_eq!(r.kernels[1].work_items(), 16);
    let text = print(&r.kernels[1]);
    assert!(text.contains("for v1 in 0..128 step 8 {"), "{text}");
    // k loop by 4, k-steps unrolled; B in registers, one splat(load A) per fma.
    assert!(text.contains("in 0..384 step 4 {"), "{text}");
    assert!(text.contains("b4[v"), "{text}");
    assert!(text.contains("= fma(splat(%x0["), "{text}");
    // The k-steps of a tile read its panel contiguously: 8 floats per k.
    assert!(text.contains("%y.gemm.packed_b[384*v1 + 8*v"), "{text}");

    // A small B stays where it is.
    let r = check_matmul(false, false, 64, 128, 10);
    assert_eq!(names(&r.kernels), ["y"]);

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
        let gemm: Vec<_> = r.kernels.iter().filter(|k| !k.name.contains(".pack_")).collect();
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
            let gemm: Vec<_> = r.kernels.iter().filter(|k| !k.name.contains(".pack_")).collect();
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
    assert_eq!(names(&r.kernels), ["y.pack_a", "y.pack_b", "y", "y.rows"]);
    assert_eq!(parallel(&r.kernels[3]), Some((40, 8)));
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
    let want = ["y.gemm.pack_b", "y.gemm", "y.gemm.rows", "y.gemm.rows_tail", "y.col2im"];
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
    fn epilogue_random_shapes(
        m in 1usize..24, k in 1usize..24, n in 1usize..40,
        ta: bool, tb: bool, bias: bool, relu: bool, seed: u64,
    ) {
        let inputs = matmul_inputs(ta, tb, m, k, n, seed);
        let f = run_fused(MatMul { transpose_a: ta, transpose_b: tb }.into(), &inputs, bias, relu, seed);
        check_fused(&format!("matmul ta={ta} tb={tb} {m}x{k}x{n} bias={bias} relu={relu}"), &f, 1e-5);
    }

    #[test]
    fn conv_epilogue_random_shapes(
        n in 1usize..3, h in 1usize..9, w in 1usize..9, c in 1usize..7, f in 1usize..11,
        kh in 1usize..4, kw in 1usize..4, sh in 1usize..4, sw in 1usize..4,
        pad in padding(), relu: bool, seed: u64,
    ) {
        let p = pad.resolve([h, w], [kh, kw], [sh, sw]);
        prop_assume!(kh <= h + p[0] + p[1] && kw <= w + p[2] + p[3]);
        let mut rng = Lcg(seed);
        let inputs = [random(&mut rng, &[n, h, w, c], -1.0, 1.0), random(&mut rng, &[kh, kw, c, f], -1.0, 1.0)];
        let fused = run_fused(Conv2d { stride: [sh, sw], pad }.into(), &inputs, true, relu, seed);
        check_fused(&format!("conv2d {n}x{h}x{w}x{c} {kh}x{kw}x{f} {pad:?}"), &fused, 1e-5);
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

/// A product lowered with an epilogue, and what it must equal.
struct Fused {
    /// The fused kernels' output.
    got: Vec<f32>,
    /// The plain product's kernels, then `+ bias[j]` and ReLU in f32, as separate ops round.
    unfused: Vec<f32>,
    /// The reference semantics of the op in f64, then bias and ReLU.
    want: Tensor,
    kernels: Vec<Kernel>,
}

/// Lowers `op` on `inputs` with a bias (of `N` values from `seed`, if `bias`) and ReLU, runs it
/// with `kernel::eval`, and computes the references.
fn run_fused(op: Op, inputs: &[Tensor; 2], bias: bool, relu: bool, seed: u64) -> Fused {
    let mut g = Graph::new();
    let x = g.leaf(kiln_ir::ops::Input {}, inputs[0].shape.clone(), "x0").unwrap();
    let w = g.leaf(kiln_ir::ops::Input {}, inputs[1].shape.clone(), "x1").unwrap();
    let y = g.add(op.clone(), &[x, w], "y").unwrap();
    let shape = g.node(y).shape.clone();
    let n = *shape.dims().last().unwrap();
    let bias_t = random(&mut Lcg(seed), &[n], -1.0, 1.0).map(|v| v as f32 as f64);
    let shapes = [&inputs[0].shape, &inputs[1].shape];
    let lens = [inputs[0].shape.numel(), inputs[1].shape.numel(), n, shape.numel(), shape.numel()];
    let names = ["x0", "x1", "bias", "y", "plain"];
    let mut at = 0;
    let bufs: Vec<Buffer> = names
        .iter()
        .zip(lens)
        .map(|(name, len)| {
            at += len;
            Buffer { name: name.to_string(), offset: at - len, len }
        })
        .collect();
    let need = super::epilogue_scratch_len(&op, shapes);
    let scratch = (need > 0).then(|| Buffer { name: "scratch".into(), offset: at, len: need });
    let mut arena = vec![f32::NAN; at + need];
    for (t, b) in inputs.iter().chain([&bias_t]).zip(&bufs) {
        for (slot, v) in arena[b.offset..b.offset + b.len].iter_mut().zip(&t.data) {
            *slot = *v as f32;
        }
    }
    let lower = |out: &Buffer, epilogue: &Epilogue| {
        let ops = [&bufs[0], &bufs[1]];
        super::lower_with_epilogue("y", &op, shapes, ops, out, scratch.as_ref(), epilogue).unwrap()
    };
    let epilogue = Epilogue { bias: bias.then(|| bufs[2].clone()), relu };
    let kernels = lower(&bufs[3], &epilogue);
    for k in kernels.iter().chain(&lower(&bufs[4], &Epilogue::none())) {
        k.check().unwrap();
        eval::run(k, &mut arena, 0);
    }
    let slice = |b: &Buffer| arena[b.offset..b.offset + b.len].to_vec();
    let (got, plain) = (slice(&bufs[3]), slice(&bufs[4]));
    let b = |e: usize| if bias { bias_t.data[e % n] } else { 0.0 };
    let relu_f32 = |v: f32| if !relu || v > 0.0 { v } else { 0.0 };
    let unfused = (plain.iter().enumerate())
        .map(|(e, &c)| relu_f32(if bias { c + b(e) as f32 } else { c }))
        .collect();
    let args: Vec<Tensor> = inputs.iter().map(|t| t.map(|v| v as f32 as f64)).collect();
    let args: Vec<&Tensor> = args.iter().collect();
    let mut want = op.spec().eval(&args, &shape, &EvalCtx { step: 0 });
    for (e, v) in want.data.iter_mut().enumerate() {
        *v += b(e);
        if relu && *v <= 0.0 {
            *v = 0.0;
        }
    }
    Fused { got, unfused, want, kernels }
}

/// Checks a fused product: bit-identical to the unfused ops, close to the reference.
fn check_fused(what: &str, f: &Fused, tol: f64) {
    for (e, (g, u)) in f.got.iter().zip(&f.unfused).enumerate() {
        assert_eq!(g.to_bits(), u.to_bits(), "{what}: element {e}: fused {g} vs unfused {u}");
    }
    let got = Tensor::new(f.want.shape.clone(), f.got.iter().map(|&v| v as f64).collect());
    assert_close(what, &got, &f.want, tol);
}

fn check_fused_matmul(
    ta: bool,
    tb: bool,
    (m, k, n): (usize, usize, usize),
    bias: bool,
    relu: bool,
) -> Fused {
    let inputs = matmul_inputs(ta, tb, m, k, n, check_seed(m, k, n));
    let f = run_fused(MatMul { transpose_a: ta, transpose_b: tb }.into(), &inputs, bias, relu, 7);
    let what = format!("matmul ta={ta} tb={tb} {m}x{k}x{n} bias={bias} relu={relu}");
    check_fused(&what, &f, tol(k));
    f
}

#[test]
fn epilogue_applies_once_after_the_whole_reduction() {
    // (M, K, N): short K; blocks of K (several, a partial last one); K a multiple of the block
    // size (the last full block is peeled off the loop); a split K (partial products, then
    // the sum kernels); tails of rows and columns everywhere.
    let shapes =
        [(7, 5, 15), (64, 784, 128), (37, 1030, 43), (64, 1024, 24), (9, 4100, 5), (6, 2050, 11)];
    for (m, k, n) in shapes {
        for (ta, tb) in TRANSPOSES {
            for (bias, relu) in [(true, true), (true, false), (false, true)] {
                check_fused_matmul(ta, tb, (m, k, n), bias, relu);
            }
        }
    }
    let f = check_fused_matmul(false, false, (64, 1024, 24), true, true);
    let text: String = f.kernels.iter().map(print).collect();
    // K = 4 blocks of 256: the first block, a loop over the next two, then the last block,
    // whose tile (one, in the loop over the 3 column tiles) alone adds the bias and applies
    // the ReLU in its stores.
    assert!(text.contains(" in 0..512 step 256 {"), "{text}");
    assert_eq!(text.matches("%bias[").count(), 1, "{text}");
    assert_eq!(text.matches("max(").count(), 1, "{text}");
}

#[test]
fn no_epilogue_changes_nothing() {
    let inputs = matmul_inputs(false, false, 9, 20, 13, 1);
    let f = run_fused(
        MatMul { transpose_a: false, transpose_b: false }.into(),
        &inputs,
        false,
        false,
        1,
    );
    check_fused("plain", &f, tol(20));
    let r = check_matmul(false, false, 9, 20, 13);
    // The same kernels (buffer offsets aside).
    let structure = |ks: &[Kernel]| -> Vec<_> {
        ks.iter().map(|k| (k.name.clone(), k.regs.clone(), k.body.clone())).collect()
    };
    assert_eq!(structure(&f.kernels), structure(&r.kernels));
}

#[test]
fn conv_epilogue_is_per_output_channel() {
    let mut rng = Lcg(21);
    let cases = [
        ([2, 6, 5, 3], [3, 3, 3, 4], [1, 1], VALID),
        ([1, 7, 7, 6], [3, 3, 6, 16], [2, 2], SAME),
        ([2, 5, 4, 6], [1, 1, 6, 9], [1, 1], VALID),
        ([2, 13, 13, 32], [3, 3, 32, 64], [1, 1], VALID),
    ];
    for (x, w, stride, pad) in cases {
        let inputs = [random(&mut rng, &x, -1.0, 1.0), random(&mut rng, &w, -1.0, 1.0)];
        let f = run_fused(Conv2d { stride, pad }.into(), &inputs, true, true, 3);
        check_fused(&format!("conv2d x {x:?} w {w:?}"), &f, tol(w[0] * w[1] * w[2]));
    }
}

#[test]
fn epilogue_errors() {
    let (a, b) = (Shape::from(&[4, 5][..]), Shape::from(&[5, 6][..]));
    let buf = |name: &str, len| Buffer { name: name.into(), offset: 0, len };
    let (x, w, y) = (buf("a", 20), buf("b", 30), buf("y", 24));
    let mm: Op = MatMul { transpose_a: false, transpose_b: false }.into();
    let e = Epilogue { bias: Some(buf("bias", 4)), relu: false };
    let err = super::lower_with_epilogue("y", &mm, [&a, &b], [&x, &w], &y, None, &e).unwrap_err();
    assert!(err.contains("4 elements for 6 output columns"), "{err}");
    let pool: Op = MaxPool2d { size: [2, 2], stride: [2, 2] }.into();
    let err = super::lower_with_epilogue("y", &pool, [&a, &b], [&x, &w], &y, None, &e).unwrap_err();
    assert!(err.contains("no epilogue for max_pool2d"), "{err}");
}
