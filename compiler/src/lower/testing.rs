//! Test harness for lowering: lowers one op on random operands with a simple sequential memory
//! layout, runs the kernels with [`crate::kernel::eval`], and compares with the op's reference
//! semantics.

use std::collections::HashMap;

use kiln_ir::ops::Input;
use kiln_ir::{EvalCtx, Graph, NodeId, Op, Shape, Tensor};

use super::{lower, scratch_len, Buffers};
use crate::kernel::{eval, Buffer, Kernel};

/// Buffers laid out one after another.
struct Sequential(HashMap<NodeId, Buffer>);

impl Buffers for Sequential {
    fn of(&self, node: NodeId) -> Buffer {
        self.0[&node].clone()
    }
}

/// A deterministic generator of test values.
pub struct Lcg(pub u64);

impl Lcg {
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }
}

/// The result of lowering and running one op.
pub struct Lowered {
    /// The kernels produced.
    pub kernels: Vec<Kernel>,
    /// What the kernels computed (f32, widened).
    pub got: Tensor,
    /// What the reference semantics give (f64).
    pub want: Tensor,
}

/// Lowers `op` applied to `operands` (given values, rounded to f32), runs it at training step
/// `step` and returns both results. Panics if lowering fails or a kernel is invalid.
pub fn run_op(op: impl Into<Op>, operands: &[Tensor], step: u64) -> Lowered {
    let op = op.into();
    let mut g = Graph::new();
    let ids: Vec<NodeId> = operands
        .iter()
        .enumerate()
        .map(|(i, t)| g.leaf(Input {}, t.shape.clone(), &format!("x{i}")).unwrap())
        .collect();
    let y = g.add(op, &ids, "y").unwrap_or_else(|e| panic!("{e}"));
    let mut bufs = HashMap::new();
    let mut offset = 0;
    for &id in ids.iter().chain([&y]) {
        let len = g.node(id).shape.numel();
        bufs.insert(id, Buffer { name: g.node(id).name.clone(), offset, len });
        offset += len;
    }
    let scratch_n = scratch_len(&g, y);
    let scratch =
        (scratch_n > 0).then(|| Buffer { name: "scratch".into(), offset, len: scratch_n });
    let arena_len = offset + scratch_n;
    let kernels =
        lower(&g, y, &Sequential(bufs.clone()), scratch.as_ref()).unwrap_or_else(|e| panic!("{e}"));
    // Garbage (not zeros) everywhere the kernels must write, so a missed element shows.
    let mut arena = vec![f32::NAN; arena_len];
    let rounded: Vec<Tensor> = operands.iter().map(|t| t.map(|v| v as f32 as f64)).collect();
    for (id, t) in ids.iter().zip(&rounded) {
        let b = &bufs[id];
        for (slot, v) in arena[b.offset..b.offset + b.len].iter_mut().zip(&t.data) {
            *slot = *v as f32;
        }
    }
    for k in &kernels {
        eval::run(k, &mut arena, step);
    }
    let yb = &bufs[&y];
    let shape: Shape = g.node(y).shape.clone();
    let got = Tensor::new(
        shape.clone(),
        arena[yb.offset..yb.offset + yb.len].iter().map(|&v| v as f64).collect(),
    );
    let args: Vec<&Tensor> = rounded.iter().collect();
    let want = g.node(y).op.spec().eval(&args, &shape, &EvalCtx { step });
    Lowered { kernels, got, want }
}

/// Asserts `got` ≈ `want` elementwise: `|got - want| <= tol * (1 + |want|)`.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: kernels {g}, reference {w}");
    }
}

/// A tensor of uniform values in `[lo, hi)`.
pub fn random(rng: &mut Lcg, dims: &[usize], lo: f64, hi: f64) -> Tensor {
    let shape = Shape::new(dims.to_vec());
    let data = (0..shape.numel()).map(|_| lo + (hi - lo) * rng.uniform()).collect();
    Tensor::new(shape, data)
}
