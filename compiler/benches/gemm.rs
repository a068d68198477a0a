//! GEMM throughput of generated code on one core, in two parts:
//! - micro-kernels: `C[M,N] = A[M,K] B[K,N]` (N a multiple of 8) with hand-built 4x8 register
//!   tiles (8 f32x4 accumulators, the k loop innermost, the tile unrolled inside it), B row-major
//!   or packed; the last shape (8x16x256: 24 KB of A and B, in L1) measures the micro-kernel
//!   alone;
//! - lowered ops: the kernels that `lower` really produces (packing included) for the matmuls
//!   and convolutions of the example models at batch 64, run one after another on one thread.
//!
//! Prints GFLOP/s (median of 7 runs), the fraction of the nominal 128-bit FMA peak (16
//! flop/cycle: Cranelift only has 128-bit vectors on x86-64) and, as a measure of how busy the
//! shared machine is, plain Rust on the same product. Rates are per second of the thread's CPU
//! time (`CLOCK_THREAD_CPUTIME_ID`), which time slices lost to other processes do not inflate.
//!
//! `cargo bench -p kiln-compiler --bench gemm [filter]` (a substring of the shape or op
//! name); `KILN_ASM=1` also prints the machine code (Cranelift's VCode after register
//! allocation).

use std::collections::HashMap;
use std::time::Instant;

use kiln_compiler::codegen::{asm_text, compile};
use kiln_compiler::kernel::{BufId, Buffer, Expr, Index, Kernel, LoopKind, Reg, Stmt, Var};
use kiln_compiler::lower::{lower, scratch_len, Buffers};
use kiln_ir::ops::{Conv2d, Conv2dGradFilter, Conv2dGradInput, Input, MatMul, PadMode, Padding};
use kiln_ir::{Graph, NodeId, Op, Shape};

/// 16 flop/cycle (2 FMA pipes x 4 lanes x 2) at the ~3.56 GHz boost clock of the 2-core AMD
/// EPYC where the Cranelift notes were measured (the historical yardstick of this bench).
const PEAK_GFLOPS: f64 = 16.0 * 3.56;

/// 16 flop/cycle at the nominal clock in this CPU's model name (`... @ 2.50GHz`), if any.
fn nominal_peak() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let name = info.lines().find(|l| l.starts_with("model name"))?;
    let ghz = name.rsplit('@').next()?.trim().strip_suffix("GHz")?.parse::<f64>().ok()?;
    Some(16.0 * ghz)
}

/// Seconds of CPU time used by the calling thread.
fn cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, t: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `t` is a valid timespec; this clock exists on Linux.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.sec as f64 + t.nsec as f64 * 1e-9
}

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
    let t0 = cpu_seconds();
    run();
    let once = (cpu_seconds() - t0).max(1e-6);
    let reps = (0.06 / once).ceil() as usize;
    let (mut rates, mut ratios) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let peak = fma_peak();
        let t = cpu_seconds();
        for _ in 0..reps {
            run();
        }
        let rate = flop * reps as f64 / (cpu_seconds() - t) / 1e9;
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
    let what = format!("{:?} {:?} k unroll {}", v.form, v.layout, v.k_unroll);
    report(&shape(m, n, kd), &what, &t);
    println!("{:>18} compiled in {:.2} ms", "", compile_time.as_secs_f64() * 1e3);
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
    report(&shape(m, n, kd), "Rust ikj loops (LLVM)", &t);
}

/// One line of results: median GFLOP/s, as a fraction of the historical yardstick
/// ([`PEAK_GFLOPS`]), of this CPU's nominal peak and of the FMA throughput measured around
/// the runs, and the best run.
fn report(case: &str, what: &str, t: &Timing) {
    let nominal = nominal_peak().map_or(String::new(), |p| {
        format!(", {:3.0}% of this CPU's nominal", 100.0 * t.median / p)
    });
    println!(
        "{case:<18} {what:<26} {:5.1} GFLOP/s median ({:3.0}% of {PEAK_GFLOPS:.1}{nominal}, \
         {:3.0}% of peak now), best {:5.1}",
        t.median,
        100.0 * t.median / PEAK_GFLOPS,
        100.0 * t.of_peak_now,
        t.best,
    );
}

/// Buffers laid out one after another in the bench's arena.
struct Layout1(HashMap<NodeId, Buffer>);

impl Buffers for Layout1 {
    fn of(&self, node: NodeId) -> Buffer {
        self.0[&node].clone()
    }
}

/// One op of an example model at batch 64.
struct OpCase {
    name: String,
    op: Op,
    operands: Vec<Vec<usize>>,
    /// `2 M N K` of its product.
    flop: f64,
}

