//! kiln-compiler: from a model to a training step.
//!
//! - [`autodiff`]: reverse-mode differentiation over the IR;
//! - [`optimizer`]: optimizer updates (SGD, momentum, RMSprop, Adam, weight decay) as graph
//!   nodes with their state;
//! - [`step`]: the training-step and evaluation graphs of a model;
//! - [`interp`]: the reference interpreter, the oracle for every backend.
//!
//! Architecture invariant: the compiler depends on `kiln-ir`, never on `kiln-runtime`.
#![warn(missing_docs)]

pub mod autodiff;
pub mod codegen;
pub mod interp;
pub mod kernel;
pub mod lower;
pub mod memory;
pub mod optimizer;
pub mod program;
pub mod rewrite;
pub mod step;

use kiln_ir::model::ModelError;
use kiln_ir::{IrError, Shape};

/// An error while building or running a compiled graph.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The model file is invalid.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A graph is malformed (a bug in a pass, or a hand-written graph).
    #[error(transparent)]
    Ir(#[from] IrError),
    /// An input node was not fed.
    #[error("input `{0}` was not fed")]
    MissingFeed(String),
    /// An input was fed a tensor of the wrong shape.
    #[error("input `{input}` expects {expected}, got {got}")]
    FeedShape {
        /// The input's name.
        input: String,
        /// Its shape in the graph.
        expected: Shape,
        /// The shape fed.
        got: Shape,
    },
    /// Lowering a node to kernels failed (a bug in an earlier pass).
    #[error(transparent)]
    Lower(#[from] crate::lower::LowerError),
    /// Cranelift rejected a kernel (a bug in code generation).
    #[error("code generation: {0}")]
    Codegen(String),
    /// A parameter or state has no value.
    #[error("variable `{0}` has no value")]
    MissingVariable(String),
}
