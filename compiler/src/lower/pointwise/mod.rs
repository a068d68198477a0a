//! Lowering of elementwise ops, reductions, data movement, softmax, losses and random ops.
//!
//! Every kernel here is one of a few loop-nest shapes (see [`nest`]):
//! - a **map**: one output element per iteration of a (simplified) loop nest over strided
//!   operands, vectorised by 4 along a contiguous innermost run with scalar tails, its
//!   outermost loop parallel when the output is large (a single long run is cut into chunks
//!   of [`nest::CHUNK`] elements, the remainder going to a second, serial kernel). Elementwise
//!   ops, broadcast, bias add, transpose, concat, slice, maxout, dropout and noise are maps;
//! - a **row sum**: a fixed-order sum of a contiguous run in four f32x4 accumulators, then a
//!   horizontal sum and a scalar tail. `reduce_sum` over trailing axes, softmax and the
//!   losses use it;
//! - **column sums** (`reduce_sum` over leading axes, the bias gradient): f32x4 accumulators
//!   across the kept axis and a serial loop over rows.
//!
//! Sums never depend on how parallel work is split: a parallel loop only ever runs over
//! independent output elements, and each output's summation order is fixed by the shapes.

mod elementwise;
mod loss;
mod movement;
mod nest;
mod reduce;
pub(super) use reduce::column_sums;
mod softmax;
#[cfg(test)]
mod tests;

use kiln_ir::{Graph, NodeId, Op, Shape};

use super::{Buffers, LowerError};
use crate::kernel::{Buffer, Kernel};

/// The kernels of every op that is not a matmul, convolution or pooling.
pub(super) fn lower(
    graph: &Graph,
    node: NodeId,
    buffers: &dyn Buffers,
) -> Result<Vec<Kernel>, LowerError> {
    let cx = Cx { graph, node, operands: graph.operands(node), buffers };
    let mut kernels = match &graph.node(node).op {
        Op::Neg(_)
        | Op::Exp(_)
        | Op::Log(_)
        | Op::Sqrt(_)
        | Op::Relu(_)
        | Op::LeakyRelu(_)
        | Op::Elu(_)
        | Op::Sigmoid(_)
        | Op::Tanh(_)
        | Op::Step(_) => elementwise::unary(&cx),
        Op::Add(_) | Op::Sub(_) | Op::Mul(_) | Op::Div(_) => elementwise::binary(&cx),
        Op::ReluGrad(_) => elementwise::relu_grad(&cx),
        Op::Assign(_) => elementwise::assign(&cx),
        Op::Dropout(op) => elementwise::dropout(&cx, op),
        Op::GaussianNoise(op) => elementwise::gaussian_noise(&cx, op),
        Op::ReduceSum(op) => reduce::reduce_sum(&cx, &op.axes),
        Op::Broadcast(op) => movement::broadcast(&cx, &op.axes),
        Op::BiasAdd(_) => movement::bias_add(&cx),
        Op::Transpose(op) => movement::transpose(&cx, &op.perm),
        Op::Concat(op) => movement::concat(&cx, op.axis),
        Op::Slice(op) => movement::slice(&cx, op),
        Op::Softmax(_) => softmax::softmax(&cx),
        Op::Maxout(op) => softmax::maxout(&cx, op.pieces),
        Op::MaxoutGrad(op) => softmax::maxout_grad(&cx, op.pieces),
        Op::OneHot(_) => loss::one_hot(&cx),
        Op::SoftmaxCrossEntropy(_) => loss::softmax_cross_entropy(&cx),
        Op::MeanSquaredError(_) => loss::mse(&cx),
        Op::BinaryCrossEntropy(_) => loss::binary_cross_entropy(&cx),
        Op::BinaryCrossEntropyGrad(_) => loss::binary_cross_entropy_grad(&cx),
        Op::SoftmaxCrossEntropyGrad(_) => loss::softmax_cross_entropy_grad(&cx),
        op => {
            return Err(LowerError {
                node: cx.name().to_string(),
                op: op.name(),
                message: "not an elementwise, reduction, movement or loss op".into(),
            })
        }
    };
    // Kernel names are unique: `<node>` alone, or `<node>#<i>` when there are several
    // (`#` never occurs in node names).
    if kernels.len() > 1 {
        for (i, k) in kernels.iter_mut().enumerate() {
            k.name = format!("{}#{i}", cx.name());
        }
    }
    Ok(kernels)
}

/// What lowering one node needs: the graph, the node, its operands and the buffers.
pub(super) struct Cx<'a> {
    graph: &'a Graph,
    node: NodeId,
    operands: Vec<NodeId>,
    buffers: &'a dyn Buffers,
}

impl Cx<'_> {
    /// The node's name (every kernel's name).
    fn name(&self) -> &str {
        &self.graph.node(self.node).name
    }

    /// The node's op.
    fn op(&self) -> &Op {
        &self.graph.node(self.node).op
    }

    /// The node's shape.
    fn out_shape(&self) -> &Shape {
        &self.graph.node(self.node).shape
    }

    /// The shape of operand `i`.
    fn shape(&self, i: usize) -> &Shape {
        &self.graph.node(self.operands[i]).shape
    }

    /// The buffer of the node's value.
    fn out(&self) -> Buffer {
        self.buffers.of(self.node)
    }

    /// The buffer of operand `i`.
    fn input(&self, i: usize) -> Buffer {
        self.buffers.of(self.operands[i])
    }

    /// The value of operand `i` when it is a `constant` node (every element equal), which is
    /// then inlined instead of loaded.
    fn constant(&self, i: usize) -> Option<f32> {
        match &self.graph.node(self.operands[i]).op {
            Op::Constant(c) => Some(c.value as f32),
            _ => None,
        }
    }
}
