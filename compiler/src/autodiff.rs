//! Reverse-mode automatic differentiation over the IR.
//!
//! Walks the nodes that lie on a path from a parameter to the loss in reverse topological
//! order, asks each op's [`OpSpec::vjp`](kiln_ir::OpSpec::vjp) for its operand gradients and
//! sums the contributions reaching a node. Gradients are only built for nodes that depend on a
//! differentiated leaf, so inputs such as the data get none.

use std::collections::{BTreeMap, HashSet};

use kiln_ir::ops::{Add, Constant, Vjp};
use kiln_ir::{Graph, IrError, NodeId, Shape};

/// Adds to `graph` the gradient of the scalar `loss` with respect to each node of `wrt`, and
/// returns them in the order of `wrt`. A node of `wrt` that the loss does not depend on gets a
/// zero constant.
pub fn gradients(graph: &mut Graph, loss: NodeId, wrt: &[NodeId]) -> Result<Vec<NodeId>, IrError> {
    let loss_shape = graph.node(loss).shape.clone();
    if loss_shape.rank() != 0 {
        return Err(IrError::Invalid {
            node: graph.node(loss).name.clone(),
            message: format!("can only differentiate a scalar loss, got {loss_shape}"),
        });
    }
    let order = graph.topo_order()?;
    let active = active_nodes(graph, &order, loss, wrt);

    // Gradient contributions per node, accumulated in a deterministic order.
    let mut pending: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
    let seed_name = format!("d.{}", graph.node(loss).name);
    let seed = graph.leaf(Constant { value: 1.0 }, Shape::scalar(), &seed_name)?;
    pending.insert(loss, vec![seed]);

    let mut grads: BTreeMap<NodeId, NodeId> = BTreeMap::new();
    // Nodes not to rename: the forward graph's, and gradients already named after a node.
    let mut named: HashSet<NodeId> = graph.node_ids().into_iter().collect();
    for &node in order.iter().rev() {
        if !active.contains(&node) {
            continue;
        }
        let Some(parts) = pending.remove(&node) else { continue };
        let grad = sum(graph, node, parts)?;
        // Name the total gradient of `node` after it (`d.<name>`), unless that node is shared
        // with another gradient (e.g. `add` passes its gradient through unchanged).
        if named.insert(grad) {
            let name = format!("d.{}", graph.node(node).name);
            graph.rename(grad, &name);
        }
        grads.insert(node, grad);
        let operands = graph.operands(node);
        if operands.is_empty() {
            continue;
        }
        let wants: Vec<bool> = operands.iter().map(|o| active.contains(o)).collect();
        if !wants.iter().any(|&w| w) {
            continue;
        }
        let op = graph.node(node).op.clone();
        let mut vjp = Vjp::new(graph, node, grad, wants.clone());
        op.spec().vjp(&mut vjp)?;
        for (i, g) in vjp.grads.into_iter().enumerate() {
            if let (true, Some(g)) = (wants[i], g) {
                pending.entry(operands[i]).or_default().push(g);
            }
        }
    }

    wrt.iter()
        .map(|&w| match grads.get(&w) {
            Some(&g) => Ok(g),
            None => {
                let name = format!("d.{}", graph.node(w).name);
                let shape = graph.node(w).shape.clone();
                graph.leaf(Constant { value: 0.0 }, shape, &name)
            }
        })
        .collect()
}

/// Nodes that depend on some node of `wrt` and that `loss` depends on.
fn active_nodes(graph: &Graph, order: &[NodeId], loss: NodeId, wrt: &[NodeId]) -> HashSet<NodeId> {
    let mut from_wrt: HashSet<NodeId> = wrt.iter().copied().collect();
    for &n in order {
        if graph.operands(n).iter().any(|o| from_wrt.contains(o)) {
            from_wrt.insert(n);
        }
    }
    let mut to_loss: HashSet<NodeId> = HashSet::from([loss]);
    for &n in order.iter().rev() {
        if to_loss.contains(&n) {
            to_loss.extend(graph.operands(n));
        }
    }
    from_wrt.intersection(&to_loss).copied().collect()
}

/// Sums the gradient contributions reaching `node` (left to right, so the order is fixed).
fn sum(graph: &mut Graph, node: NodeId, parts: Vec<NodeId>) -> Result<NodeId, IrError> {
    let name = format!("d.{}.partial", graph.node(node).name);
    let mut parts = parts.into_iter();
    let mut total = parts.next().expect("at least one contribution");
    for p in parts {
        total = graph.add(Add {}, &[total, p], &name)?;
    }
    Ok(total)
}
