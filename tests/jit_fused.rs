//! Differential test of the fused ops' compiled kernels: a hand-built graph using every fused
//! op, planned, lowered, JIT-compiled and run on 1 and 2 threads, against the reference
//! interpreter.

use std::collections::HashMap;

use kiln::compiler::codegen::compile;
use kiln::compiler::interp::{self, Variables};
use kiln::compiler::lower::lower;
use kiln::compiler::memory::{plan, Persistent};
use kiln::ir::ops::{
    Conv2dBiasAct, Conv2dBiasActMaxPool2d, Input, MatMulBiasAct, MaxPool2dGradRelu,
    MaxPool2dGradReluBias, PadMode, Padding, Part, ReluGrad, Reshape, SoftmaxCrossEntropyGrad,
};
use kiln::ir::{EvalCtx, Graph, NodeId, Shape, Tensor};
use kiln::runtime::exec::{run_kernels, KernelCall, Pool};

/// Uniform values in `[lo, hi)` from a seeded LCG.
fn values(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = ((s >> 40) as f32 / (1u64 << 24) as f32) as f64;
            lo + (hi - lo) * u
        })
        .collect()
}

/// The graph: a convolution block (fused with its pool), its backward through the pool and
/// ReLU, a dense layer and the loss gradient. Returns it with its inputs and outputs.
fn fused_graph(batch: usize) -> (Graph, Vec<NodeId>, Vec<NodeId>) {
    let same = Padding::Mode(PadMode::Same);
    let mut g = Graph::new();
    let input = |g: &mut Graph, name: &str, dims: &[usize]| {
        g.leaf(Input {}, Shape::new(dims.to_vec()), name).unwrap()
    };
    let x = input(&mut g, "x", &[batch, 9, 9, 3]);
    let w = input(&mut g, "w", &[3, 3, 3, 6]);
    let b = input(&mut g, "b", &[6]);
    let gp = input(&mut g, "gp", &[batch, 4, 4, 6]);
    let ga = input(&mut g, "ga", &[batch, 9, 9, 6]);
    let w2 = input(&mut g, "w2", &[96, 10]);
    let b2 = input(&mut g, "b2", &[10]);
    let labels = input(&mut g, "labels", &[batch]);
    let weights = input(&mut g, "weights", &[batch]);
    let scale = input(&mut g, "scale", &[]);
    let inputs = vec![x, w, b, gp, ga, w2, b2, labels, weights, scale];

    let conv = Conv2dBiasAct { stride: [1, 1], pad: same, relu: true };
    let a = g.add(conv, &[x, w, b], "a").unwrap();
    let pool_op = Conv2dBiasActMaxPool2d {
        stride: [1, 1],
        pad: same,
        relu: true,
        pool_size: [2, 2],
        pool_stride: [2, 2],
    };
    let p = g.add(pool_op, &[x, w, b], "p").unwrap();
    let dp = g.add(MaxPool2dGradRelu { size: [2, 2], stride: [2, 2] }, &[a, gp], "dp").unwrap();
    let da = g.add(ReluGrad {}, &[ga, a], "da").unwrap();
    // The same gradient with its bias gradient, packed, and read back through parts.
    let packed = MaxPool2dGradReluBias { size: [2, 2], stride: [2, 2] };
    let dpb = g.add(packed, &[a, gp], "dpb").unwrap();
    let dz = Part { offset: 0, shape: vec![batch, 9, 9, 6] };
    let dz = g.add(dz, &[dpb], "dpb.dz").unwrap();
    let db = g.add(Part { offset: batch * 9 * 9 * 6, shape: vec![6] }, &[dpb], "dpb.db").unwrap();
    let flat = g.add(Reshape { shape: vec![batch, 96] }, &[p], "flat").unwrap();
    let logits = g.add(MatMulBiasAct { relu: false }, &[flat, w2, b2], "logits").unwrap();
    let dl = g.add(SoftmaxCrossEntropyGrad {}, &[logits, labels, weights, scale], "dl").unwrap();
    (g, inputs, vec![a, p, dp, da, dz, db, logits, dl])
}

#[test]
fn fused_ops_compiled_match_the_interpreter() {
    let batch = 5;
    let (g, inputs, outputs) = fused_graph(batch);
    let feeds: HashMap<NodeId, Tensor> = inputs
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let shape = g.node(id).shape.clone();
            let n = shape.numel();
            let data = match g.node(id).name.as_str() {
                "labels" => (0..n).map(|r| ((r * 7) % 10) as f64).collect(),
                "weights" => vec![1.0 / n as f64; n],
                _ => values(n, i as u64 + 1, -1.0, 1.0),
            };
            (id, Tensor::new(shape, data))
        })
        .collect();
    let want = interp::run(&g, &feeds, &mut Variables::default(), &EvalCtx { step: 0 }).unwrap();

    let order = g.topo_order().unwrap();
    let mem = plan(&g, &order, &Persistent::default(), &outputs);
    let kernels: Vec<_> =
        order.iter().flat_map(|&id| lower(&g, id, &mem, mem.scratch.get(&id)).unwrap()).collect();
    let code = compile(&kernels).unwrap();
    let calls: Vec<KernelCall> = kernels
        .iter()
        .enumerate()
        .map(|(i, k)| KernelCall { f: code.get(i), work_items: k.work_items() })
        .collect();
    let run = |threads: usize| {
        let mut arena = vec![f32::NAN; mem.len];
        for (id, t) in &feeds {
            let range = mem.buffers[id].range();
            for (slot, v) in arena[range].iter_mut().zip(&t.data) {
                *slot = *v as f32;
            }
        }
        // SAFETY: the kernels were bounds-checked against this plan; the arena has its length.
        unsafe { run_kernels(&Pool::new(threads), &calls, &mut arena, 0) };
        arena
    };
    let (one, two) = (run(1), run(2));
    for &id in &outputs {
        let name = &g.node(id).name;
        let range = mem.buffers[&id].range();
        for (i, ((&a, &b), &w)) in
            one[range.clone()].iter().zip(&two[range]).zip(&want[&id].data).enumerate()
        {
            assert_eq!(a.to_bits(), b.to_bits(), "{name}[{i}]: 1 and 2 threads differ");
            let ok = ((a as f64) - w).abs() <= 1e-4 * (1.0 + w.abs());
            assert!(ok, "{name}[{i}]: jit {a}, interpreter {w}");
        }
    }
}
