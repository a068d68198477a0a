//! Lowering: every graph node becomes zero or more kernels (see [`crate::kernel`]).
//!
//! Lowering decides tiling and vectorisation. It is given, for every node, the arena buffer
//! holding its value ([`Buffers`], from the memory planner) and, for ops that need one, a
//! scratch buffer of [`scratch_len`] elements (im2col columns, packed matrices).
//!
//! Nodes that produce no kernel: inputs (fed by the runtime), parameters and state (initialised
//! once in the arena), `reshape`, `output` and `part` (the planner gives them their operand's
//! buffer, or the part of it they view).
//! A constant is a small fill kernel, since its buffer is reused by other programs.

mod dense;
#[cfg(test)]
mod fused_tests;
mod pointwise;
#[cfg(test)]
pub(crate) mod testing;

use kiln_ir::{Graph, NodeId, Op};

use crate::kernel::{Buffer, Expr, Index, Kernel, LoopKind, Stmt};

/// Where each node's value lives in the arena.
pub trait Buffers {
    /// The buffer holding `node`'s value (`len` = the node's element count).
    fn of(&self, node: NodeId) -> Buffer;
}

/// An op that lowering does not handle (a bug in an earlier pass, never user input).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot lower node `{node}` ({op}): {message}")]
pub struct LowerError {
    /// The node's name.
    pub node: String,
    /// The op's name.
    pub op: &'static str,
    /// Why.
    pub message: String,
}

/// True for nodes whose value is their first operand's buffer, or a part of it (no kernel, no
/// storage of their own).
pub fn is_alias(op: &Op) -> bool {
    matches!(op, Op::Reshape(_) | Op::Output(_) | Op::Part(_))
}

/// The buffer of an alias node (see [`is_alias`]) whose operand lives in `operand`: the same
/// buffer, or for a `part` the sub-range it views.
pub fn alias_buffer(op: &Op, operand: &Buffer, len: usize) -> Buffer {
    let at = match op {
        Op::Part(p) => p.offset,
        _ => 0,
    };
    Buffer { name: operand.name.clone(), offset: operand.offset + at, len }
}

/// The scratch (in f32 elements) that lowering `node` needs; 0 for most ops.
pub fn scratch_len(graph: &Graph, node: NodeId) -> usize {
    dense::scratch_len(graph, node)
}

/// A kernel writing `value` into every element of `buf`.
fn fill(name: &str, buf: Buffer, value: f32) -> Kernel {
    let mut k = Kernel::new(name);
    let len = buf.len;
    let b = k.buf(buf.name, buf.offset, len);
    let i = k.var();
    let store = |lanes: u8, index: Index| Stmt::Store {
        buf: b,
        index,
        value: if lanes == 4 { Expr::c(value).splat() } else { Expr::c(value) },
    };
    let vector = len / 4 * 4;
    if vector > 0 {
        k.body.push(Stmt::For {
            var: i,
            extent: vector,
            step: 4,
            kind: LoopKind::Serial,
            body: vec![store(4, Index::var(i, 1))],
        });
    }
    for t in vector..len {
        k.body.push(store(1, Index::constant(t as i64)));
    }
    k
}

/// The kernels computing `node`, in execution order. `scratch` has [`scratch_len`] elements
/// when that is non-zero.
pub fn lower(
    graph: &Graph,
    node: NodeId,
    buffers: &dyn Buffers,
    scratch: Option<&Buffer>,
) -> Result<Vec<Kernel>, LowerError> {
    let n = graph.node(node);
    let out = match &n.op {
        Op::Input(_) | Op::Parameter(_) | Op::State(_) => Vec::new(),
        Op::Constant(c) => vec![fill(&n.name, buffers.of(node), c.value as f32)],
        op if is_alias(op) => Vec::new(),
        Op::MatMul(_)
        | Op::Conv2d(_)
        | Op::Conv2dGradInput(_)
        | Op::Conv2dGradFilter(_)
        | Op::MaxPool2d(_)
        | Op::MaxPool2dGrad(_)
        | Op::AvgPool2d(_)
        | Op::AvgPool2dGrad(_)
        | Op::MaxPool2dGradRelu(_)
        | Op::MaxPool2dGradReluBias(_)
        | Op::MatMulBiasAct(_)
        | Op::Conv2dBiasAct(_)
        | Op::Conv2dBiasActMaxPool2d(_) => dense::lower(graph, node, buffers, scratch)?,
        _ => pointwise::lower(graph, node, buffers)?,
    };
    for k in &out {
        k.check().map_err(|e| LowerError {
            node: n.name.clone(),
            op: n.op.name(),
            message: format!("produced an invalid kernel: {e}"),
        })?;
    }
    Ok(out)
}
