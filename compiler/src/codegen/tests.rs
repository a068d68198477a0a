//! Generated code against the evaluator (`kernel::eval`), on random arenas.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::kernel::eval;
use crate::kernel::{Binary, BufId, Cmp, Expr, Index, Kernel, LoopKind, Stmt, Unary, Var};

fn random_arena(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

/// Runs work items `[begin, end)` of the compiled `kernel` on `arena`.
fn jit_range(kernel: &Kernel, arena: &mut [f32], begin: usize, end: usize, step: u64) {
    let compiled = compile(std::slice::from_ref(kernel)).unwrap();
    assert_eq!(compiled.len(), 1);
    let needed = kernel.bufs.iter().map(|b| b.offset + b.len).max().unwrap_or(0);
    assert!(arena.len() >= needed);
    // SAFETY: the arena covers every buffer, and the range is within the kernel's work items.
    unsafe { compiled.get(0)(arena.as_mut_ptr(), begin as u64, end as u64, step) };
}

fn jit_run(kernel: &Kernel, arena: &mut [f32], step: u64) {
    jit_range(kernel, arena, 0, kernel.work_items(), step);
}

/// Same bits, or both NaN.
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn assert_same(jit: &[f32], eval: &[f32], what: &str) {
    assert_eq!(jit.len(), eval.len());
    for (i, (&a, &b)) in jit.iter().zip(eval).enumerate() {
        assert!(same(a, b), "{what}: element {i}: jit {a:e} ({:#x}) != eval {b:e}", a.to_bits());
    }
}

/// Runs `kernel` compiled and evaluated on copies of `arena`; they must agree exactly.
fn check_exact(kernel: &Kernel, arena: &[f32], step: u64) -> Vec<f32> {
    kernel.check().unwrap();
    let mut expected = arena.to_vec();
    eval::run(kernel, &mut expected, step);
    let mut got = arena.to_vec();
    jit_run(kernel, &mut got, step);
    assert_same(&got, &expected, &kernel.name);
    assert_ne!(&expected[..], arena, "{}: the kernel wrote nothing", kernel.name);
    got
}

/// A value of `lanes` lanes loaded from `buf` at `i`.
fn ld(buf: BufId, i: Var, lanes: u8) -> Expr {
    Expr::load(buf, Index::var(i, 1), lanes)
}

type Op = (&'static str, fn(Expr, Expr, Expr) -> Expr);

/// Lane-wise operations of three operands, all exact in generated code.
fn exact_ops() -> Vec<Op> {
    vec![
        ("add", |x, y, _| x.bin(Binary::Add, y)),
        ("sub", |x, y, _| x.bin(Binary::Sub, y)),
        ("mul", |x, y, _| x.bin(Binary::Mul, y)),
        ("div", |x, y, _| x.bin(Binary::Div, y)),
        ("max", |x, y, _| x.bin(Binary::Max, y)),
        ("min", |x, y, _| x.bin(Binary::Min, y)),
        ("fma", |x, y, z| x.fma(y, z)),
        ("neg", |x, _, _| x.un(Unary::Neg)),
        ("sqrt", |x, _, _| x.un(Unary::Sqrt)),
        ("gt", |x, y, z| Expr::select(Cmp::Gt, x, y.clone(), z, y)),
        ("ge", |x, y, z| Expr::select(Cmp::Ge, x, y.clone(), z, y)),
        ("lt", |x, y, z| Expr::select(Cmp::Lt, x.clone(), y, z, x)),
        ("eq", |x, y, z| Expr::select(Cmp::Eq, x.clone(), y, z, x)),
    ]
}

/// One kernel storing every op of `ops` on `x, y, z` (each `n` elements), `lanes` at a time.
fn ops_kernel(name: &str, ops: &[Op], n: usize, lanes: u8, kind: LoopKind) -> Kernel {
    let mut k = Kernel::new(name);
    let x = k.buf("x", 0, n);
    let y = k.buf("y", n, n);
    let z = k.buf("z", 2 * n, n);
    let i = k.var();
    let mut body = Vec::new();
    for (j, (op, f)) in ops.iter().enumerate() {
        let out = k.buf(*op, (3 + j) * n, n);
        let value = f(ld(x, i, lanes), ld(y, i, lanes), ld(z, i, lanes));
        body.push(Stmt::Store { buf: out, index: Index::var(i, 1), value });
    }
    k.body = vec![Stmt::For { var: i, extent: n, step: lanes as usize, kind, body }];
    k
}

/// An arena of `n`-element operands with special values (NaN, ±inf, ±0, equal operands).
fn special_arena(n: usize, buffers: usize, seed: u64) -> Vec<f32> {
    let mut arena = random_arena(n * buffers, seed);
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e-40, -3.5];
    for (j, &s) in specials.iter().enumerate() {
        arena[j] = s;
        arena[n + 3 * j + 1] = s;
        arena[2 * n + 2 * j] = s;
    }
    for j in 24..32 {
        arena[n + j] = arena[j]; // x == y
    }
    arena[n + 40] = -0.0;
    arena[40] = 0.0;
    arena
}

#[test]
fn lane_wise_ops_match_eval_exactly() {
    let n = 64;
    let ops = exact_ops();
    let arena = special_arena(n, 3 + ops.len(), 1);
    for (lanes, kind) in [(4, LoopKind::Parallel), (1, LoopKind::Serial), (4, LoopKind::Serial)] {
        let k = ops_kernel(&format!("ops{lanes}"), &ops, n, lanes, kind);
        check_exact(&k, &arena, 0);
    }
}

#[test]
fn splat_hsum_index_and_uniform_match_eval_exactly() {
    let n = 32;
    let mut k = Kernel::new("misc");
    let x = k.buf("x", 0, n);
    let out = k.buf("out", n, 6 * n);
    let i = k.var();
    let seed = 0x1234_5678_9abc_def0;
    let body = vec![
        // splat of a scalar load and of a constant
        Stmt::Store {
            buf: out,
            index: Index::var(i, 1),
            value: Expr::load(x, Index::var(i, 1).plus(3), 1)
                .splat()
                .fma(ld(x, i, 4), Expr::c(0.25).splat()),
        },
        // horizontal sum, stored as one lane
        Stmt::Store {
            buf: out,
            index: Index::var(i, 1).plus(n as i64),
            value: Expr::HorizontalSum(Box::new(ld(x, i, 4))),
        },
        // index values: runtime and constant
        Stmt::Store {
            buf: out,
            index: Index::var(i, 1).plus(n as i64 + 1),
            value: Expr::IndexValue(Index::var(i, 12_345_679).plus(-7)),
        },
        Stmt::Store {
            buf: out,
            index: Index::var(i, 1).plus(n as i64 + 2),
            value: Expr::IndexValue(Index::constant(16_777_217)),
        },
        // uniform numbers: a runtime index with a negative constant, a constant index
        Stmt::Store {
            buf: out,
            index: Index::var(i, 1).plus(2 * n as i64),
            value: Expr::Uniform { seed, index: Index::var(i, 3).plus(-5) },
        },
        Stmt::Store {
            buf: out,
            index: Index::var(i, 1).plus(2 * n as i64 + 1),
            value: Expr::Uniform { seed: 7, index: Index::constant(1 << 40) },
        },
        Stmt::Store {
            buf: out,
            index: Index::var(i, 1).plus(2 * n as i64 + 2),
            value: Expr::Uniform { seed, index: Index::var(i, 1) }.bin(Binary::Mul, Expr::c(3.0)),
        },
    ];
    k.body = vec![Stmt::For { var: i, extent: n, step: 4, kind: LoopKind::Parallel, body }];
    let arena = random_arena(7 * n, 2);
    for step in [0, 1, 12_345_678_901] {
        let got = check_exact(&k, &arena, step);
        let u = got[2 * n];
        assert!((0.0..1.0).contains(&u), "{u}");
    }
}

#[test]
fn normal_numbers_match_eval() {
    let n = 1024;
    let mut k = Kernel::new("normal");
    let x = k.buf("x", 0, n);
    let out = k.buf("out", n, n);
    let i = k.var();
    let value = Expr::Normal { seed: 99, index: Index::var(i, 1) }.bin(Binary::Add, ld(x, i, 1));
    k.body = vec![Stmt::For {
        var: i,
        extent: n,
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![Stmt::Store { buf: out, index: Index::var(i, 1), value }],
    }];
    k.check().unwrap();
    let arena = vec![0.0; 2 * n];
    let mut expected = arena.clone();
    eval::run(&k, &mut expected, 5);
    let mut got = arena.clone();
    jit_run(&k, &mut got, 5);
    for (a, b) in got[n..].iter().zip(&expected[n..]) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
    let mean = got[n..].iter().sum::<f32>() / n as f32;
    let var = got[n..].iter().map(|z| (z - mean) * (z - mean)).sum::<f32>() / n as f32;
    assert!(mean.abs() < 0.15 && (var - 1.0).abs() < 0.15, "mean {mean} var {var}");
}

/// Units in the last place between two finite floats of the same sign.
fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

/// Compares `op` in 4- and 1-lane kernels with the evaluator on `inputs`: relative error
/// at most `tolerance`; returns the largest error in ulps.
fn check_unary(op: Unary, inputs: &[f32], tolerance: f32) -> u32 {
    let n = inputs.len().div_ceil(4) * 4;
    let mut arena = vec![0.0; 3 * n];
    arena[..inputs.len()].copy_from_slice(inputs);
    let mut k = Kernel::new(format!("{op:?}"));
    let x = k.buf("x", 0, n);
    let out4 = k.buf("out4", n, n);
    let out1 = k.buf("out1", 2 * n, n);
    let (i, j) = (k.var(), k.var());
    k.body = vec![
        Stmt::For {
            var: i,
            extent: n,
            step: 4,
            kind: LoopKind::Serial,
            body: vec![Stmt::Store {
                buf: out4,
                index: Index::var(i, 1),
                value: ld(x, i, 4).un(op),
            }],
        },
        Stmt::For {
            var: j,
            extent: n,
            step: 1,
            kind: LoopKind::Serial,
            body: vec![Stmt::Store {
                buf: out1,
                index: Index::var(j, 1),
                value: ld(x, j, 1).un(op),
            }],
        },
    ];
    k.check().unwrap();
    let mut expected = arena.clone();
    eval::run(&k, &mut expected, 0);
    let mut got = arena.clone();
    jit_run(&k, &mut got, 0);
    let mut worst = 0;
    for (l, &x) in inputs.iter().enumerate() {
        let want = expected[n + l];
        assert!(same(want, expected[2 * n + l]));
        for got in [got[n + l], got[2 * n + l]] {
            if want.is_finite() && want != 0.0 {
                let rel = ((got - want) / want).abs();
                assert!(rel <= tolerance, "{op:?}({x:e}) = {got:e}, libm {want:e}, rel {rel:e}");
                worst = worst.max(ulps(got, want));
            } else {
                assert!(same(got, want), "{op:?}({x:e}) = {got:e}, libm {want:e}");
            }
        }
    }
    worst
}

/// `count` evenly spaced points of [lo, hi] and `count` random ones.
fn sweep(lo: f32, hi: f32, count: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let even = (0..count).map(|i| lo + (hi - lo) * i as f32 / (count - 1) as f32);
    let random: Vec<f32> = (0..count).map(|_| rng.random_range(lo..hi)).collect();
    even.chain(random).collect()
}

#[test]
fn exp_is_within_a_few_ulp() {
    let mut inputs = sweep(-87.0, 88.0, 40_000, 3);
    inputs.extend(sweep(-1.0, 1.0, 10_000, 4));
    inputs.extend([0.0, -0.0, 1e-8, -1e-8, 88.7, 88.72, -87.3]);
    let worst = check_unary(Unary::Exp, &inputs, 1e-6);
    eprintln!("exp: worst error {worst} ulp over {} inputs", inputs.len());
    assert!(worst <= 2, "exp: {worst} ulp");
    // overflow, underflow to subnormals and zero, special values
    let specials = [88.8, 1000.0, f32::INFINITY, -100.0, -103.0, -104.0, -200.0, f32::NEG_INFINITY];
    check_unary(Unary::Exp, &specials, 0.05);
    check_unary(Unary::Exp, &[f32::NAN], 0.0);
}

#[test]
fn log_is_within_a_few_ulp() {
    let mut inputs: Vec<f32> =
        sweep(-30.0 * 10f32.ln(), 30.0 * 10f32.ln(), 40_000, 5).iter().map(|x| x.exp()).collect();
    inputs.extend(sweep(0.5, 2.0, 10_000, 6));
    inputs.extend((1..2000).map(|i| 1.0 + i as f32 * f32::EPSILON));
    inputs.extend((1..2000).map(|i| 1.0 - i as f32 * f32::EPSILON / 2.0));
    let sqrt_half = std::f32::consts::FRAC_1_SQRT_2;
    let below = f32::from_bits(sqrt_half.to_bits() - 1);
    inputs.extend([f32::MIN_POSITIVE, f32::MAX, 1e-40, 1e-45, sqrt_half, below]);
    inputs.push(std::f32::consts::SQRT_2);
    let worst = check_unary(Unary::Log, &inputs, 1e-6);
    eprintln!("log: worst error {worst} ulp over {} inputs", inputs.len());
    assert!(worst <= 2, "log: {worst} ulp");
    let specials = [1.0, 0.0, -0.0, -1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
    check_unary(Unary::Log, &specials, 0.0);
}

#[test]
fn tanh_is_within_a_few_ulp() {
    let mut inputs = sweep(-20.0, 20.0, 40_000, 7);
    inputs.extend(sweep(-1.0, 1.0, 10_000, 8));
    inputs.extend(sweep(-1e-3, 1e-3, 1_000, 9));
    inputs.extend([0.625, -0.625, 0.62499994, 9.0, -9.0, 1e-30, -1e-40, 0.0, -0.0]);
    let worst = check_unary(Unary::Tanh, &inputs, 1e-6);
    eprintln!("tanh: worst error {worst} ulp over {} inputs", inputs.len());
    assert!(worst <= 3, "tanh: {worst} ulp");
    let specials = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 100.0, -100.0];
    check_unary(Unary::Tanh, &specials, 0.0);
}

/// The statements computing rows `row ..+ rows` (rows ≤ 4) of `C = A B` with a `rows x 8` tile
/// of f32x4 accumulators: for each 8 columns, `acc = 0`; for each k,
/// `acc[2 ii + jj] = fma(splat(A[row + ii, k]), B[k, j0 + 4 jj ..+ 4], acc[2 ii + jj])`; store.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_rows(
    k: &mut Kernel,
    (a, b, c, acc): (BufId, BufId, BufId, crate::kernel::Reg),
    (n, kd): (usize, usize),
    row: Index,
    rows: usize,
) -> Vec<Stmt> {
    let (j0, kk, ii, jj) = (k.var(), k.var(), k.var(), k.var());
    let acc_at = Index::var(ii, 2).plus_var(jj, 1);
    let tile = |body: Stmt| Stmt::For {
        var: ii,
        extent: rows,
        step: 1,
        kind: LoopKind::Unrolled,
        body: vec![Stmt::For {
            var: jj,
            extent: 2,
            step: 1,
            kind: LoopKind::Unrolled,
            body: vec![body],
        }],
    };
    // `row * stride + ii * stride`: the start of a row of A (stride kd) or C (stride n).
    let row_start = |stride: usize| {
        let stride = stride as i64;
        let terms = row.terms.iter().map(|&(v, c)| (v, c * stride)).collect();
        Index { constant: row.constant * stride, terms }.plus_var(ii, stride)
    };
    let a_idx = row_start(kd).plus_var(kk, 1);
    let b_idx = Index::var(kk, n as i64).plus_var(j0, 1).plus_var(jj, 4);
    let c_idx = row_start(n).plus_var(j0, 1).plus_var(jj, 4);
    let fma = Expr::load(a, a_idx, 1)
        .splat()
        .fma(Expr::load(b, b_idx, 4), Expr::Reg(acc, acc_at.clone()));
    vec![Stmt::For {
        var: j0,
        extent: n,
        step: 8,
        kind: LoopKind::Serial,
        body: vec![
            tile(Stmt::Set { reg: acc, index: acc_at.clone(), value: Expr::c(0.0).splat() }),
            Stmt::For {
                var: kk,
                extent: kd,
                step: 1,
                kind: LoopKind::Serial,
                body: vec![tile(Stmt::Set { reg: acc, index: acc_at.clone(), value: fma })],
            },
            tile(Stmt::Store { buf: c, index: c_idx, value: Expr::Reg(acc, acc_at) }),
        ],
    }]
}