fn conv_case(name: &str, x: [usize; 4], w: [usize; 4], pad: PadMode) -> Vec<OpCase> {
    let pad = Padding::Mode(pad);
    let stride = [1, 1];
    let p = pad.resolve([x[1], x[2]], [w[0], w[1]], stride);
    let (oh, ow) = (x[1] + p[0] + p[1] - w[0] + 1, x[2] + p[2] + p[3] - w[1] + 1);
    let y = vec![x[0], oh, ow, w[3]];
    let flop = 2.0 * (x[0] * oh * ow * w[0] * w[1] * w[2] * w[3]) as f64;
    let fwd = Conv2d { stride, pad };
    let gi = Conv2dGradInput { stride, pad, input_hw: [x[1], x[2]] };
    let gf = Conv2dGradFilter { stride, pad, kernel_hw: [w[0], w[1]] };
    let case = |suffix: &str, op: Op, operands: Vec<Vec<usize>>| OpCase {
        name: format!("{name}{suffix}"),
        op,
        operands,
        flop,
    };
    vec![
        case("", fwd.into(), vec![x.to_vec(), w.to_vec()]),
        case(" dx", gi.into(), vec![y.clone(), w.to_vec()]),
        case(" dw", gf.into(), vec![x.to_vec(), y]),
    ]
}

fn matmul_case(name: &str, ta: bool, tb: bool, m: usize, k: usize, n: usize) -> OpCase {
    let a = if ta { vec![k, m] } else { vec![m, k] };
    let b = if tb { vec![n, k] } else { vec![k, n] };
    let op = MatMul { transpose_a: ta, transpose_b: tb }.into();
    let flop = 2.0 * (m * n * k) as f64;
    OpCase { name: name.to_string(), op, operands: vec![a, b], flop }
}

/// The matmuls and convolutions that dominate the example models' training steps.
fn model_ops() -> Vec<OpCase> {
    let mut ops = vec![
        matmul_case("mlp dense_1", false, false, 64, 784, 128),
        matmul_case("mlp dense_1 dw", true, false, 784, 64, 128),
        matmul_case("mlp dense_2 dx", false, true, 64, 10, 128),
    ];
    ops.extend(conv_case("keras conv2d_1", [64, 28, 28, 1], [3, 3, 1, 32], PadMode::Valid));
    ops.extend(conv_case("keras conv2d_2", [64, 13, 13, 32], [3, 3, 32, 64], PadMode::Valid));
    ops.extend(conv_case("lenet conv2d_1", [64, 28, 28, 1], [5, 5, 1, 6], PadMode::Same));
    ops.extend(conv_case("lenet conv2d_2", [64, 14, 14, 6], [5, 5, 6, 16], PadMode::Valid));
    ops
}

/// Lowers one op as `lower` does for a model, compiles its kernels and times them run one
/// after another on this thread (all work items of each).
fn bench_op(case: &OpCase) {
    let mut g = Graph::new();
    let ids: Vec<NodeId> = (case.operands.iter().enumerate())
        .map(|(i, d)| g.leaf(Input {}, Shape::from(&d[..]), &format!("x{i}")).expect("a leaf"))
        .collect();
    let y = g.add(case.op.clone(), &ids, "y").expect("a valid op");
    let (mut bufs, mut at) = (HashMap::new(), 0);
    for &id in ids.iter().chain([&y]) {
        let len = g.node(id).shape.numel();
        bufs.insert(id, Buffer { name: g.node(id).name.clone(), offset: at, len });
        at += len;
    }
    let scratch_n = scratch_len(&g, y);
    let scratch =
        (scratch_n > 0).then(|| Buffer { name: "scratch".into(), offset: at, len: scratch_n });
    let kernels = lower(&g, y, &Layout1(bufs), scratch.as_ref()).expect("lowers");
    let compiled = compile(&kernels).expect("compiles");
    let mut arena: Vec<f32> =
        (0..at + scratch_n).map(|i| ((i * 7919) % 1000) as f32 / 1e3 - 0.5).collect();
    let work: Vec<u64> = kernels.iter().map(|k| k.work_items() as u64).collect();
    let mut run = || {
        for (i, &w) in work.iter().enumerate() {
            // SAFETY: the kernels were checked and the arena holds all their buffers.
            unsafe { compiled.get(i)(arena.as_mut_ptr(), 0, w, 0) };
        }
    };
    let t = time(case.flop, &mut run);
    let names: Vec<&str> =
        kernels.iter().map(|k| k.name.strip_prefix("y.").unwrap_or(&k.name)).collect();
    let what = format!("{} ({} kernels)", case.op.name(), kernels.len());
    report(&case.name, &what, &t);
    println!("{:>18} {}", "", names.join(", "));
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
            let t = cpu_seconds();
            // SAFETY: the CPU has FMA.
            std::hint::black_box(unsafe { chains(std::hint::black_box(iters)) });
            return (iters * 12 * 8) as f64 / (cpu_seconds() - t) / 1e9;
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
    let selected = |name: &str| filter.as_ref().is_none_or(|f| name.contains(f.as_str()));
    println!("lowered ops (what `kiln` runs, packing included), one thread:");
    for case in model_ops() {
        if selected(&case.name) || selected(case.op.name()) {
            bench_op(&case);
        }
    }
    println!("micro-kernels (hand-built):");
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
