//! GEMM micro-kernel throughput of generated code: `C[M,N] = A[M,K] B[K,N]` (N a multiple of 8)
//! with 4x8 register tiles (8 f32x4 accumulators, the k loop innermost, the tile unrolled inside
//! it), on one core. Prints GFLOP/s (median of 7 runs), the fraction of the 128-bit FMA peak
//! (16 flop/cycle: Cranelift only has 128-bit vectors on x86-64) and, as a measure of how busy
//! the shared machine is, plain Rust on the same product. The last shape (8x16x256: 24 KB of A
//! and B, in L1) measures the micro-kernel alone.
//!
//! `cargo bench -p kiln-compiler --bench gemm [shape filter]`; `KILN_ASM=1` also prints the
//! machine code (Cranelift's VCode after register allocation).

use std::time::{Duration, Instant};

use kiln_compiler::codegen::{asm_text, compile};
use kiln_compiler::kernel::{BufId, Expr, Index, Kernel, LoopKind, Reg, Stmt, Var};

/// 16 flop/cycle (2 FMA pipes x 4 lanes x 2) at the ~3.56 GHz boost clock seen on this machine.
const PEAK_GFLOPS: f64 = 16.0 * 3.56;

/// How a k-step of the tile reads B.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Form {
    /// Every fma loads its own `splat(A)` and `B` vector (all loads fold into the fmas, but B
    /// is loaded 4 times).
    Folded,
    /// The two B vectors of the k-step go to registers first; one `splat(load A)` per fma
    /// (folds into `vbroadcastss`).
    BRegs,
}

/// The layout of B in the arena.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// `B[k, j]` at `k N + j`.
    RowMajor,
    /// Panels of 8 columns: `B[k, j]` at `(j / 8) 8 K + 8 k + j % 8`, so the k loop streams.
    Packed,
}

#[derive(Clone, Copy, Debug)]
struct Variant {
    form: Form,
    layout: Layout,
    /// The k loop steps by this and unrolls it inside (it must divide K).
    k_unroll: usize,
}

/// The GEMM kernel: a parallel loop over 4-row blocks, a serial loop over 8-column blocks, the
/// k loop, and the 4x8 tile unrolled inside.
fn gemm(m: usize, n: usize, kd: usize, v: Variant) -> Kernel {
    assert!(m.is_multiple_of(4) && n.is_multiple_of(8) && kd.is_multiple_of(v.k_unroll));
    let mut k = Kernel::new(format!("gemm_{m}x{n}x{kd}"));
    let a = k.buf("a", 0, m * kd);
    let b = k.buf("b", m * kd, kd * n);
    let c = k.buf("c", m * kd + kd * n, m * n);
    let acc = k.reg("acc", 4, 8);
    let i0 = k.var();
    let body = tile_rows(&mut k, (a, b, c, acc), (n, kd), i0, v);
    k.body = vec![Stmt::For { var: i0, extent: m, step: 4, kind: LoopKind::Parallel, body }];
    k.check().expect("a valid kernel");
    k
}

fn unrolled(var: Var, extent: usize, body: Vec<Stmt>) -> Stmt {
    Stmt::For { var, extent, step: 1, kind: LoopKind::Unrolled, body }
}