/// `C[m, n] = A[m, kd] B[kd, n]` (n a multiple of 8): 4-row tiles, then the rows left one by one.
fn gemm(m: usize, n: usize, kd: usize) -> Kernel {
    let mut k = Kernel::new("gemm");
    let a = k.buf("a", 0, m * kd);
    let b = k.buf("b", m * kd, kd * n);
    let c = k.buf("c", m * kd + kd * n, m * n);
    let acc = k.reg("acc", 4, 8);
    let (i0, r) = (k.var(), k.var());
    let bufs = (a, b, c, acc);
    let m4 = m / 4 * 4;
    let main = gemm_rows(&mut k, bufs, (n, kd), Index::var(i0, 1), 4);
    let rest = gemm_rows(&mut k, bufs, (n, kd), Index::var(r, 1).plus(m4 as i64), 1);
    k.body = vec![
        Stmt::For { var: i0, extent: m4, step: 4, kind: LoopKind::Serial, body: main },
        Stmt::For { var: r, extent: m - m4, step: 1, kind: LoopKind::Serial, body: rest },
    ];
    k.body.retain(|s| !matches!(s, Stmt::For { extent: 0, .. }));
    k
}

#[test]
fn register_tiled_gemm_matches_eval_and_a_reference() {
    for (m, n, kd) in [(11, 16, 13), (4, 8, 1), (3, 24, 7)] {
        let k = gemm(m, n, kd);
        let arena = random_arena(m * kd + kd * n + m * n, 10);
        let got = check_exact(&k, &arena, 0);
        let (a, b, c) =
            (&arena[..m * kd], &arena[m * kd..m * kd + kd * n], &got[m * kd + kd * n..]);
        for i in 0..m {
            for j in 0..n {
                let want = (0..kd).fold(0.0f32, |acc, p| a[i * kd + p].mul_add(b[p * n + j], acc));
                assert!(same(c[i * n + j], want), "C[{i},{j}] {m}x{n}x{kd}");
            }
        }
    }
}

