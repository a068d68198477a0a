//! Ahead-of-time builds (`kiln build`): a model compiled into a standalone training executable.
//!
//! [`emit`] lowers the model to the same two programs as the JIT ([`Lowered`]) and emits their
//! kernels, the runtime layout (JSON) and the initial parameters into one object file
//! ([`kiln_compiler::codegen::object`]); [`link`] links it with the trainer library
//! (`libkiln_trainer.a`, the `trainer/` crate) using the system C compiler. The executable runs
//! the kernels through the runtime's `Executor`, like the JIT.
//!
//! Architecture invariant: an executable links only the generated object, the trainer library
//! (the runtime and its dependencies) and the C library; nothing of the compiler or the IR.

mod link;

use std::time::Instant;

use kiln_compiler::codegen::object::{emit_object, ObjectProgram, ObjectSpec};
use kiln_compiler::step::CompileOptions;
use kiln_compiler::CompileError;
use kiln_ir::model::Model;

use crate::backend::lowered::{program_layout, Lowered, ProgramKind};

pub use link::{find_trainer_lib, link, LinkError, TRAINER_LIB, TRAINER_LIB_ENV};

/// The function of the trainer library that the generated `main` calls.
pub const ENTRY: &str = "kiln_trainer_main";

/// An object file for a model, and how long it took.
pub struct Emitted {
    /// The bytes of the object file.
    pub object: Vec<u8>,
    /// Kernels in the object (training and evaluation).
    pub kernels: usize,
    /// Milliseconds spent building graphs, planning and lowering.
    pub lower_ms: f64,
    /// Milliseconds spent in Cranelift and writing the object.
    pub codegen_ms: f64,
}

/// Compiles `model` (its training step and evaluation, for its batch size, with parameters
/// initialised from its seed) into an object file. `source` (the model file's name) is recorded
/// for `--help`. The same model always gives the same bytes.
pub fn emit(model: &Model, source: Option<&str>) -> Result<Emitted, CompileError> {
    let start = Instant::now();
    let lowered = Lowered::train(model, &CompileOptions::default())?;
    let eval = lowered.lower_eval(model)?;
    let mut layout = lowered.layout.clone();
    layout.eval = Some(program_layout(ProgramKind::Eval, &eval));
    if let Some(source) = source {
        layout.training.description.insert(0, ("model file".into(), source.into()));
    }
    let json = layout.to_json();
    let lower_ms = start.elapsed().as_secs_f64() * 1e3;

    let t = Instant::now();
    let symbols = |p: &kiln_runtime::compiled::ProgramLayout| {
        p.kernels.iter().map(|k| k.symbol.clone()).collect::<Vec<_>>()
    };
    let eval_layout = layout.eval.as_ref().expect("set above");
    let programs = vec![
        ObjectProgram {
            name: ProgramKind::Train.name(),
            kernels: &lowered.train.kernels,
            symbols: symbols(&layout.train),
        },
        ObjectProgram {
            name: ProgramKind::Eval.name(),
            kernels: &eval.kernels,
            symbols: symbols(eval_layout),
        },
    ];
    let spec =
        ObjectSpec { programs, layout: json.as_bytes(), initial: &lowered.initial, entry: ENTRY };
    let object = emit_object(&spec).map_err(|e| CompileError::Codegen(e.to_string()))?;
    Ok(Emitted {
        object,
        kernels: lowered.train.kernels.len() + eval.kernels.len(),
        lower_ms,
        codegen_ms: t.elapsed().as_secs_f64() * 1e3,
    })
}