fn tile_rows(
    k: &mut Kernel,
    (a, b, c, acc): (BufId, BufId, BufId, Reg),
    (n, kd): (usize, usize),
    i0: Var,
    v: Variant,
) -> Vec<Stmt> {
    let breg = k.reg("b", 4, 2);
    let (j0, k0, ku, ii, jj) = (k.var(), k.var(), k.var(), k.var(), k.var());
    let at = Index::var(ii, 2).plus_var(jj, 1);
    let tile = |body: Stmt| unrolled(ii, 4, vec![unrolled(jj, 2, vec![body])]);
    let (kd_i, n_i) = (kd as i64, n as i64);
    let a_idx = Index::var(i0, kd_i).plus_var(ii, kd_i).plus_var(k0, 1).plus_var(ku, 1);
    let b_idx = match v.layout {
        Layout::RowMajor => Index::var(k0, n_i).plus_var(ku, n_i).plus_var(j0, 1),
        Layout::Packed => Index::var(j0, kd_i).plus_var(k0, 8).plus_var(ku, 8),
    }
    .plus_var(jj, 4);
    let c_idx = Index::var(i0, n_i).plus_var(ii, n_i).plus_var(j0, 1).plus_var(jj, 4);
    let b_val = match v.form {
        Form::Folded => Expr::load(b, b_idx.clone(), 4),
        Form::BRegs => Expr::Reg(breg, Index::var(jj, 1)),
    };
    let fma = Stmt::Set {
        reg: acc,
        index: at.clone(),
        value: Expr::load(a, a_idx, 1).splat().fma(b_val, Expr::Reg(acc, at.clone())),
    };
    let step = match v.form {
        Form::Folded => vec![tile(fma)],
        Form::BRegs => vec![
            unrolled(
                jj,
                2,
                vec![Stmt::Set {
                    reg: breg,
                    index: Index::var(jj, 1),
                    value: Expr::load(b, b_idx, 4),
                }],
            ),
            tile(fma),
        ],
    };
    vec![Stmt::For {
        var: j0,
        extent: n,
        step: 8,
        kind: LoopKind::Serial,
        body: vec![
            tile(Stmt::Set { reg: acc, index: at.clone(), value: Expr::c(0.0).splat() }),
            Stmt::For {
                var: k0,
                extent: kd,
                step: v.k_unroll,
                kind: LoopKind::Serial,
                body: vec![unrolled(ku, v.k_unroll, step)],
            },
            tile(Stmt::Store { buf: c, index: c_idx, value: Expr::Reg(acc, at) }),
        ],
    }]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// GFLOP/s of a kernel over 7 timed runs (each repeating it for at least ~60 ms), each run
/// preceded by a measure of the FMA throughput the core gives at that moment ([`fma_peak`]).
struct Timing {
    median: f64,
    best: f64,
    /// Median of the runs' rates over the FMA throughput measured just before each.
    of_peak_now: f64,
}

fn time(flop: f64, mut run: impl FnMut()) -> Timing {
    run();
    let t0 = Instant::now();
    run();
    let once = t0.elapsed().max(Duration::from_micros(1));
    let reps = (0.06 / once.as_secs_f64()).ceil() as usize;
    let (mut rates, mut ratios) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let peak = fma_peak();
        let t = Instant::now();
        for _ in 0..reps {
            run();
        }
        let rate = flop * reps as f64 / t.elapsed().as_secs_f64() / 1e9;
        rates.push(rate);
        ratios.push(rate / peak);
    }
    let best = rates.iter().cloned().fold(0.0, f64::max);
    Timing { median: median(rates), best, of_peak_now: median(ratios) }
}

fn a_at(i: usize, p: usize) -> f32 {
    ((i * 31 + p * 7) % 1000) as f32 / 1000.0 - 0.5
}

fn b_at(p: usize, j: usize) -> f32 {
    ((p * 13 + j * 17) % 1000) as f32 / 1000.0 - 0.5
}

fn shape(m: usize, n: usize, kd: usize) -> String {
    format!("{m}x{n}x{kd}")
}

fn bench(m: usize, n: usize, kd: usize, v: Variant) -> f64 {
    let kernel = gemm(m, n, kd, v);
    if std::env::var_os("KILN_ASM").is_some() {
        println!("{}", asm_text(&kernel).expect("compiles"));
    }
    let start = Instant::now();
    let compiled = compile(std::slice::from_ref(&kernel)).expect("compiles");
    let compile_time = start.elapsed();
    let f = compiled.get(0);
    let mut arena = vec![0.0f32; m * kd + kd * n + m * n];
    for i in 0..m {
        for p in 0..kd {
            arena[i * kd + p] = a_at(i, p);
        }
    }
    for p in 0..kd {
        for j in 0..n {
            let at = match v.layout {
                Layout::RowMajor => p * n + j,
                Layout::Packed => (j / 8) * 8 * kd + 8 * p + j % 8,
            };
            arena[m * kd + at] = b_at(p, j);
        }
    }
    let work = kernel.work_items() as u64;
    // SAFETY: the arena holds A, B and C; [0, work) are the kernel's work items.
    let mut run = || unsafe { f(arena.as_mut_ptr(), 0, work, 0) };
    run();
    let t = time(2.0 * (m * n * kd) as f64, run);
    for &(i, j) in &[(0, 0), (m - 1, n - 1), (m / 2, n / 3)] {
        let want: f32 = (0..kd).map(|p| a_at(i, p) * b_at(p, j)).sum();
        let got = arena[m * kd + kd * n + i * n + j];
        assert!((got - want).abs() <= 1e-3 * (1.0 + want.abs()), "C[{i},{j}] {got} vs {want}");
    }
    println!(
        "{:>12}  {:>6?} {:>8?} k unroll {}  {:5.1} GFLOP/s median ({:3.0}% of peak, {:3.0}% of \
         peak now), best {:5.1}; compiled in {:.2} ms",
        shape(m, n, kd),
        v.form,
        v.layout,
        v.k_unroll,
        t.median,
        100.0 * t.median / PEAK_GFLOPS,
        100.0 * t.of_peak_now,
        t.best,
        compile_time.as_secs_f64() * 1e3,
    );
    t.median
}

