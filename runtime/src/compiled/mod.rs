//! Running a compiled model, whoever compiled it.
//!
//! A compiled model is a [`ModelLayout`] (programs, memory slots, persistent variables,
//! training defaults) plus one native function per kernel. The JIT backend builds the layout
//! and compiles the kernels in-process; an executable made by `kiln build` carries the layout
//! as JSON and has the kernels linked in. Both run through the same [`Executor`], so the two
//! paths compute bit-identical losses and weights by construction.

mod executor;
mod layout;

pub use executor::Executor;
pub use layout::{
    EarlyStoppingSetting, KernelEntry, LayoutError, ModelLayout, ProgramLayout, Slot,
    TrainingSettings, Variable,
};
