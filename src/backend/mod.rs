//! Step backends: what the runtime's training loop drives.
//!
//! - [`JitBackend`]: the training step compiled to native kernels with Cranelift;
//! - [`InterpreterBackend`]: the reference interpreter (slow, f64), the oracle;
//! - [`lowered`]: a model's programs and runtime layout, shared by the JIT and `kiln build`.

mod interp;
mod jit;
pub mod lowered;

pub use interp::{count_correct, InterpreterBackend};
pub use jit::{JitBackend, JitOptions, JitStats};
