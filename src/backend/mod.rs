//! Step backends: what the runtime's training loop drives.
//!
//! - [`JitBackend`]: the training step compiled to native kernels with Cranelift;
//! - [`InterpreterBackend`]: the reference interpreter (slow, f64), the oracle.

mod interp;
mod jit;

pub use interp::{count_correct, InterpreterBackend};
pub use jit::{JitBackend, JitStats};