#[test]
fn gemm_clif_is_deterministic_and_fused() {
    let k = gemm(11, 16, 13);
    let text = clif_text(&k).unwrap();
    assert_eq!(text, clif_text(&k).unwrap());
    assert!(text.contains("function %kiln_k0_gemm(i64, i64, i64, i64)"), "{text}");
    assert_eq!(text.matches(" = fma ").count(), 8 + 2, "{text}");
    assert!(text.contains("splat.f32x4"), "{text}");
    assert!(clif_text_at(3, &k).unwrap().contains("%kiln_k3_gemm"));
    let asm = asm_text(&k).unwrap();
    assert!(asm.contains("fmadd"), "{asm}");
}

/// `out[v..+4] = 2 a[v..+4] + b[v..+4]` for v in 0..n step 4, in parallel.
fn axpy(n: usize) -> Kernel {
    let mut k = Kernel::new("axpy");
    let a = k.buf("a", 0, n);
    let b = k.buf("b", n, n);
    let c = k.buf("c", 2 * n, n);
    let i = k.var();
    let value = ld(a, i, 4).bin(Binary::Mul, Expr::c(2.0).splat()).bin(Binary::Add, ld(b, i, 4));
    k.body = vec![Stmt::For {
        var: i,
        extent: n,
        step: 4,
        kind: LoopKind::Parallel,
        body: vec![Stmt::Store { buf: c, index: Index::var(i, 1), value }],
    }];
    k
}

