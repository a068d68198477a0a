//! A program: one graph lowered to the sequence of kernels that runs it, with its memory plan.

use kiln_ir::init::initial_values;
use kiln_ir::model::LossGraph;
use kiln_ir::{Graph, NodeId, Op};

use crate::kernel::{Buffer, Kernel};
use crate::lower::{lower, LowerError};
use crate::memory::{plan, MemoryPlan, Persistent};
use crate::step::TrainGraph;

/// The nodes of a graph that its caller feeds (data, labels, example weights) and reads (loss,
/// prediction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Io {
    /// The data input `[batch, ...]`.
    pub input: NodeId,
    /// The labels `[batch]`, when the loss uses them.
    pub labels: Option<NodeId>,
    /// The example weights `[batch]` of the loss.
    pub weights: NodeId,
    /// The scalar loss.
    pub loss: NodeId,
    /// The prediction (logits for classifiers).
    pub prediction: NodeId,
}

impl From<&TrainGraph> for Io {
    fn from(g: &TrainGraph) -> Io {
        Io {
            input: g.input,
            labels: g.labels,
            weights: g.weights,
            loss: g.loss,
            prediction: g.prediction,
        }
    }
}

impl From<&LossGraph> for Io {
    fn from(g: &LossGraph) -> Io {
        Io {
            input: g.input,
            labels: g.labels,
            weights: g.weights,
            loss: g.loss,
            prediction: g.prediction,
        }
    }
}

/// A graph ready to run: kernels in execution order over a planned arena.
#[derive(Clone, Debug)]
pub struct Program {
    /// The kernels, in execution order (parameter and state updates last).
    pub kernels: Vec<Kernel>,
    /// The memory plan of the values region.
    pub plan: MemoryPlan,
    /// The nodes in execution order.
    pub order: Vec<NodeId>,
    /// The batch size the program is compiled for; shorter batches are padded to it.
    pub batch: usize,
    /// Where the runtime writes the data batch.
    pub input: Buffer,
    /// Where the runtime writes the labels, when the loss uses them.
    pub labels: Option<Buffer>,
    /// Where the runtime writes the example weights (`1/n` for the `n` real examples, then 0).
    pub weights: Buffer,
    /// Where the scalar loss is after a run.
    pub loss: Buffer,
    /// Where the prediction (logits) is after a run.
    pub prediction: Buffer,
}

/// The execution order: topological, with every `assign` moved to the end so that all reads of
/// the old parameter values come first.
pub fn execution_order(graph: &Graph) -> Result<Vec<NodeId>, kiln_ir::IrError> {
    let order = graph.topo_order()?;
    let (assigns, rest): (Vec<NodeId>, Vec<NodeId>) =
        order.into_iter().partition(|&n| matches!(graph.node(n).op, Op::Assign(_)));
    Ok(rest.into_iter().chain(assigns).collect())
}

/// Lowers `graph` into a program whose persistent variables are in `persistent` (which must
/// already hold them; see [`Persistent::add_from`]).
pub fn build(graph: &Graph, io: Io, persistent: &Persistent) -> Result<Program, LowerError> {
    let order = execution_order(graph).map_err(|e| LowerError {
        node: String::new(),
        op: "graph",
        message: e.to_string(),
    })?;
    let plan = plan(graph, &order, persistent, &[io.loss, io.prediction]);
    let mut kernels = Vec::new();
    for &id in &order {
        kernels.extend(lower(graph, id, &plan, plan.scratch.get(&id))?);
    }
    Ok(Program {
        kernels,
        batch: graph.node(io.input).shape.dim(0),
        input: plan.buffers[&io.input].clone(),
        labels: io.labels.map(|l| plan.buffers[&l].clone()),
        weights: plan.buffers[&io.weights].clone(),
        loss: plan.buffers[&io.loss].clone(),
        prediction: plan.buffers[&io.prediction].clone(),
        plan,
        order,
    })
}

/// The initial contents of the persistent region: parameters from their seeded initialisers,
/// state from its initialiser.
pub fn initial_persistent(graphs: &[&Graph], persistent: &Persistent) -> Vec<f32> {
    let mut arena = vec![0.0f32; persistent.len];
    for graph in graphs {
        for id in graph.node_ids() {
            let node = graph.node(id);
            let Some(b) = persistent.buffers.get(&node.name) else { continue };
            let values = match &node.op {
                Op::Parameter(p) => initial_values(p.init, &node.shape, p.seed),
                Op::State(s) => initial_values(s.init, &node.shape, 0),
                _ => continue,
            };
            for (slot, v) in arena[b.offset..b.offset + b.len].iter_mut().zip(values) {
                *slot = v as f32;
            }
        }
    }
    arena
}
