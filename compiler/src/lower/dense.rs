//! Lowering of matrix products, convolutions and pooling (and their gradients).

use kiln_ir::{Graph, NodeId};

use super::{Buffers, LowerError};
use crate::kernel::{Buffer, Kernel};

/// Scratch needed by `node` (im2col columns, packed operands).
pub(super) fn scratch_len(_graph: &Graph, _node: NodeId) -> usize {
    0
}

/// The kernels of a matmul, convolution or pooling node.
pub(super) fn lower(
    graph: &Graph,
    node: NodeId,
    _buffers: &dyn Buffers,
    _scratch: Option<&Buffer>,
) -> Result<Vec<Kernel>, LowerError> {
    let n = graph.node(node);
    Err(LowerError { node: n.name.clone(), op: n.op.name(), message: "not lowered yet".into() })
}