#[test]
fn parallel_ranges_compose() {
    let k = axpy(40);
    assert_eq!(k.work_items(), 10);
    let arena = random_arena(120, 11);
    let whole = check_exact(&k, &arena, 0);
    let mut halves = arena.clone();
    jit_range(&k, &mut halves, 0, 5, 0);
    assert_eq!(&halves[80..100], &whole[80..100]);
    assert_eq!(&halves[100..], &arena[100..], "second half untouched");
    jit_range(&k, &mut halves, 5, 10, 0);
    assert_same(&halves, &whole, "halves");
    let (mut mid, mut expected) = (arena.clone(), arena.clone());
    jit_range(&k, &mut mid, 3, 7, 0);
    eval::run_range(&k, &mut expected, 3, 7, 0);
    assert_same(&mid, &expected, "range 3..7");
    let mut empty = arena.clone();
    jit_range(&k, &mut empty, 4, 4, 0);
    assert_same(&empty, &arena, "empty range");
}

#[test]
fn unrolled_loops_and_register_arrays() {
    // acc[u] (u in 0..3) accumulates x[4 i + u] * (u + 1) over a serial i; unrolled stores.
    let n = 10;
    let mut k = Kernel::new("unrolled");
    let x = k.buf("x", 0, 4 * n);
    let out = k.buf("out", 4 * n, 16);
    let acc = k.reg("acc", 1, 3);
    let (i, u, w) = (k.var(), k.var(), k.var());
    let term = Expr::load(x, Index::var(i, 4).plus_var(u, 1), 1)
        .bin(Binary::Mul, Expr::IndexValue(Index::var(u, 1).plus(1)));
    k.body = vec![
        Stmt::For {
            var: i,
            extent: n,
            step: 1,
            kind: LoopKind::Serial,
            body: vec![Stmt::For {
                var: u,
                extent: 3,
                step: 1,
                kind: LoopKind::Unrolled,
                body: vec![Stmt::Set {
                    reg: acc,
                    index: Index::var(u, 1),
                    value: Expr::Reg(acc, Index::var(u, 1)).bin(Binary::Add, term),
                }],
            }],
        },
        Stmt::For {
            var: w,
            extent: 6,
            step: 2,
            kind: LoopKind::Unrolled,
            body: vec![
                Stmt::Store {
                    buf: out,
                    index: Index::var(w, 1),
                    value: Expr::Reg(acc, Index::var(w, 1).plus(-2).plus_var(w, -1).plus(2)),
                },
                Stmt::Store {
                    buf: out,
                    index: Index::var(w, 2).plus(4),
                    value: Expr::load(x, Index::var(w, 3).plus(1), 4),
                },
            ],
        },
    ];
    check_exact(&k, &random_arena(4 * n + 16, 12), 0);
}

