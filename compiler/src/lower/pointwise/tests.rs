//! Every op lowered here, run with the kernel evaluator and compared with its reference
//! semantics; plus the kernels' structure (parallel, vector lanes, tails) and the invariance of
//! results under any split of the parallel work.

use std::collections::HashMap;

use kiln_ir::ops::{
    counter_uniform, Add, Assign, BiasAdd, BinaryCrossEntropy, BinaryCrossEntropyGrad, Broadcast,
    Concat, Constant, Div, Dropout, Elu, Exp, GaussianNoise, Init, Input, LeakyRelu, Log, Maxout,
    MaxoutGrad, MeanSquaredError, Mul, Neg, OneHot, Parameter, ReduceSum, Relu, Sigmoid, Slice,
    Softmax, SoftmaxCrossEntropy, Sqrt, Step, Sub, Tanh, Transpose,
};
use kiln_ir::{Graph, NodeId, Op, Shape, Tensor};
use proptest::prelude::*;

use super::elementwise::keep_threshold;
use super::loss::bce_range;
use super::nest::{CHUNK, PAR_MIN};
use crate::kernel::print::print;
use crate::kernel::{eval, Buffer, Kernel, LoopKind, Stmt};
use crate::lower::testing::{assert_close, random, run_op, Lcg, Lowered};
use crate::lower::{lower, Buffers};

/// Sizes around the vector width, the unrolled block, the chunk and the parallel threshold.
const SIZES: &[usize] = &[1, 3, 4, 5, 7, 8, 10, 16, 37, 64, 1000, 4096, 4097, 5000];

fn check(what: &str, op: impl Into<Op>, operands: &[Tensor], step: u64, tol: f64) -> Lowered {
    let r = run_op(op, operands, step);
    assert_close(what, &r.got, &r.want, tol);
    r
}

fn tensor(dims: &[usize], data: Vec<f64>) -> Tensor {
    Tensor::new(Shape::new(dims.to_vec()), data)
}

fn is_parallel(k: &Kernel) -> bool {
    matches!(k.body.as_slice(), [Stmt::For { kind: LoopKind::Parallel, .. }])
}

/// True when the kernel loads 4 lanes at once.
fn has_vector_loads(k: &Kernel) -> bool {
    print(k).contains("..+4]")
}

/// Nonzero values in ±[0.5, 2).
fn nonzero(rng: &mut Lcg, dims: &[usize]) -> Tensor {
    let t = random(rng, dims, 0.5, 2.0);
    let data = t.data.iter().map(|&v| if rng.uniform() < 0.5 { -v } else { v }).collect();
    Tensor::new(t.shape, data)
}

/// Integer values in [0, 4), so that maxout groups have ties.
fn with_ties(rng: &mut Lcg, dims: &[usize]) -> Tensor {
    random(rng, dims, 0.0, 4.0).map(f64::floor)
}

// ---------------------------------------------------------------------------------------------
// A harness over whole graphs (assign writes another node's buffer, constants are leaves).

struct Layout(HashMap<NodeId, Buffer>);

impl Buffers for Layout {
    fn of(&self, node: NodeId) -> Buffer {
        self.0[&node].clone()
    }
}

/// Every node of `g` in its own buffer, one after another; returns the layout and its length.
fn lay_out(g: &Graph) -> (Layout, usize) {
    let mut map = HashMap::new();
    let mut offset = 0;
    for id in g.node_ids() {
        let n = g.node(id);
        let len = n.shape.numel();
        map.insert(id, Buffer { name: n.name.clone(), offset, len });
        offset += len;
    }
    (Layout(map), offset)
}

/// An arena of NaN with `values` written into their nodes' buffers.
fn arena(layout: &Layout, len: usize, values: &[(NodeId, &Tensor)]) -> Vec<f32> {
    let mut arena = vec![f32::NAN; len];
    for (id, t) in values {
        let b = &layout.0[id];
        assert_eq!(b.len, t.data.len());
        for (slot, v) in arena[b.offset..b.offset + b.len].iter_mut().zip(&t.data) {
            *slot = *v as f32;
        }
    }
    arena
}

fn slice_of<'a>(arena: &'a [f32], layout: &Layout, id: NodeId) -> &'a [f32] {
    let b = &layout.0[&id];
    &arena[b.offset..b.offset + b.len]
}

