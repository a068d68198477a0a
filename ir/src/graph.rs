//! The IR graph: a DAG of ops on `petgraph::StableDiGraph`, each node with its inferred shape and
//! a readable, unique name; edges are ordered operands.

use std::collections::{BTreeSet, HashMap};

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::ops::Op;
use crate::shape::Shape;
use crate::IrError;

/// A node's handle in a [`Graph`]. Stable across removals of other nodes.
pub type NodeId = NodeIndex<u32>;

/// One op application: the op with its attributes, its output shape and its name.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The op and its attributes.
    pub op: Op,
    /// The shape of the value it produces.
    pub shape: Shape,
    /// A readable name, unique in the graph (taken from the model file where possible).
    pub name: String,
}

/// A dataflow graph of tensor ops. Edge weights are operand positions.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    inner: StableDiGraph<Node, u32>,
    names: HashMap<String, NodeId>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an op applied to `operands`, inferring its shape. The name is made unique (and
    /// sanitised to `[A-Za-z0-9_.-]`) if needed.
    pub fn add(
        &mut self,
        op: impl Into<Op>,
        operands: &[NodeId],
        name: &str,
    ) -> Result<NodeId, IrError> {
        let op = op.into();
        let shape = self.infer(&op, operands, name)?;
        Ok(self.insert(op, operands, shape, name))
    }

    /// Adds a leaf (input, parameter, state or constant) whose shape is given.
    pub fn leaf(&mut self, op: impl Into<Op>, shape: Shape, name: &str) -> Result<NodeId, IrError> {
        let op = op.into();
        if !op.spec().is_leaf() {
            return Err(IrError::Invalid {
                node: name.into(),
                message: format!("`{}` is not a leaf op; its shape is inferred", op.name()),
            });
        }
        Ok(self.insert(op, &[], shape, name))
    }

    fn infer(&self, op: &Op, operands: &[NodeId], name: &str) -> Result<Shape, IrError> {
        let shapes: Vec<&Shape> = operands.iter().map(|&o| &self.inner[o].shape).collect();
        if op.spec().is_leaf() {
            return Err(IrError::Invalid {
                node: name.into(),
                message: format!("`{}` is a leaf: it needs a given shape", op.name()),
            });
        }
        op.spec().infer(&shapes).map_err(|message| IrError::Shape {
            node: name.into(),
            op: op.name(),
            shapes: shapes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
            message,
        })
    }

    fn insert(&mut self, op: Op, operands: &[NodeId], shape: Shape, name: &str) -> NodeId {
        let name = self.unique_name(name);
        let id = self.inner.add_node(Node { op, shape, name: name.clone() });
        for (i, &o) in operands.iter().enumerate() {
            self.inner.add_edge(o, id, i as u32);
        }
        self.names.insert(name, id);
        id
    }

    fn unique_name(&self, name: &str) -> String {
        let mut base: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' })
            .collect();
        if base.is_empty() {
            base.push('v');
        }
        if !self.names.contains_key(&base) {
            return base;
        }
        (1..).map(|i| format!("{base}.{i}")).find(|n| !self.names.contains_key(n)).unwrap_or(base)
    }

    /// Renames a node (made unique and sanitised like a new name) and returns the name given.
    pub fn rename(&mut self, id: NodeId, name: &str) -> String {
        let old = self.inner[id].name.clone();
        self.names.remove(&old);
        let new = self.unique_name(name);
        self.inner[id].name = new.clone();
        self.names.insert(new.clone(), id);
        new
    }

    /// The node behind a handle.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.inner[id]
    }

    /// The node with this name.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.names.get(name).copied()
    }

    /// The operands of a node, in order.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        let mut edges: Vec<(u32, NodeId)> = self
            .inner
            .edges_directed(id, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        edges.sort();
        edges.into_iter().map(|(_, n)| n).collect()
    }

    /// The nodes that use this node as an operand (each once), in index order.
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let set: BTreeSet<NodeId> =
            self.inner.neighbors_directed(id, Direction::Outgoing).collect();
        set.into_iter().collect()
    }

    /// Replaces operand `position` of `node` by `new` (no shape check: call [`Graph::validate`]).
    pub fn replace_operand(&mut self, node: NodeId, position: usize, new: NodeId) {
        let edge = self
            .inner
            .edges_directed(node, Direction::Incoming)
            .find(|e| *e.weight() as usize == position)
            .map(|e| e.id());
        if let Some(e) = edge {
            self.inner.remove_edge(e);
        }
        self.inner.add_edge(new, node, position as u32);
    }

    /// All node handles, in insertion order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.inner.node_indices().collect()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.inner.node_count()
    }

    /// True when the graph has no node.
    pub fn is_empty(&self) -> bool {
        self.inner.node_count() == 0
    }

    /// The underlying petgraph graph (read only).
    pub fn petgraph(&self) -> &StableDiGraph<Node, u32> {
        &self.inner
    }

    /// The nodes in a topological order; among ready nodes the oldest comes first, so the order
    /// is deterministic and follows construction order where it can.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, IrError> {
        let mut indegree: HashMap<NodeId, usize> = HashMap::new();
        let mut ready = BTreeSet::new();
        for id in self.inner.node_indices() {
            let d = self.inner.edges_directed(id, Direction::Incoming).count();
            indegree.insert(id, d);
            if d == 0 {
                ready.insert(id);
            }
        }
        let mut order = Vec::with_capacity(self.len());
        while let Some(id) = ready.pop_first() {
            order.push(id);
            for e in self.inner.edges_directed(id, Direction::Outgoing) {
                let d = indegree.get_mut(&e.target()).expect("node in graph");
                *d -= 1;
                if *d == 0 {
                    ready.insert(e.target());
                }
            }
        }
        if order.len() != self.len() {
            let stuck = indegree
                .iter()
                .filter(|(_, &d)| d > 0)
                .map(|(&id, _)| id)
                .min()
                .expect("a node is left");
            return Err(IrError::Cycle { node: self.inner[stuck].name.clone() });
        }
        Ok(order)
    }

    /// The `output` nodes by name, in topological order.
    pub fn outputs(&self) -> Vec<(String, NodeId)> {
        self.nodes_where(|op| matches!(op, Op::Output(_)))
            .into_iter()
            .map(|id| match &self.inner[id].op {
                Op::Output(o) => (o.name.clone(), id),
                _ => unreachable!("filtered to outputs"),
            })
            .collect()
    }

    /// The nodes whose op satisfies `pred`, in insertion order.
    pub fn nodes_where(&self, pred: impl Fn(&Op) -> bool) -> Vec<NodeId> {
        self.inner.node_indices().filter(|&id| pred(&self.inner[id].op)).collect()
    }

    /// Total number of trainable parameter elements.
    pub fn parameter_count(&self) -> usize {
        self.nodes_where(|op| matches!(op, Op::Parameter(_)))
            .iter()
            .map(|&id| self.inner[id].shape.numel())
            .sum()
    }

    /// Checks the whole graph: acyclic, every shape re-inferred and equal to the stored one,
    /// leaves without operands, `assign` targets are parameters or state of the same shape.
    pub fn validate(&self) -> Result<(), IrError> {
        let order = self.topo_order()?;
        for id in order {
            let node = &self.inner[id];
            let operands = self.operands(id);
            if node.op.spec().is_leaf() {
                if !operands.is_empty() {
                    return Err(IrError::Invalid {
                        node: node.name.clone(),
                        message: format!("leaf `{}` cannot have operands", node.op.name()),
                    });
                }
                continue;
            }
            let shape = self.infer(&node.op, &operands, &node.name)?;
            if shape != node.shape {
                return Err(IrError::Invalid {
                    node: node.name.clone(),
                    message: format!("annotated {} but the op gives {shape}", node.shape),
                });
            }
            if let Op::Assign(_) = node.op {
                let target = &self.inner[operands[0]];
                if !matches!(target.op, Op::Parameter(_) | Op::State(_)) {
                    return Err(IrError::Invalid {
                        node: node.name.clone(),
                        message: format!(
                            "assigns to `{}`, which is a {} (only parameters and state can be assigned)",
                            target.name,
                            target.op.name()
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Add, Assign, Constant, Input, Relu};

    #[test]
    fn names_are_made_unique_and_sanitised() {
        let mut g = Graph::new();
        let a = g.leaf(Input {}, Shape::new([2]), "x").unwrap();
        let b = g.add(Relu {}, &[a], "x").unwrap();
        let c = g.add(Relu {}, &[b], "a b/c").unwrap();
        assert_eq!(g.node(b).name, "x.1");
        assert_eq!(g.node(c).name, "a_b_c");
        assert_eq!(g.rename(c, "x"), "x.2");
        assert_eq!(g.find("x.2"), Some(c));
        assert_eq!(g.find("a_b_c"), None);
    }

    #[test]
    fn validate_finds_cycles_and_bad_assigns() {
        let mut g = Graph::new();
        let x = g.leaf(Input {}, Shape::new([2]), "x").unwrap();
        let a = g.add(Relu {}, &[x], "a").unwrap();
        let b = g.add(Add {}, &[a, x], "b").unwrap();
        g.validate().unwrap();
        g.replace_operand(a, 0, b);
        let e = g.validate().unwrap_err();
        assert!(matches!(&e, IrError::Cycle { node } if node == "a" || node == "b"), "{e}");
        assert!(e.to_string().contains("cycle"));

        let mut g = Graph::new();
        let c = g.leaf(Constant { value: 1.0 }, Shape::new([2]), "c").unwrap();
        let x = g.leaf(Input {}, Shape::new([2]), "x").unwrap();
        g.add(Assign {}, &[c, x], "bad").unwrap();
        let e = g.validate().unwrap_err().to_string();
        assert!(e.contains("only parameters and state can be assigned"), "{e}");
    }

    #[test]
    fn shape_errors_name_the_node_and_the_shapes() {
        let mut g = Graph::new();
        let x = g.leaf(Input {}, Shape::new([2, 3]), "x").unwrap();
        let y = g.leaf(Input {}, Shape::new([3, 2]), "y").unwrap();
        let e = g.add(Add {}, &[x, y], "sum").unwrap_err().to_string();
        assert!(e.contains("`sum` (add)") && e.contains("f32[2,3], f32[3,2]"), "{e}");
    }
}