#[test]
fn nested_serial_loops_with_steps() {
    // out[7 i + j] = x[7 i + j] * f32(i) - f32(j) for i in 0..10 step 3, j in 0..7 step 2,
    // and a running sum in a register across both loops.
    let mut k = Kernel::new("nested");
    let x = k.buf("x", 0, 70);
    let out = k.buf("out", 70, 71);
    let s = k.reg("s", 1, 1);
    let (i, j) = (k.var(), k.var());
    let at = Index::var(i, 7).plus_var(j, 1);
    let value = Expr::load(x, at.clone(), 1)
        .bin(Binary::Mul, Expr::IndexValue(Index::var(i, 1)))
        .bin(Binary::Sub, Expr::IndexValue(Index::var(j, 1)));
    k.body = vec![
        Stmt::For {
            var: i,
            extent: 10,
            step: 3,
            kind: LoopKind::Serial,
            body: vec![Stmt::For {
                var: j,
                extent: 7,
                step: 2,
                kind: LoopKind::Serial,
                body: vec![
                    Stmt::Store { buf: out, index: at.clone(), value },
                    Stmt::Set {
                        reg: s,
                        index: Index::constant(0),
                        value: Expr::reg(s).bin(Binary::Add, Expr::load(x, at, 1)),
                    },
                ],
            }],
        },
        Stmt::Store { buf: out, index: Index::constant(70), value: Expr::reg(s) },
    ];
    let got = check_exact(&k, &random_arena(141, 13), 0);
    assert_ne!(got[140], 0.0);
}

