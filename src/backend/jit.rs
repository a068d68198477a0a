//! The JIT backend: training and evaluation steps compiled to native code in-process.
//!
//! Two programs are compiled for the model's batch size: the training step and (on first use)
//! the evaluation step. A shorter batch (the last of an epoch) is padded up to that size with
//! zero-weight rows (see [`kiln_runtime::padding`]), so no other specialisation is ever needed.
//! The kernels run in the runtime's [`Executor`], the same one that executables built by
//! `kiln build` use, so both paths are bit-identical.

use std::collections::HashMap;
use std::time::Instant;

use kiln_compiler::codegen::{compile, CompiledKernels};
use kiln_compiler::program::Program;
use kiln_compiler::step::CompileOptions;
use kiln_compiler::CompileError;
use kiln_ir::model::Model;
use kiln_runtime::compiled::Executor;
use kiln_runtime::exec::KernelFn;
use kiln_runtime::{
    BackendError, Batch, Checkpoint, CheckpointError, Checkpointable, EvalOutput, StepBackend,
};

use super::lowered::{program_layout, Lowered, ProgramKind};

/// Compile-time figures of the programs built so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JitStats {
    /// Milliseconds spent building graphs, planning and lowering.
    pub lower_ms: f64,
    /// Milliseconds spent in Cranelift.
    pub codegen_ms: f64,
    /// Number of kernels compiled.
    pub kernels: usize,
    /// Arena size in f32 elements.
    pub arena_len: usize,
}

/// How the JIT backend compiles and runs a model.
#[derive(Clone, Debug, PartialEq)]
pub struct JitOptions {
    /// Threads the kernels run on (at least 1).
    pub threads: usize,
    /// The compilation pipeline's options (the rewrite pass on or off).
    pub compile: CompileOptions,
}

impl Default for JitOptions {
    /// One thread, default compilation (fusion on).
    fn default() -> Self {
        JitOptions { threads: 1, compile: CompileOptions::default() }
    }
}

/// Trains a model with compiled kernels on a thread pool.
pub struct JitBackend {
    model: Model,
    lowered: Lowered,
    executor: Executor,
    stats: JitStats,
    /// Keeps the machine code of the training and evaluation kernels alive; declared after
    /// `executor`, which holds pointers into it, so that it is dropped last.
    _code: Vec<CompiledKernels>,
}

fn backend_error(e: impl std::fmt::Display) -> BackendError {
    BackendError::new(e.to_string())
}

/// Compiles a program's kernels, adding the codegen time to `stats`.
fn compile_program(
    program: &Program,
    stats: &mut JitStats,
) -> Result<(CompiledKernels, Vec<KernelFn>), CompileError> {
    let t = Instant::now();
    let code = compile(&program.kernels).map_err(|e| CompileError::Codegen(e.to_string()))?;
    stats.codegen_ms += t.elapsed().as_secs_f64() * 1e3;
    stats.kernels += program.kernels.len();
    let fns = (0..code.len()).map(|i| code.get(i)).collect();
    Ok((code, fns))
}

fn layout_error(e: kiln_runtime::compiled::LayoutError) -> CompileError {
    CompileError::Codegen(e.to_string())
}

impl JitBackend {
    /// Compiles the training step of `model` for its batch size and initialises the
    /// parameters; kernels run on `threads` threads.
    pub fn new(model: Model, threads: usize) -> Result<Self, CompileError> {
        Self::with_options(model, &JitOptions { threads, compile: CompileOptions::default() })
    }

    /// Compiles the training step of `model` as `options` say.
    pub fn with_options(model: Model, options: &JitOptions) -> Result<Self, CompileError> {
        let start = Instant::now();
        let lowered = Lowered::train(&model, &options.compile)?;
        let mut stats =
            JitStats { lower_ms: start.elapsed().as_secs_f64() * 1e3, ..JitStats::default() };
        let (code, fns) = compile_program(&lowered.train, &mut stats)?;
        // SAFETY: `fns` are the training program's kernels, in order, compiled against its
        // plan; `code` keeps them alive as long as the executor.
        let executor = unsafe {
            Executor::new(lowered.layout.clone(), &lowered.initial, &fns, None, options.threads)
        }
        .map_err(layout_error)?;
        stats.arena_len = executor.arena_len();
        Ok(JitBackend { model, lowered, executor, stats, _code: vec![code] })
    }

    /// Compile-time figures so far.
    pub fn stats(&self) -> &JitStats {
        &self.stats
    }

    /// The current values of the parameters and optimizer state, by name.
    pub fn variables(&self) -> HashMap<String, &[f32]> {
        self.executor.variables().map(|(n, v)| (n.to_string(), v)).collect()
    }

    /// Runs `steps` training steps on `batch`, timing every kernel, and returns for each kernel
    /// its symbol, work items and median time in microseconds, slowest first.
    pub fn profile(
        &mut self,
        batch: &Batch<'_>,
        steps: usize,
    ) -> Result<Vec<(String, usize, f64)>, BackendError> {
        self.executor.profile(batch, steps)
    }

    /// The training program.
    pub fn train_program(&self) -> &Program {
        &self.lowered.train
    }

    /// The executor running the kernels.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Compiles the evaluation program on first use.
    fn compile_eval(&mut self) -> Result<(), CompileError> {
        if self.executor.has_eval() {
            return Ok(());
        }
        let start = Instant::now();
        let program = self.lowered.lower_eval(&self.model)?;
        self.stats.lower_ms += start.elapsed().as_secs_f64() * 1e3;
        let (code, fns) = compile_program(&program, &mut self.stats)?;
        let layout = program_layout(ProgramKind::Eval, &program);
        // SAFETY: as in `with_options`, for the evaluation program.
        unsafe { self.executor.set_eval(layout, &fns) }.map_err(layout_error)?;
        self._code.push(code);
        self.stats.arena_len = self.executor.arena_len();
        Ok(())
    }
}

impl StepBackend for JitBackend {
    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32, BackendError> {
        self.executor.train_step(batch)
    }

    fn eval_step(&mut self, batch: &Batch<'_>) -> Result<EvalOutput, BackendError> {
        self.compile_eval().map_err(backend_error)?;
        self.executor.eval_step(batch)
    }
}

impl Checkpointable for JitBackend {
    fn checkpoint(&self) -> Checkpoint {
        self.executor.checkpoint()
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        self.executor.restore(checkpoint)
    }
}
