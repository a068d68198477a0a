//! A program: one graph lowered to the sequence of kernels that runs it, with its memory plan.

use kiln_ir::init::initial_values;
use kiln_ir::{Graph, NodeId, Op};

use crate::kernel::{Buffer, Kernel};
use crate::lower::{lower, LowerError};
use crate::memory::{plan, MemoryPlan, Persistent};

/// A graph ready to run: kernels in execution order over a planned arena.
#[derive(Clone, Debug)]
pub struct Program {
    /// The kernels, in execution order (parameter and state updates last).
    pub kernels: Vec<Kernel>,
    /// The memory plan of the values region.
    pub plan: MemoryPlan,
    /// The nodes in execution order.
    pub order: Vec<NodeId>,
    /// Where the runtime writes the data batch.
    pub input: Buffer,
    /// Where the runtime writes the labels, when the loss uses them.
    pub labels: Option<Buffer>,
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
pub fn build(
    graph: &Graph,
    input: NodeId,
    labels: Option<NodeId>,
    loss: NodeId,
    prediction: NodeId,
    persistent: &Persistent,
) -> Result<Program, LowerError> {
    let order = execution_order(graph).map_err(|e| LowerError {
        node: String::new(),
        op: "graph",
        message: e.to_string(),
    })?;
    let plan = plan(graph, &order, persistent, &[loss, prediction]);
    let mut kernels = Vec::new();
    for &id in &order {
        kernels.extend(lower(graph, id, &plan, plan.scratch.get(&id))?);
    }
    Ok(Program {
        kernels,
        input: plan.buffers[&input].clone(),
        labels: labels.map(|l| plan.buffers[&l].clone()),
        loss: plan.buffers[&loss].clone(),
        prediction: plan.buffers[&prediction].clone(),
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
