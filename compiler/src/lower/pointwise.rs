//! Lowering of elementwise ops, reductions, data movement, softmax, losses and random ops.

use kiln_ir::{Graph, NodeId};

use super::{Buffers, LowerError};
use crate::kernel::Kernel;

/// The kernels of every op that is not a matmul, convolution or pooling.
pub(super) fn lower(
    graph: &Graph,
    node: NodeId,
    _buffers: &dyn Buffers,
) -> Result<Vec<Kernel>, LowerError> {
    let n = graph.node(node);
    Err(LowerError { node: n.name.clone(), op: n.op.name(), message: "not lowered yet".into() })
}