/// Runs every kernel, each one's work items cut into random ranges run in reverse order.
fn run_split(kernels: &[Kernel], arena: &mut [f32], step: u64, rng: &mut Lcg) {
    for k in kernels {
        let items = k.work_items();
        let mut cuts = vec![0, items];
        for _ in 0..3 {
            cuts.push((rng.uniform() * items as f64) as usize);
        }
        cuts.sort_unstable();
        for w in cuts.windows(2).rev() {
            eval::run_range(k, arena, w[0], w[1], step);
        }
    }
}

/// A graph with one input per operand and `op` applied to them.
fn graph_of(op: impl Into<Op>, operands: &[Tensor]) -> (Graph, Vec<NodeId>, NodeId) {
    let mut g = Graph::new();
    let ids: Vec<NodeId> = operands
        .iter()
        .enumerate()
        .map(|(i, t)| g.leaf(Input {}, t.shape.clone(), &format!("x{i}")).unwrap())
        .collect();
    let y = g.add(op, &ids, "y").unwrap();
    (g, ids, y)
}

// ---------------------------------------------------------------------------------------------
// Elementwise.

fn unary_ops() -> Vec<(Op, f64, f64, f64)> {
    vec![
        (Neg {}.into(), -3.0, 3.0, 1e-6),
        (Exp {}.into(), -5.0, 5.0, 1e-5),
        (Log {}.into(), 0.01, 10.0, 1e-5),
        (Sqrt {}.into(), 0.0, 10.0, 1e-6),
        (Relu {}.into(), -3.0, 3.0, 1e-6),
        (LeakyRelu { alpha: 0.2 }.into(), -3.0, 3.0, 1e-6),
        (Elu { alpha: 1.5 }.into(), -5.0, 3.0, 1e-5),
        (Sigmoid {}.into(), -20.0, 20.0, 1e-6),
        (Tanh {}.into(), -4.0, 4.0, 1e-5),
        (Step {}.into(), -3.0, 3.0, 1e-6),
    ]
}

#[test]
fn unary_ops_match_reference_at_every_size() {
    let mut rng = Lcg(1);
    for (op, lo, hi, tol) in unary_ops() {
        for &n in SIZES {
            let x = random(&mut rng, &[n], lo, hi);
            check(&format!("{} n={n}", op.name()), op.clone(), &[x], 0, tol);
        }
        let x = random(&mut rng, &[3, 5, 7], lo, hi);
        check(&format!("{} [3,5,7]", op.name()), op.clone(), &[x], 0, tol);
        let x = random(&mut rng, &[], lo, hi);
        check(&format!("{} scalar", op.name()), op.clone(), &[x], 0, tol);
    }
}

#[test]
fn unary_ops_at_special_values() {
    let values = vec![0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 30.0, -30.0, 80.0, -80.0, 88.0, -88.0];
    let x = tensor(&[values.len()], values);
    for (op, _, _, tol) in unary_ops() {
        if matches!(op, Op::Log(_) | Op::Sqrt(_)) {
            continue;
        }
        check(&format!("{} special", op.name()), op, std::slice::from_ref(&x), 0, tol);
    }
    // Sigmoid keeps its relative precision far out on the negative side.
    let r = run_op(Sigmoid {}, &[tensor(&[2], vec![-80.0, -30.0])], 0);
    for (g, w) in r.got.data.iter().zip(&r.want.data) {
        assert!(((g - w) / w).abs() < 1e-5, "sigmoid tail: {g} vs {w}");
    }
}

#[test]
fn binary_ops_match_reference_with_scalars_on_either_side() {
    let mut rng = Lcg(2);
    let ops: Vec<Op> = vec![Add {}.into(), Sub {}.into(), Mul {}.into(), Div {}.into()];
    for op in ops {
        for &n in SIZES {
            let name = op.name();
            let a = random(&mut rng, &[n], -2.0, 2.0);
            let b = nonzero(&mut rng, &[n]);
            let (sa, sb) = (random(&mut rng, &[], -2.0, 2.0), nonzero(&mut rng, &[]));
            check(&format!("{name} n={n}"), op.clone(), &[a.clone(), b.clone()], 0, 1e-6);
            check(&format!("{name} scalar, n={n}"), op.clone(), &[sa.clone(), b], 0, 1e-6);
            let r = check(&format!("{name} n={n}, scalar"), op.clone(), &[a, sb.clone()], 0, 1e-6);
            if n >= 64 {
                let text: String = r.kernels.iter().map(print).collect();
                assert!(text.contains("splat("), "{name}: the scalar is splat:\n{text}");
            }
            check(&format!("{name} scalar, scalar"), op.clone(), &[sa, sb], 0, 1e-6);
        }
        let a = random(&mut rng, &[3, 4, 5], -2.0, 2.0);
        let s = nonzero(&mut rng, &[]);
        check("[3,4,5] with a scalar", op.clone(), &[a.clone(), s.clone()], 0, 1e-6);
        check("a scalar with [3,4,5]", op.clone(), &[s, a], 0, 1e-6);
    }
}

