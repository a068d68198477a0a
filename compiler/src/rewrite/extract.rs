//! Extraction: choosing one e-node per needed e-class, by a cost model of bytes moved plus
//! flops plus a fixed cost per kernel launch.
//!
//! egg's greedy extractor costs trees, counting a shared value once per use; a fusion can then
//! look cheap while the value it fuses away is still needed elsewhere (a fused conv+pool in a
//! training step, whose backward pass still needs the unpooled activation). So the greedy
//! choice is only the start: a local search then flips single e-classes to other e-nodes while
//! that lowers the cost of the whole DAG, each needed value counted once.

use std::collections::HashMap;

use egg::{CostFunction, Extractor, Id, Language};
use kiln_ir::Op;

use super::lang::{attr_of, KilnGraph, Node};

/// The fixed cost of running one more kernel, in the cost model's units (bytes).
const KERNEL_COST: f64 = 4096.0;

/// The cost of one e-node alone: bytes read and written plus flops plus a kernel launch;
/// `None` when it cannot be computed (an op whose shapes do not fit).
pub fn node_cost(egraph: &KilnGraph, node: &Node) -> Option<f64> {
    let Some((op, operands)) = node.op(&egraph.analysis.ops, |id| attr_of(egraph, id)) else {
        return Some(0.0);
    };
    if op.spec().is_leaf() || crate::lower::is_alias(&op) {
        return Some(0.0); // no kernel: fed, initialised once, or an alias
    }
    let shape_of = |id: Id| egraph[id].data.shape.clone();
    let operand_shapes: Option<Vec<_>> = operands.iter().map(|&c| shape_of(c)).collect();
    let operand_shapes = operand_shapes?;
    let refs: Vec<&kiln_ir::Shape> = operand_shapes.iter().collect();
    let out = op.spec().infer(&refs).ok()?;
    let bytes =
        4.0 * (operand_shapes.iter().map(|s| s.numel()).sum::<usize>() + out.numel()) as f64;
    Some(bytes + flops(&op, &operand_shapes, &out) + KERNEL_COST)
}

/// Floating-point operations of an op, roughly.
fn flops(op: &Op, operands: &[kiln_ir::Shape], out: &kiln_ir::Shape) -> f64 {
    let n = out.numel() as f64;
    match op {
        Op::MatMul(_) | Op::MatMulBiasAct(_) => {
            let a = &operands[0];
            let k = if matches!(op, Op::MatMul(m) if m.transpose_a) { a.dim(0) } else { a.dim(-1) };
            2.0 * n * k as f64 + n
        }
        Op::Conv2d(_) | Op::Conv2dBiasAct(_) | Op::Conv2dGradInput(_) => {
            let w = &operands[1];
            let taps = (w.numel() / w.dim(-1).max(1)) as f64;
            2.0 * n * taps + n
        }
        Op::Conv2dBiasActMaxPool2d(p) => {
            let w = &operands[1];
            let taps = (w.numel() / w.dim(-1).max(1)) as f64;
            let window = (p.pool_size[0] * p.pool_size[1]) as f64;
            (2.0 * taps + 2.0) * n * window
        }
        Op::Conv2dGradFilter(_) => 2.0 * operands[1].numel() as f64 * operands[0].dim(-1) as f64,
        _ => n,
    }
}

/// egg's tree cost from [`node_cost`], the greedy start of the search.
struct TreeCost<'a>(&'a KilnGraph);

impl CostFunction<Node> for TreeCost<'_> {
    type Cost = f64;
    fn cost<C: FnMut(Id) -> f64>(&mut self, enode: &Node, mut costs: C) -> f64 {
        let own = node_cost(self.0, enode).unwrap_or(f64::INFINITY);
        enode.fold(own, |sum, id| sum + costs(id))
    }
}

/// The chosen e-node of every needed e-class (canonical ids), and the DAG cost.
pub struct Choice {
    /// The e-node chosen for each class reachable from the roots.
    pub nodes: HashMap<Id, Node>,
    /// The cost of the whole extracted DAG, every value counted once.
    pub cost: f64,
}

/// Chooses e-nodes for everything `roots` need.
pub fn extract(egraph: &KilnGraph, roots: &[Id]) -> Choice {
    let extractor = Extractor::new(egraph, TreeCost(egraph));
    let mut choice: HashMap<Id, Node> = HashMap::new();
    for class in egraph.classes() {
        choice.insert(class.id, extractor.find_best_node(class.id).clone());
    }
    let mut best = dag_cost(egraph, &choice, roots).expect("the greedy choice is acyclic");
    // Local search: flip one class at a time while the whole DAG gets cheaper.
    for _ in 0..4 {
        let mut improved = false;
        let needed: Vec<Id> = reachable(egraph, &choice, roots).unwrap_or_default();
        for class in needed {
            let current = choice[&class].clone();
            for alt in &egraph[class].nodes {
                if *alt == current || node_cost(egraph, alt).is_none() {
                    continue;
                }
                choice.insert(class, alt.clone());
                match dag_cost(egraph, &choice, roots) {
                    Some(cost) if cost < best - 1e-6 => {
                        best = cost;
                        improved = true;
                        break;
                    }
                    _ => {
                        choice.insert(class, current.clone());
                    }
                }
            }
        }
        if !improved {
            break;
        }
    }
    let nodes = reachable(egraph, &choice, roots)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c, choice[&c].clone()))
        .collect();
    Choice { nodes, cost: best }
}

/// The classes reachable from `roots` through the chosen nodes, in post-order (operands
/// first); `None` if the choice has a cycle.
pub fn reachable(egraph: &KilnGraph, choice: &HashMap<Id, Node>, roots: &[Id]) -> Option<Vec<Id>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    let mut marks: HashMap<Id, Mark> = HashMap::new();
    let mut order = Vec::new();
    for &root in roots {
        let root = egraph.find(root);
        if marks.contains_key(&root) {
            continue;
        }
        // Iterative DFS: (class, next child index).
        let mut stack = vec![(root, 0usize)];
        marks.insert(root, Mark::Open);
        while let Some(&mut (class, ref mut next)) = stack.last_mut() {
            let children = choice[&class].children();
            if *next < children.len() {
                let child = egraph.find(children[*next]);
                *next += 1;
                match marks.get(&child) {
                    Some(Mark::Open) => return None,
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(child, Mark::Open);
                        stack.push((child, 0));
                    }
                }
            } else {
                marks.insert(class, Mark::Done);
                order.push(class);
                stack.pop();
            }
        }
    }
    Some(order)
}

/// The cost of the DAG a choice extracts, every class counted once; `None` if it has a cycle
/// or a node without a cost.
fn dag_cost(egraph: &KilnGraph, choice: &HashMap<Id, Node>, roots: &[Id]) -> Option<f64> {
    reachable(egraph, choice, roots)?.iter().map(|c| node_cost(egraph, &choice[c])).sum()
}