/// The same product in plain Rust (i-k-j loops, auto-vectorised by LLVM for the build's
/// target, usually SSE2 only).
fn baseline(m: usize, n: usize, kd: usize) {
    let a: Vec<f32> = (0..m * kd).map(|x| a_at(x / kd, x % kd)).collect();
    let b: Vec<f32> = (0..kd * n).map(|x| b_at(x / n, x % n)).collect();
    let mut c = vec![0.0f32; m * n];
    let run = || {
        c.iter_mut().for_each(|x| *x = 0.0);
        for i in 0..m {
            let row = &mut c[i * n..(i + 1) * n];
            for p in 0..kd {
                let x = a[i * kd + p];
                for (r, &y) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                    *r += x * y;
                }
            }
        }
        std::hint::black_box(&mut c);
    };
    let t = time(2.0 * (m * n * kd) as f64, run);
    println!(
        "{:>12}  Rust ikj loops (LLVM)      {:5.1} GFLOP/s median ({:3.0}% of peak, {:3.0}% of \
         peak now), best {:5.1}",
        shape(m, n, kd),
        t.median,
        100.0 * t.median / PEAK_GFLOPS,
        100.0 * t.of_peak_now,
        t.best,
    );
}

/// The 128-bit FMA throughput this core gives right now (12 independent `vfmadd` chains on
/// registers, ~10 ms), in GFLOP/s: the machine is shared, so this is the ceiling to compare
/// with.
fn fma_peak() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        #[target_feature(enable = "fma")]
        unsafe fn chains(iters: usize) -> f32 {
            let (x, y) = (_mm_set1_ps(0.999_999), _mm_set1_ps(1e-7));
            let mut acc = [_mm_set1_ps(1.0); 12];
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm_fmadd_ps(*a, x, y);
                }
            }
            acc.iter().map(|&a| _mm_cvtss_f32(a)).sum()
        }
        if std::arch::is_x86_feature_detected!("fma") {
            let iters = 3_000_000;
            let t = Instant::now();
            // SAFETY: the CPU has FMA.
            std::hint::black_box(unsafe { chains(std::hint::black_box(iters)) });
            return (iters * 12 * 8) as f64 / t.elapsed().as_secs_f64() / 1e9;
        }
    }
    PEAK_GFLOPS
}

fn main() {
    // `cargo bench` passes `--bench`; another argument selects shapes by substring.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let now = median((0..7).map(|_| fma_peak()).collect());
    println!(
        "GEMM, 4x8 register tiles, one core; nominal 128-bit FMA peak {PEAK_GFLOPS:.1} GFLOP/s, \
         measured now {now:.1} GFLOP/s"
    );
    let variants = [
        Variant { form: Form::Folded, layout: Layout::RowMajor, k_unroll: 1 },
        Variant { form: Form::BRegs, layout: Layout::RowMajor, k_unroll: 4 },
        Variant { form: Form::BRegs, layout: Layout::Packed, k_unroll: 4 },
        Variant { form: Form::BRegs, layout: Layout::Packed, k_unroll: 8 },
    ];
    for (m, n, kd) in [(512, 512, 512), (256, 256, 256), (7744, 64, 288), (8, 16, 256)] {
        if filter.as_ref().is_some_and(|f| !shape(m, n, kd).contains(f.as_str())) {
            continue;
        }
        baseline(m, n, kd);
        for v in variants {
            bench(m, n, kd, v);
        }
    }
}
