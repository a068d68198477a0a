//! kiln: a deep-learning graph compiler for training small and medium networks on a CPU.
//!
//! This facade re-exports the crates ([`ir`], [`compiler`], [`runtime`]) and joins them:
//! [`backend`] holds the step backends the training loop drives; [`aot`] builds standalone
//! training executables.
#![warn(missing_docs)]

pub mod aot;
pub mod backend;

pub use kiln_compiler as compiler;
pub use kiln_ir as ir;
pub use kiln_runtime as runtime;
