//! The rewriter's e-graph language: kiln's ops as egg e-nodes, with shapes in an analysis.
//!
//! Ops that rules mention get a named variant, so rules read as patterns over op names. Their
//! attributes, when they have any, are the first child: an [`Node::Attr`] leaf holding the
//! interned op (`(conv2d ?attrs ?x ?w)`), so rules can carry them into a fused op. Every other
//! op is an [`Node::Other`] whose key holds the op itself; a leaf's key also holds its name and
//! shape, so distinct parameters never merge. Constants are keyed by value and shape only, so
//! equal constants are shared.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use egg::{Analysis, DidMerge, EGraph, FromOp, Id, Language};
use kiln_ir::{Op, Shape};

/// A key into the [`Ops`] table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpKey {
    /// The index in the table.
    pub index: u32,
    /// The op's name (for printing; the index alone identifies it).
    pub name: &'static str,
}

impl fmt::Display for OpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.name, self.index)
    }
}

impl FromStr for OpKey {
    type Err = String;
    /// Keys only come from the table; patterns never spell one, so nothing parses.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Err(format!("`{s}` is not an op key"))
    }
}

mod node {
    #![allow(missing_docs)] // the variants are the ops of the same names (see `kiln_ir::ops`)
    use super::OpKey;
    use egg::{define_language, Id};

    define_language! {
        /// One e-node: an op applied to e-classes.
        pub enum Node {
            "relu" = Relu([Id; 1]),
            "step" = Step([Id; 1]),
            "add" = Add([Id; 2]),
            "sub" = Sub([Id; 2]),
            "mul" = Mul([Id; 2]),
            "bias_add" = BiasAdd([Id; 2]),
            "softmax" = Softmax([Id; 1]),
            "relu_grad" = ReluGrad([Id; 2]),
            "softmax_cross_entropy_grad" = SoftmaxCrossEntropyGrad([Id; 4]),
            "matmul" = MatMul([Id; 3]),
            "conv2d" = Conv2d([Id; 3]),
            "max_pool2d" = MaxPool2d([Id; 2]),
            "max_pool2d_grad" = MaxPool2dGrad([Id; 3]),
            "one_hot" = OneHot([Id; 2]),
            "broadcast" = Broadcast([Id; 2]),
            "transpose" = Transpose([Id; 2]),
            "reshape" = Reshape([Id; 2]),
            "dropout" = Dropout([Id; 2]),
            "matmul_bias_act" = MatMulBiasAct([Id; 4]),
            "conv2d_bias_act" = Conv2dBiasAct([Id; 4]),
            "conv2d_bias_act_max_pool2d" = Conv2dBiasActMaxPool2d([Id; 4]),
            "max_pool2d_grad_relu" = MaxPool2dGradRelu([Id; 3]),
            "reduce_sum" = ReduceSum([Id; 2]),
            Attr(OpKey),
            Other(OpKey, Vec<Id>),
        }
    }
}
pub use node::Node;

/// The named ops whose first child is an [`Node::Attr`].
const ATTRIBUTED: &[&str] = &[
    "matmul",
    "conv2d",
    "max_pool2d",
    "max_pool2d_grad",
    "one_hot",
    "broadcast",
    "transpose",
    "reshape",
    "dropout",
    "matmul_bias_act",
    "conv2d_bias_act",
    "conv2d_bias_act_max_pool2d",
    "max_pool2d_grad_relu",
    "reduce_sum",
];

/// The named ops without attributes.
const PLAIN: &[&str] = &[
    "relu",
    "step",
    "add",
    "sub",
    "mul",
    "bias_add",
    "softmax",
    "relu_grad",
    "softmax_cross_entropy_grad",
];

/// One entry of the op table.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The op with its attributes.
    pub op: Op,
    /// For a leaf: its shape and (except for constants) its name.
    pub leaf: Option<(Shape, Option<String>)>,
}

/// The interned ops of one e-graph.
#[derive(Clone, Debug, Default)]
pub struct Ops {
    entries: Vec<Entry>,
    index: HashMap<String, u32>,
}

impl Ops {
    /// The key of `entry`, adding it if new.
    pub fn intern(&mut self, entry: Entry) -> OpKey {
        let text = format!(
            "{}|{:?}",
            serde_json::to_string(&entry.op).expect("ops serialise"),
            entry.leaf
        );
        let name = entry.op.name();
        let next = self.entries.len() as u32;
        let index = *self.index.entry(text).or_insert_with(|| {
            self.entries.push(entry);
            next
        });
        OpKey { index, name }
    }

