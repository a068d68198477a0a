//! kiln-ir: the graph IR of the kiln compiler.
//!
//! - [`shape`] and [`tensor`]: static f32 shapes (NHWC for images) and f64 reference tensors;
//! - [`ops`]: the op table — each op's attributes, shape rule, reference semantics and VJP;
//! - [`graph`]: the DAG of ops on petgraph, with validation;
//! - [`text`]: the stable one-line-per-node text form (printer and parser) and Graphviz output;
//! - [`model`]: model files (JSON) and their lowering to a forward graph.
//!
//! Architecture invariant: this crate knows nothing of egg, Cranelift or the runtime.
#![warn(missing_docs)]

pub mod graph;
pub mod init;
pub mod model;
pub mod ops;
pub mod shape;
pub mod tensor;
pub mod text;

pub use graph::{Graph, Node, NodeId};
pub use ops::{EvalCtx, Op, OpSpec};
pub use shape::Shape;
pub use tensor::Tensor;

/// An error in building, checking or parsing a graph. Messages name the node and the shapes.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum IrError {
    /// An op was applied to operands of the wrong shapes.
    #[error("node `{node}` ({op}): {message} (operand shapes: {shapes})")]
    Shape {
        /// The node's name.
        node: String,
        /// The op's name.
        op: &'static str,
        /// The operand shapes, printed.
        shapes: String,
        /// What is wrong.
        message: String,
    },
    /// Autodiff reached an op with no gradient rule.
    #[error("node `{node}` has no gradient rule")]
    NotDifferentiable {
        /// The node's name.
        node: String,
    },
    /// The graph is not a DAG.
    #[error("the graph has a cycle through node `{node}`")]
    Cycle {
        /// A node on the cycle.
        node: String,
    },
    /// Any other structural problem.
    #[error("node `{node}`: {message}")]
    Invalid {
        /// The node's name.
        node: String,
        /// What is wrong.
        message: String,
    },
    /// The text form could not be parsed.
    #[error("line {line}: {message}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}