#[test]
fn sequential_loops_may_share_a_variable() {
    // for i in 0..8 { out[i] = x[i] + 1 }  for i in 0..8 step 4 { out[i + 8 ..+4] = x[i ..+4] }
    let mut k = Kernel::new("sequential");
    let x = k.buf("x", 0, 8);
    let out = k.buf("out", 8, 16);
    let i = k.var();
    k.body = vec![
        Stmt::For {
            var: i,
            extent: 8,
            step: 1,
            kind: LoopKind::Serial,
            body: vec![Stmt::Store {
                buf: out,
                index: Index::var(i, 1),
                value: ld(x, i, 1).bin(Binary::Add, Expr::c(1.0)),
            }],
        },
        Stmt::For {
            var: i,
            extent: 8,
            step: 4,
            kind: LoopKind::Serial,
            body: vec![Stmt::Store {
                buf: out,
                index: Index::var(i, 1).plus(8),
                value: ld(x, i, 4),
            }],
        },
    ];
    check_exact(&k, &random_arena(24, 16), 0);
}

#[test]
fn kernel_without_loops_runs_once() {
    let mut k = Kernel::new("scalar ops/1");
    let x = k.buf("x", 0, 4);
    let out = k.buf("out", 4, 3);
    let never = k.reg("never", 4, 2);
    k.body = vec![
        Stmt::Store {
            buf: out,
            index: Index::constant(0),
            value: Expr::HorizontalSum(Box::new(Expr::load(x, Index::constant(0), 4)))
                .bin(Binary::Add, Expr::c(0.5)),
        },
        Stmt::Store {
            buf: out,
            index: Index::constant(1),
            value: Expr::HorizontalSum(Box::new(Expr::Reg(never, Index::constant(1)))),
        },
        Stmt::Store {
            buf: out,
            index: Index::constant(2),
            value: Expr::load(x, Index::constant(3), 1).un(Unary::Sqrt),
        },
    ];
    assert_eq!(k.work_items(), 1);
    let mut arena = random_arena(7, 14);
    arena[5] = 9.0;
    let got = check_exact(&k, &arena, 0);
    assert_eq!(got[5], 0.0, "registers start at zero");
    let mut idle = arena.clone();
    jit_range(&k, &mut idle, 1, 1, 0);
    assert_same(&idle, &arena, "empty range");
    assert!(clif_text(&k).unwrap().contains("%kiln_k0_scalar_ops_1"));
}