    /// The entry of `key`.
    pub fn get(&self, key: OpKey) -> &Entry {
        &self.entries[key.index as usize]
    }
}

/// What the analysis knows of an e-class.
#[derive(Clone, Debug, PartialEq)]
pub struct Data {
    /// The shape of the value, `None` for attribute leaves and for nodes whose operands do not
    /// fit the op (never extracted).
    pub shape: Option<Shape>,
    /// The value when the class is a constant fill.
    pub constant: Option<f64>,
}

/// Shapes and constants of e-classes, and the op table.
#[derive(Clone, Debug, Default)]
pub struct ShapeAnalysis {
    /// The interned ops.
    pub ops: Ops,
}

/// The e-graph the rewriter works on.
pub type KilnGraph = EGraph<Node, ShapeAnalysis>;

impl Node {
    /// The e-node of `op` applied to `operands`, interning its attributes in `egraph`.
    pub fn add_op(
        egraph: &mut KilnGraph,
        op: &Op,
        leaf: Option<(Shape, Option<String>)>,
        operands: &[Id],
    ) -> Id {
        let name = op.name();
        if ATTRIBUTED.contains(&name) {
            let key = egraph.analysis.ops.intern(Entry { op: op.clone(), leaf: None });
            let attr = egraph.add(Node::Attr(key));
            let mut children = vec![attr];
            children.extend_from_slice(operands);
            let node = Node::from_op(name, children).expect("a named variant of this arity");
            egraph.add(node)
        } else if PLAIN.contains(&name) {
            let node =
                Node::from_op(name, operands.to_vec()).expect("a named variant of this arity");
            egraph.add(node)
        } else {
            let key = egraph.analysis.ops.intern(Entry { op: op.clone(), leaf });
            egraph.add(Node::Other(key, operands.to_vec()))
        }
    }

    /// The op of this e-node and its operand children (without the attribute child); `None`
    /// for an attribute leaf.
    pub fn op(&self, ops: &Ops, attr_of: impl Fn(Id) -> Option<OpKey>) -> Option<(Op, Vec<Id>)> {
        match self {
            Node::Attr(_) => None,
            Node::Other(key, children) => Some((ops.get(*key).op.clone(), children.clone())),
            node => {
                let children = node.children();
                let name = node.to_string();
                if ATTRIBUTED.contains(&name.as_str()) {
                    let key = attr_of(children[0])?;
                    Some((ops.get(key).op.clone(), children[1..].to_vec()))
                } else {
                    let op = Op::from_parts(&name, serde_json::Map::new()).ok()?;
                    Some((op, children.to_vec()))
                }
            }
        }
    }
}

/// The attribute key held by an e-class, if it is an attribute leaf.
pub fn attr_of(egraph: &KilnGraph, id: Id) -> Option<OpKey> {
    egraph[id].nodes.iter().find_map(|n| match n {
        Node::Attr(key) => Some(*key),
        _ => None,
    })
}

impl Analysis<Node> for ShapeAnalysis {
    type Data = Data;

    fn make(egraph: &mut KilnGraph, enode: &Node, _: Id) -> Data {
        let none = Data { shape: None, constant: None };
        if let Node::Other(key, _) = enode {
            let entry = egraph.analysis.ops.get(*key);
            if let Some((shape, _)) = &entry.leaf {
                let constant = match &entry.op {
                    Op::Constant(c) => Some(c.value),
                    _ => None,
                };
                return Data { shape: Some(shape.clone()), constant };
            }
        }
        let Some((op, operands)) = enode.op(&egraph.analysis.ops, |id| attr_of(egraph, id)) else {
            return none;
        };
        let shapes: Option<Vec<Shape>> =
            operands.iter().map(|&c| egraph[c].data.shape.clone()).collect();
        let Some(shapes) = shapes else { return none };
        let refs: Vec<&Shape> = shapes.iter().collect();
        Data { shape: op.spec().infer(&refs).ok(), constant: None }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let mut changed_a = false;
        if a.shape.is_none() && b.shape.is_some() {
            a.shape = b.shape.clone();
            changed_a = true;
        }
        if a.constant.is_none() && b.constant.is_some() {
            a.constant = b.constant;
            changed_a = true;
        }
        DidMerge(changed_a, a.shape != b.shape || a.constant != b.constant)
    }
}