#[test]
fn constant_operands_are_inlined() {
    let mut rng = Lcg(3);
    for n in [1, 37, 5000] {
        let mut g = Graph::new();
        let x = g.leaf(Input {}, Shape::new([n]), "x").unwrap();
        let half = g.leaf(Constant { value: 0.5 }, Shape::scalar(), "half").unwrap();
        let ones = g.leaf(Constant { value: 1.5 }, Shape::new([n]), "ones").unwrap();
        let y = g.add(Mul {}, &[x, half], "y").unwrap();
        let z = g.add(Sub {}, &[ones, x], "z").unwrap();
        let (layout, len) = lay_out(&g);
        let xv = random(&mut rng, &[n], -2.0, 2.0);
        // The constants' buffers stay NaN: a kernel that loaded them would produce NaN.
        let mut mem = arena(&layout, len, &[(x, &xv)]);
        for node in [y, z] {
            let kernels = lower(&g, node, &layout, None).unwrap();
            for k in &kernels {
                assert!(
                    k.bufs.iter().all(|b| b.name != "half" && b.name != "ones"),
                    "{}",
                    print(k)
                );
                eval::run(k, &mut mem, 0);
            }
        }
        for i in 0..n {
            let xi = xv.data[i] as f32;
            assert_eq!(slice_of(&mem, &layout, y)[i], xi * 0.5);
            assert_eq!(slice_of(&mem, &layout, z)[i], 1.5 - xi);
        }
    }
}

#[test]
fn assign_writes_the_target_buffer() {
    let mut rng = Lcg(4);
    for n in [1, 5, 37, 5000] {
        let mut g = Graph::new();
        let p = g.leaf(Parameter { init: Init::Zeros, seed: 0 }, Shape::new([n]), "p").unwrap();
        let v = g.leaf(Input {}, Shape::new([n]), "v").unwrap();
        let a = g.add(Assign {}, &[p, v], "a").unwrap();
        let three = g.leaf(Constant { value: 3.0 }, Shape::new([n]), "three").unwrap();
        let q = g.leaf(Parameter { init: Init::Zeros, seed: 0 }, Shape::new([n]), "q").unwrap();
        let b = g.add(Assign {}, &[q, three], "b").unwrap();
        let (layout, len) = lay_out(&g);
        let old = Tensor::full(Shape::new([n]), 7.0);
        let value = random(&mut rng, &[n], -2.0, 2.0);
        let mut mem = arena(&layout, len, &[(p, &old), (q, &old), (v, &value)]);
        for node in [a, b] {
            for k in lower(&g, node, &layout, None).unwrap() {
                eval::run(&k, &mut mem, 0);
            }
        }
        let want: Vec<f32> = value.data.iter().map(|&x| x as f32).collect();
        assert_eq!(
            slice_of(&mem, &layout, p),
            want.as_slice(),
            "n={n}: the target holds the value"
        );
        assert_eq!(slice_of(&mem, &layout, v), want.as_slice(), "n={n}: the value is unchanged");
        assert!(slice_of(&mem, &layout, q).iter().all(|&x| x == 3.0), "n={n}: a constant value");
    }
}

// ---------------------------------------------------------------------------------------------
// Random ops.

#[test]
fn keep_threshold_matches_the_f64_comparison() {
    let scale = (1u32 << 24) as f64;
    let mut rng = Lcg(5);
    let mut rates = vec![0.0, 0.1, 0.25, 0.5, 0.9, 1.0 - 1e-9];
    for _ in 0..200 {
        let k = (rng.uniform() * scale).floor();
        rates.extend([k / scale, (k + 1e-3) / scale, (k - 1e-3).max(0.0) / scale]);
        rates.push(rng.uniform());
    }
    for rate in rates {
        let t = keep_threshold(rate);
        let k0 = (rate * scale).floor() as i64;
        for k in (k0 - 2).max(0)..(k0 + 3).min(1 << 24) {
            let u = k as f64 / scale;
            assert_eq!((u as f32) >= t, u >= rate, "rate {rate}, u {u}");
        }
    }
}