#[test]
fn several_kernels_in_one_module() {
    let (a, b) = (axpy(8), gemm(5, 8, 3));
    let compiled = compile(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(compiled.len(), 2);
    let mut got = random_arena(8 * 3 + 5 * 3 + 3 * 8 + 5 * 8, 15);
    let mut expected = got.clone();
    eval::run(&a, &mut expected, 0);
    eval::run(&b, &mut expected, 0);
    // SAFETY: the arena covers both kernels' buffers.
    unsafe {
        compiled.get(0)(got.as_mut_ptr(), 0, 2, 0);
        compiled.get(1)(got.as_mut_ptr(), 0, 1, 0);
    }
    assert_same(&got, &expected, "two kernels");
}

#[test]
fn large_offsets_compile() {
    // Byte offsets beyond i32: the constant goes into an add.
    let mut k = axpy(8);
    k.bufs[2].offset = 700_000_000;
    let text = clif_text(&k).unwrap();
    assert!(text.contains("iconst.i64 0xa6e4_9c00"), "{text}"); // 4 * 700_000_000
    compile(&[k]).unwrap();
}

#[test]
fn invalid_kernels_are_rejected_with_their_name() {
    let mut bad = axpy(8);
    bad.name = "broken".into();
    bad.bufs[2].len = 7;
    let e = compile(&[axpy(8), bad.clone()]).unwrap_err();
    assert_eq!(e.kernel, "broken");
    assert!(e.to_string().contains("kernel `broken`"), "{e}");
    assert!(clif_text(&bad).is_err());
}
