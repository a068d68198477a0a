//! The memory planner: where every value lives in the arena.
//!
//! The arena holds, in this order:
//! 1. the **persistent** region: parameters and optimizer state, by node name, shared by every
//!    program compiled for a model (training and evaluation, every batch size);
//! 2. the **values** region of one program: inputs, constants (they depend on the batch size,
//!    e.g. the `1/N` of a mean, so each program writes its own), activations kept for the
//!    backward pass, gradients, temporaries and kernel scratch. A buffer is reused once its value is dead:
//!    each value lives from the kernel that defines it to its last reader, and buffers whose
//!    lifetimes overlap never overlap in memory (first fit in execution order).
//!
//! `reshape` and `output` share their operand's buffer; `assign` writes into its target's.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use kiln_ir::{Graph, NodeId, Op};

use crate::kernel::Buffer;
use crate::lower::{alias_buffer, is_alias, scratch_len};

/// Buffers are aligned to 16 f32 (64 bytes, a cache line).
const ALIGN: usize = 16;

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Parameters and state of a model, by node name: the arena's first region.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Persistent {
    /// Each variable's buffer.
    pub buffers: BTreeMap<String, Buffer>,
    /// End of the region, in f32 elements.
    pub len: usize,
}

impl Persistent {
    /// Adds every parameter and state of `graph` not yet placed.
    pub fn add_from(&mut self, graph: &Graph) {
        for id in graph.node_ids() {
            let node = graph.node(id);
            if matches!(node.op, Op::Parameter(_) | Op::State(_))
                && !self.buffers.contains_key(&node.name)
            {
                let len = node.shape.numel();
                let buffer = Buffer { name: node.name.clone(), offset: self.len, len };
                self.buffers.insert(node.name.clone(), buffer);
                self.len += align(len);
            }
        }
    }
}

/// Where every node of one program lives.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// The buffer of every node (aliases share their root's).
    pub buffers: HashMap<NodeId, Buffer>,
    /// Scratch buffers of the nodes that need one.
    pub scratch: HashMap<NodeId, Buffer>,
    /// Start of the values region (= the persistent region's length).
    pub values_start: usize,
    /// End of the program's part of the arena, in f32 elements.
    pub len: usize,
    /// Sum of the sizes of all values and scratch, as if nothing were reused.
    pub unshared_len: usize,
}

impl crate::lower::Buffers for MemoryPlan {
    fn of(&self, node: NodeId) -> Buffer {
        self.buffers[&node].clone()
    }
}

/// The node whose storage `id` uses: itself, or the root of a chain of aliases / assigns.
fn root(graph: &Graph, mut id: NodeId) -> NodeId {
    loop {
        let op = &graph.node(id).op;
        if is_alias(op) || matches!(op, Op::Assign(_)) {
            id = graph.operands(id)[0];
        } else {
            return id;
        }
    }
}

/// Plans the values region of a program that runs `order` (every node of `graph`, in
/// execution order), after `persistent` (which must already hold the graph's variables).
/// Nodes in `keep` (outputs the runtime reads after the step) stay live to the end.
pub fn plan(
    graph: &Graph,
    order: &[NodeId],
    persistent: &Persistent,
    keep: &[NodeId],
) -> MemoryPlan {
    let position: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    // Lifetime of each root value: [definition, last use].
    let mut life: BTreeMap<NodeId, (usize, usize)> = BTreeMap::new();
    for (i, &id) in order.iter().enumerate() {
        let r = root(graph, id);
        if r == id {
            // Inputs are written by the runtime before the first kernel runs.
            let from = if matches!(graph.node(id).op, Op::Input(_)) { 0 } else { i };
            life.entry(id).or_insert((from, i));
        }
        for o in graph.operands(id) {
            let ro = root(graph, o);
            let from = if matches!(graph.node(ro).op, Op::Input(_)) { 0 } else { position[&ro] };
            let e = life.entry(ro).or_insert((from, i));
            e.1 = e.1.max(i);
        }
    }
    for &k in keep {
        if let Some(e) = life.get_mut(&root(graph, k)) {
            e.1 = order.len();
        }
    }

    let values_start = align(persistent.len);
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // (offset, len, from, to)
    let mut unshared = 0;
    let mut place = |len: usize, from: usize, to: usize| -> usize {
        let len_a = align(len.max(1));
        unshared += len_a;
        let mut overlapping: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&(_, _, f, t)| f <= to && from <= t)
            .map(|&(o, l, _, _)| (o, l))
            .collect();
        overlapping.sort_unstable();
        let mut offset = values_start;
        for (o, l) in overlapping {
            if offset + len_a <= o {
                break;
            }
            offset = offset.max(o + l);
        }
        placed.push((offset, len_a, from, to));
        offset
    };

    let mut buffers = HashMap::new();
    let mut scratch = HashMap::new();
    for (i, &id) in order.iter().enumerate() {
        let node = graph.node(id);
        if matches!(node.op, Op::Parameter(_) | Op::State(_)) {
            let b = persistent.buffers.get(&node.name).expect("variables are placed first");
            buffers.insert(id, b.clone());
            continue;
        }
        if root(graph, id) != id {
            continue;
        }
        let (from, to) = life[&id];
        let len = node.shape.numel();
        let offset = place(len, from, to);
        buffers.insert(id, Buffer { name: node.name.clone(), offset, len });
        let s = scratch_len(graph, id);
        if s > 0 {
            let offset = place(s, i, i);
            scratch.insert(id, Buffer { name: format!("{}.scratch", node.name), offset, len: s });
        }
    }
    // Aliases (in execution order, so their operand's buffer is known): the operand's
    // buffer, or the part of it they view; an assign writes its variable's.
    for &id in order {
        if root(graph, id) != id {
            let operand = &buffers[&graph.operands(id)[0]];
            let b = match &graph.node(id).op {
                Op::Assign(_) => operand.clone(),
                op => alias_buffer(op, operand, graph.node(id).shape.numel()),
            };
            buffers.insert(id, b);
        }
    }
    let len = placed.iter().map(|&(o, l, _, _)| o + l).max().unwrap_or(values_start);
    MemoryPlan { buffers, scratch, values_start, len, unshared_len: unshared }
}

/// A readable table of the plan (`kiln dump --stage memory`).
pub fn describe(
    graph: &Graph,
    order: &[NodeId],
    plan: &MemoryPlan,
    persistent: &Persistent,
) -> String {
    let mb = |n: usize| n as f64 * 4.0 / 1e6;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "arena: {:.2} MB = persistent {:.2} MB + values {:.2} MB (unshared {:.2} MB)",
        mb(plan.len),
        mb(persistent.len),
        mb(plan.len - plan.values_start),
        mb(plan.unshared_len)
    );
    let _ = writeln!(out, "persistent:");
    for b in persistent.buffers.values() {
        let _ = writeln!(out, "  [{:>9}..{:>9})  {}", b.offset, b.offset + b.len, b.name);
    }
    let _ = writeln!(out, "values:");
    for &id in order {
        let node = graph.node(id);
        if matches!(node.op, Op::Parameter(_) | Op::State(_)) {
            continue;
        }
        let b = &plan.buffers[&id];
        let alias = if root(graph, id) != id { "  (alias)" } else { "" };
        let _ = writeln!(out, "  [{:>9}..{:>9})  {}{alias}", b.offset, b.offset + b.len, node.name);
        if let Some(s) = plan.scratch.get(&id) {
            let _ = writeln!(out, "  [{:>9}..{:>9})  {}", s.offset, s.offset + s.len, s.name);
        }
    }
    out
}