#[test]
fn dropout_matches_reference_masks() {
    let mut rng = Lcg(6);
    for step in [0, 7] {
        for n in [1, 5, 37, 1000, 4097] {
            for rate in [0.0, 0.1, 0.5, 0.9] {
                let x = random(&mut rng, &[n], -2.0, 2.0);
                let r = check(
                    &format!("dropout n={n} rate={rate} step={step}"),
                    Dropout { rate, seed: 42 },
                    &[x],
                    step,
                    1e-6,
                );
                if n == 1000 && rate == 0.5 {
                    let zeros = r.got.data.iter().filter(|&&v| v == 0.0).count();
                    assert!((400..600).contains(&zeros), "{zeros} of 1000 dropped");
                }
            }
        }
    }
    // Different steps draw different masks.
    let x = Tensor::full(Shape::new([64]), 1.0);
    let a = run_op(Dropout { rate: 0.5, seed: 1 }, std::slice::from_ref(&x), 0).got;
    let b = run_op(Dropout { rate: 0.5, seed: 1 }, &[x], 7).got;
    assert_ne!(a.data, b.data);
}

#[test]
fn dropout_keeps_the_mask_at_the_rate_boundary() {
    // A rate equal to an element's uniform keeps it; a rate a hair above drops it (f32(rate)
    // would round back onto the uniform and keep it).
    let x = Tensor::full(Shape::new([8]), 1.0);
    for i in 0..8u64 {
        let u = counter_uniform(11, 7, i);
        for (rate, kept) in [(u, true), (u + 1e-12, false), (u - 1e-12, true)] {
            let r = check(
                &format!("dropout rate {rate}"),
                Dropout { rate, seed: 11 },
                std::slice::from_ref(&x),
                7,
                1e-6,
            );
            assert_eq!(r.got.data[i as usize] != 0.0, kept, "element {i} at rate {rate}");
        }
    }
}

#[test]
fn gaussian_noise_matches_reference() {
    let mut rng = Lcg(7);
    for step in [0, 7] {
        for n in [1, 5, 37, 1000, 4097] {
            for stddev in [0.1, 1.0] {
                let x = random(&mut rng, &[n], -2.0, 2.0);
                let what = format!("noise n={n} stddev={stddev} step={step}");
                check(&what, GaussianNoise { stddev, seed: 9 }, &[x], step, 1e-5);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reductions and movement.

/// Every sorted subset of `0..rank`.
fn axis_sets(rank: usize) -> Vec<Vec<usize>> {
    (0..1u32 << rank).map(|m| (0..rank).filter(|&a| m & (1 << a) != 0).collect()).collect()
}

#[test]
fn reduce_sum_over_every_axis_set() {
    let mut rng = Lcg(8);
    let shapes: &[&[usize]] =
        &[&[3, 4, 5], &[6, 7, 37], &[8, 1, 9], &[1, 5, 1], &[2, 3, 4, 5], &[37], &[5, 3]];
    for dims in shapes {
        for axes in axis_sets(dims.len()) {
            let x = random(&mut rng, dims, -1.0, 1.0);
            check(&format!("reduce_sum {dims:?} over {axes:?}"), ReduceSum { axes }, &[x], 0, 1e-5);
        }
    }
}

#[test]
fn reduce_sum_large_cases() {
    let mut rng = Lcg(9);
    // The bias gradient: four parallel tiles of 16 columns, then 4 + 2 remaining columns.
    let x = random(&mut rng, &[2000, 70], -1.0, 1.0);
    let r = check("bias grad [2000,70]", ReduceSum { axes: vec![0] }, &[x], 0, 1e-5);
    assert_eq!(r.kernels.len(), 2);
    assert!(is_parallel(&r.kernels[0]) && r.kernels[0].work_items() == 4);
    assert!(!is_parallel(&r.kernels[1]) && has_vector_loads(&r.kernels[1]));
    // [N, H, W, C] over [0, 1, 2].
    let x = random(&mut rng, &[8, 13, 13, 16], -1.0, 1.0);
    check("bias grad [8,13,13,16]", ReduceSum { axes: vec![0, 1, 2] }, &[x], 0, 1e-5);
    // Row sums, parallel over rows.
    let x = random(&mut rng, &[70, 2000], -1.0, 1.0);
    let r = check("rows [70,2000]", ReduceSum { axes: vec![1] }, &[x], 0, 1e-5);
    assert!(is_parallel(&r.kernels[0]) && r.kernels[0].work_items() == 70);
    // Everything: one serial kernel.
    for n in [4097, 5000, 33] {
        let x = random(&mut rng, &[n], -1.0, 1.0);
        let r = check(&format!("sum of {n}"), ReduceSum { axes: vec![0] }, &[x], 0, 1e-5);
        assert_eq!(r.kernels.len(), 1);
        assert!(!is_parallel(&r.kernels[0]));
    }
    // A sum over H and W of NHWC: column sums per image, parallel over images.
    let x = random(&mut rng, &[6, 300, 37], -1.0, 1.0);
    let r = check("[6,300,37] over [1]", ReduceSum { axes: vec![1] }, &[x], 0, 1e-5);
    assert!(r.kernels.iter().all(|k| is_parallel(k) && k.work_items() == 6));
    // The general case, parallel over its leading kept axis, serial otherwise.
    let x = random(&mut rng, &[20, 10, 30, 20], -1.0, 1.0);
    let r = check("[20,10,30,20] over [1,3]", ReduceSum { axes: vec![1, 3] }, &[x], 0, 1e-5);
    assert!(r.kernels.iter().any(|k| is_parallel(k) && k.work_items() == 20));
    let x = random(&mut rng, &[30, 40, 50], -1.0, 1.0);
    let r = check("[30,40,50] over [0,2]", ReduceSum { axes: vec![0, 2] }, &[x], 0, 1e-5);
    assert!(!r.kernels.iter().any(is_parallel));
}

#[test]
fn broadcast_matches_reference() {
    let mut rng = Lcg(10);
    let cases: &[(&[usize], &[usize], &[usize])] = &[
        (&[7], &[5, 7], &[0]),
        (&[5], &[5, 7], &[1]),
        (&[2, 3], &[2, 4, 3], &[1]),
        (&[4], &[2, 4, 3], &[0, 2]),
        (&[], &[5, 6], &[0, 1]),
        (&[64], &[100, 64], &[0]),
        (&[100], &[100, 64], &[1]),
        (&[3, 5], &[3, 5], &[]),
        (&[6], &[1, 6, 1], &[0, 2]),
    ];
    for &(from, to, axes) in cases {
        let x = random(&mut rng, from, -1.0, 1.0);
        let op = Broadcast { shape: to.to_vec(), axes: axes.to_vec() };
        check(&format!("broadcast {from:?} to {to:?}"), op, &[x], 0, 1e-6);
    }
}

#[test]
fn bias_add_vectorised_along_channels() {
    let mut rng = Lcg(11);
    let shapes: &[&[usize]] = &[&[2, 5, 5, 6], &[64, 10], &[3], &[7, 64], &[1000, 37], &[4, 4]];
    for dims in shapes {
        let x = random(&mut rng, dims, -1.0, 1.0);
        let b = random(&mut rng, &[dims[dims.len() - 1]], -1.0, 1.0);
        let r = check(&format!("bias_add {dims:?}"), BiasAdd {}, &[x, b], 0, 1e-6);
        if dims[dims.len() - 1] >= 4 {
            assert!(has_vector_loads(&r.kernels[0]), "{}", print(&r.kernels[0]));
        }
        if dims.iter().product::<usize>() >= PAR_MIN {
            assert!(is_parallel(&r.kernels[0]));
        }
    }
}

#[test]
fn transpose_every_permutation() {
    let mut rng = Lcg(12);
    let perms: &[&[usize]] =
        &[&[0, 1, 2], &[0, 2, 1], &[1, 0, 2], &[1, 2, 0], &[2, 0, 1], &[2, 1, 0]];
    let x = random(&mut rng, &[3, 4, 5], -1.0, 1.0);
    for perm in perms {
        check(
            &format!("transpose {perm:?}"),
            Transpose { perm: perm.to_vec() },
            std::slice::from_ref(&x),
            0,
            0.0,
        );
    }
    let x = random(&mut rng, &[64, 100], -1.0, 1.0);
    let r = check("transpose [64,100]", Transpose { perm: vec![1, 0] }, &[x], 0, 0.0);
    assert!(is_parallel(&r.kernels[0]));
    let x = random(&mut rng, &[2, 3, 8], -1.0, 1.0);
    let r =
        check("transpose keeping the last axis", Transpose { perm: vec![1, 0, 2] }, &[x], 0, 0.0);
    assert!(has_vector_loads(&r.kernels[0]));
}

#[test]
fn concat_and_slice_along_every_axis() {
    let mut rng = Lcg(13);
    for axis in 0..3 {
        let mut dims = [vec![2, 3, 5], vec![2, 3, 5], vec![2, 3, 5]];
        for (i, d) in dims.iter_mut().enumerate() {
            d[axis] = i + 1;
        }
        let xs: Vec<Tensor> = dims.iter().map(|d| random(&mut rng, d, -1.0, 1.0)).collect();
        check(&format!("concat axis {axis}"), Concat { axis }, &xs, 0, 0.0);
        let x = random(&mut rng, &[4, 6, 10], -1.0, 1.0);
        for (start, len) in [(0, 1), (1, 3), (2, 2)] {
            let op = Slice { axis, start, len };
            check(
                &format!("slice axis {axis} {start}+{len}"),
                op,
                std::slice::from_ref(&x),
                0,
                0.0,
            );
        }
    }
    let xs = vec![random(&mut rng, &[100, 40], -1.0, 1.0), random(&mut rng, &[100, 24], -1.0, 1.0)];
    check("concat big", Concat { axis: 1 }, &xs, 0, 0.0);
    let x = random(&mut rng, &[100, 64], -1.0, 1.0);
    check("slice big", Slice { axis: 1, start: 3, len: 50 }, &[x], 0, 0.0);
}

// ---------------------------------------------------------------------------------------------
// Softmax, maxout, losses.

#[test]
fn softmax_is_stable_and_matches_reference() {
    let mut rng = Lcg(14);
    let x = random(&mut rng, &[3, 10], -3.0, 3.0);
    check("softmax [3,10]", Softmax {}, &[x], 0, 1e-6);
    let big = random(&mut rng, &[2, 7], -80.0, 80.0);
    let r = check("softmax [2,7] ±80", Softmax {}, &[big], 0, 1e-6);
    assert!(r.got.data.iter().all(|v| v.is_finite()));
    let huge = tensor(&[2, 7], (0..14).map(|i| if i % 2 == 0 { 80.0 } else { -80.0 }).collect());
    check("softmax [2,7] at ±80", Softmax {}, &[huge], 0, 1e-6);
    // exp overflows f32 above ~88.7 and underflows below ~-103: only the shifted form works.
    let mut data: Vec<f64> = (0..7).map(|i| 100.0 - i as f64).collect();
    data.extend((0..7).map(|i| -120.0 + 0.5 * i as f64));
    let r = check("softmax [2,7] at ±100", Softmax {}, &[tensor(&[2, 7], data)], 0, 1e-6);
    assert!(r.got.data.iter().all(|v| v.is_finite()));
    for dims in [&[5, 3][..], &[1, 37], &[4, 4], &[9], &[200, 33], &[2, 3, 64]] {
        let x = random(&mut rng, dims, -10.0, 10.0);
        let r = check(&format!("softmax {dims:?}"), Softmax {}, &[x], 0, 1e-6);
        if dims.iter().product::<usize>() >= PAR_MIN {
            assert!(is_parallel(&r.kernels[0]));
        }
    }
}

#[test]
fn maxout_and_its_gradient_pick_the_first_maximum() {
    let mut rng = Lcg(15);
    for pieces in [1, 2, 3, 12] {
        for dims in [vec![4, 12], vec![3, 2, 24], vec![5000, 12]] {
            let x = with_ties(&mut rng, &dims);
            check(
                &format!("maxout {dims:?}/{pieces}"),
                Maxout { pieces },
                std::slice::from_ref(&x),
                0,
                0.0,
            );
            let mut gdims = dims.clone();
            *gdims.last_mut().unwrap() /= pieces;
            let g = random(&mut rng, &gdims, -1.0, 1.0);
            let op = MaxoutGrad { pieces };
            check(&format!("maxout_grad {dims:?}/{pieces}"), op, &[x, g], 0, 0.0);
        }
    }
}

#[test]
fn one_hot_matches_reference_including_invalid_labels() {
    let labels = tensor(&[7], vec![0.0, 3.0, 9.0, -1.0, 10.0, 2.5, 9.0]);
    check("one_hot", OneHot { classes: 10 }, &[labels], 0, 0.0);
    let mut rng = Lcg(16);
    let labels = random(&mut rng, &[500], 0.0, 10.0).map(f64::floor);
    let r = check("one_hot 500", OneHot { classes: 10 }, &[labels], 0, 0.0);
    assert!(is_parallel(&r.kernels[0]));
    check("one_hot 1", OneHot { classes: 1 }, &[tensor(&[1], vec![0.0])], 0, 0.0);
}

#[test]
fn softmax_cross_entropy_matches_reference() {
    let mut rng = Lcg(17);
    for (n, c, scale) in
        [(5, 10, 3.0), (5, 10, 80.0), (3, 37, 5.0), (4, 3, 2.0), (1, 1, 1.0), (64, 10, 10.0)]
    {
        let x = random(&mut rng, &[n, c], -scale, scale);
        let labels = random(&mut rng, &[n], 0.0, c as f64).map(f64::floor);
        let w = weights(n);
        let r = check(
            &format!("sce [{n},{c}]±{scale}"),
            SoftmaxCrossEntropy {},
            &[x, labels, w],
            0,
            1e-5,
        );
        assert_eq!(r.kernels.len(), 1);
        assert!(!is_parallel(&r.kernels[0]));
    }
}

#[test]
fn mse_and_binary_cross_entropy_match_reference() {
    let mut rng = Lcg(18);
    for &n in SIZES {
        for rows in [1, 3] {
            let shape = [rows, n];
            let w = weights(rows);
            let p = random(&mut rng, &shape, -2.0, 2.0);
            let t = random(&mut rng, &shape, -2.0, 2.0);
            check(&format!("mse {shape:?}"), MeanSquaredError {}, &[p, t, w.clone()], 0, 1e-5);
            let p = random(&mut rng, &shape, 0.0, 1.0);
            let t = random(&mut rng, &shape, 0.0, 1.0).map(f64::round);
            let operands = [p, t, w];
            check(&format!("bce {shape:?}"), BinaryCrossEntropy {}, &operands, 0, 1e-5);
            check(&format!("bce_grad {shape:?}"), BinaryCrossEntropyGrad {}, &operands, 0, 1e-5);
        }
    }
    // Image-shaped predictions (a convolutional autoencoder): rows of 5 x 3 x 2 values.
    let w = weights(4);
    let p = random(&mut rng, &[4, 5, 3, 2], -2.0, 2.0);
    let t = random(&mut rng, &[4, 5, 3, 2], -2.0, 2.0);
    check("mse [4,5,3,2]", MeanSquaredError {}, &[p, t, w], 0, 1e-5);
    // The clip range, at and around its ends (as f32 values).
    let (lo, hi) = bce_range();
    let edges: Vec<f64> = [0.0, 1.0, 1e-8, 1e-7, lo, hi, 1.0 - 1e-8, 0.5, 2.0, -1.0]
        .iter()
        .flat_map(|&v: &f32| {
            [v, f32::from_bits(v.to_bits().saturating_sub(1)), f32::from_bits(v.to_bits() + 1)]
        })
        .map(f64::from)
        .collect();
    let n = edges.len();
    let p = tensor(&[n], edges);
    let t = tensor(&[n], (0..n).map(|i| (i % 2) as f64).collect());
    let w = tensor(&[n], vec![1.0 / n as f64; n]);
    let operands = [p, t, w];
    check("bce at the clip range", BinaryCrossEntropy {}, &operands, 0, 1e-5);
    check("bce_grad at the clip range", BinaryCrossEntropyGrad {}, &operands, 0, 1e-5);
}

/// Example weights for `n` rows: `1/m` for the first `m = n - n/3` rows, then 0 (padding).
fn weights(n: usize) -> Tensor {
    let m = n - n / 3;
    tensor(&[n], (0..n).map(|i| if i < m { 1.0 / m as f64 } else { 0.0 }).collect())
}

// ---------------------------------------------------------------------------------------------
// Structure and determinism.

#[test]
fn large_maps_are_chunked_parallel_vector_loops_with_serial_tails() {
    let mut rng = Lcg(19);
    let r = run_op(Exp {}, &[random(&mut rng, &[4097], -1.0, 1.0)], 0);
    assert_eq!(r.kernels.len(), 2);
    let (main, tail) = (&r.kernels[0], &r.kernels[1]);
    assert!(is_parallel(main) && main.work_items() == 4096 / CHUNK);
    assert!(has_vector_loads(main) && print(main).contains("unrolled"), "{}", print(main));
    assert!(!is_parallel(tail) && !has_vector_loads(tail));
    assert_ne!(main.name, tail.name);

    let r = run_op(Exp {}, &[random(&mut rng, &[37], -1.0, 1.0)], 0);
    assert_eq!(r.kernels.len(), 1);
    assert!(!is_parallel(&r.kernels[0]) && has_vector_loads(&r.kernels[0]));

    let r = run_op(Dropout { rate: 0.5, seed: 3 }, &[random(&mut rng, &[5000], -1.0, 1.0)], 0);
    assert!(is_parallel(&r.kernels[0]) && !r.kernels.iter().any(has_vector_loads));
}

#[test]
fn results_do_not_depend_on_the_parallel_split() {
    let mut rng = Lcg(20);
    let cases: Vec<(Op, Vec<Tensor>)> = vec![
        (ReduceSum { axes: vec![0] }.into(), vec![random(&mut rng, &[2000, 70], -1.0, 1.0)]),
        (ReduceSum { axes: vec![1] }.into(), vec![random(&mut rng, &[70, 2000], -1.0, 1.0)]),
        (ReduceSum { axes: vec![1] }.into(), vec![random(&mut rng, &[30, 40, 50], -1.0, 1.0)]),
        (
            ReduceSum { axes: vec![1, 3] }.into(),
            vec![random(&mut rng, &[20, 10, 30, 20], -1.0, 1.0)],
        ),
        (Softmax {}.into(), vec![random(&mut rng, &[200, 33], -5.0, 5.0)]),
        (
            Add {}.into(),
            vec![random(&mut rng, &[5000], -1.0, 1.0), random(&mut rng, &[], -1.0, 1.0)],
        ),
        (
            BiasAdd {}.into(),
            vec![random(&mut rng, &[1000, 37], -1.0, 1.0), random(&mut rng, &[37], -1.0, 1.0)],
        ),
        (Dropout { rate: 0.3, seed: 5 }.into(), vec![random(&mut rng, &[5000], -1.0, 1.0)]),
    ];
    for (op, operands) in cases {
        let name = op.name();
        let (g, ids, y) = graph_of(op, &operands);
        let (layout, len) = lay_out(&g);
        let values: Vec<(NodeId, &Tensor)> = ids.iter().copied().zip(&operands).collect();
        let kernels = lower(&g, y, &layout, None).unwrap();
        assert!(kernels.iter().any(is_parallel), "{name} has a parallel kernel");
        let mut whole = arena(&layout, len, &values);
        for k in &kernels {
            eval::run(k, &mut whole, 3);
        }
        for _ in 0..4 {
            let mut split = arena(&layout, len, &values);
            run_split(&kernels, &mut split, 3, &mut rng);
            let bits = |a: &[f32]| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(slice_of(&whole, &layout, y)),
                bits(slice_of(&split, &layout, y)),
                "{name}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Elementwise ops (with a scalar on a random side), bias add and reduce_sum over random
    /// axes, on random shapes.
    #[test]
    fn random_shapes(
        dims in proptest::collection::vec(1usize..12, 1..5),
        seed in any::<u64>(),
        axes_mask in 0u32..16,
        scalar_side in 0usize..3,
    ) {
        let mut rng = Lcg(seed);
        let x = random(&mut rng, &dims, -2.0, 2.0);
        // scalar_side: 0 = a scalar on the left, 1 = no scalar, 2 = a scalar on the right.
        let y = if scalar_side == 1 { nonzero(&mut rng, &dims) } else { nonzero(&mut rng, &[]) };
        for op in [Op::from(Add {}), Div {}.into(), Sub {}.into()] {
            let operands =
                if scalar_side == 0 { [y.clone(), x.clone()] } else { [x.clone(), y.clone()] };
            check(&format!("{} {dims:?} side {scalar_side}", op.name()), op, &operands, 0, 1e-5);
        }
        for op in [Op::from(Sigmoid {}), Elu { alpha: 0.7 }.into()] {
            check(&format!("{} {dims:?}", op.name()), op, std::slice::from_ref(&x), 0, 1e-5);
        }
        let b = random(&mut rng, &[dims[dims.len() - 1]], -1.0, 1.0);
        check(&format!("bias_add {dims:?}"), BiasAdd {}, &[x.clone(), b], 0, 1e-6);
        let axes: Vec<usize> = (0..dims.len()).filter(|&a| axes_mask & (1 << a) != 0).collect();
        check(&format!("reduce_sum {dims:?} {axes:?}"), ReduceSum { axes }, &[x], 0, 1e-5);
    }
}
