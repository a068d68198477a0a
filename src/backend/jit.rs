//! The JIT backend: training and evaluation steps compiled to native code.
//!
//! Two programs are compiled for the model's batch size: the training step and the evaluation
//! step. A shorter batch (the last of an epoch) is padded up to that size with zero-weight rows
//! (see [`kiln_runtime::padding`]), so no other specialisation is ever needed. Both programs
//! share the persistent region of the arena (parameters and optimizer state) and the values
//! region, which is as large as the larger program needs.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use kiln_compiler::codegen::{compile, CompiledKernels};
use kiln_compiler::memory::Persistent;
use kiln_compiler::program::{build, initial_persistent, Io, Program};
use kiln_compiler::step::{compiled_evaluation, compiled_training_step, CompileOptions};
use kiln_compiler::CompileError;
use kiln_ir::model::{Loss, Model};
use kiln_runtime::checkpoint::check_compatible;
use kiln_runtime::exec::{run_kernels, KernelCall, Pool};
use kiln_runtime::padding::{write_padded, PaddedInputs};
use kiln_runtime::{
    BackendError, Batch, Checkpoint, CheckpointError, Checkpointable, EvalOutput, StepBackend,
};

/// A program and its compiled kernels.
struct Compiled {
    program: Program,
    calls: Vec<KernelCall>,
    /// Keeps the machine code alive for `calls`.
    _code: CompiledKernels,
}

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

/// Trains a model with compiled kernels on a thread pool.
pub struct JitBackend {
    model: Model,
    persistent: Persistent,
    arena: Vec<f32>,
    train: Compiled,
    eval: Option<Compiled>,
    pool: Pool,
    step: u64,
    stats: JitStats,
    /// The shape of every persistent buffer, for checkpoints.
    shapes: BTreeMap<String, Vec<usize>>,
    /// How graphs are compiled.
    options: CompileOptions,
}

fn backend_error(e: impl std::fmt::Display) -> BackendError {
    BackendError::new(e.to_string())
}

impl JitBackend {
    /// Compiles the training step of `model` for its batch size and initialises the
    /// parameters; kernels run on `threads` threads.
    pub fn new(model: Model, threads: usize) -> Result<Self, CompileError> {
        Self::with_options(model, threads, CompileOptions::default())
    }

    /// Like [`JitBackend::new`], with compile options (e.g. fusion off).
    pub fn with_options(
        model: Model,
        threads: usize,
        options: CompileOptions,
    ) -> Result<Self, CompileError> {
        let batch = model.training.batch_size;
        let start = Instant::now();
        let (first, _) = compiled_training_step(&model, batch, &options)?;
        let mut persistent = Persistent::default();
        persistent.add_from(&first.graph);
        let arena = initial_persistent(&[&first.graph], &persistent);
        let shapes = first
            .graph
            .node_ids()
            .into_iter()
            .map(|id| first.graph.node(id))
            .filter(|n| persistent.buffers.contains_key(&n.name))
            .map(|n| (n.name.clone(), n.shape.dims().to_vec()))
            .collect();
        let mut stats = JitStats::default();
        stats.lower_ms += start.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let program = build(&first.graph, Io::from(&first), &persistent)?;
        let train = compile_program(program, t, &mut stats)?;
        let mut backend = JitBackend {
            model,
            persistent,
            arena,
            train,
            eval: None,
            pool: Pool::new(threads),
            step: 0,
            stats,
            shapes,
            options,
        };
        backend.grow_arena();
        Ok(backend)
    }

    /// Compile-time figures so far.
    pub fn stats(&self) -> &JitStats {
        &self.stats
    }

    /// The current values of the parameters and optimizer state, by name.
    pub fn variables(&self) -> HashMap<String, &[f32]> {
        self.persistent
            .buffers
            .iter()
            .map(|(name, b)| (name.clone(), &self.arena[b.offset..b.offset + b.len]))
            .collect()
    }

    /// Runs `steps` training steps on `batch`, timing every kernel, and returns for each kernel
    /// its name, work items and median time in microseconds, slowest first.
    pub fn profile(
        &mut self,
        batch: &Batch<'_>,
        steps: usize,
    ) -> Result<Vec<(String, usize, f64)>, BackendError> {
        let c = &self.train;
        let mut times = vec![Vec::with_capacity(steps); c.calls.len()];
        for _ in 0..steps {
            feed(&mut self.arena, &c.program, batch)?;
            for (i, call) in c.calls.iter().enumerate() {
                let t = Instant::now();
                // SAFETY: as in `train_step`, one kernel at a time.
                unsafe {
                    run_kernels(&self.pool, std::slice::from_ref(call), &mut self.arena, self.step)
                };
                times[i].push(t.elapsed().as_secs_f64() * 1e6);
            }
            self.step += 1;
        }
        let mut out: Vec<(String, usize, f64)> = c
            .program
            .kernels
            .iter()
            .zip(times)
            .map(|(k, mut t)| {
                t.sort_by(f64::total_cmp);
                (k.name.clone(), k.work_items(), t[t.len() / 2])
            })
            .collect();
        out.sort_by(|a, b| b.2.total_cmp(&a.2));
        Ok(out)
    }

    /// The training program.
    pub fn train_program(&self) -> &Program {
        &self.train.program
    }

    /// Makes the arena as long as every compiled program needs.
    fn grow_arena(&mut self) {
        let need =
            self.train.program.plan.len.max(self.eval.as_ref().map_or(0, |e| e.program.plan.len));
        if self.arena.len() < need {
            self.arena.resize(need, 0.0);
        }
        self.stats.arena_len = self.arena.len();
    }

    /// Compiles the evaluation program on first use.
    fn compile_eval(&mut self) -> Result<(), CompileError> {
        if self.eval.is_some() {
            return Ok(());
        }
        let start = Instant::now();
        let (lg, _) =
            compiled_evaluation(&self.model, self.model.training.batch_size, &self.options)?;
        let program = build(&lg.graph, Io::from(&lg), &self.persistent)?;
        self.eval = Some(compile_program(program, start, &mut self.stats)?);
        self.grow_arena();
        Ok(())
    }
}

/// Compiles a program's kernels, adding the time since `start` (lowering) and the codegen time
/// to `stats`.
fn compile_program(
    program: Program,
    start: Instant,
    stats: &mut JitStats,
) -> Result<Compiled, CompileError> {
    stats.lower_ms += start.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let code = compile(&program.kernels).map_err(|e| CompileError::Codegen(e.to_string()))?;
    stats.codegen_ms += t.elapsed().as_secs_f64() * 1e3;
    stats.kernels += program.kernels.len();
    let calls = program
        .kernels
        .iter()
        .enumerate()
        .map(|(i, k)| KernelCall { f: code.get(i), work_items: k.work_items() })
        .collect();
    Ok(Compiled { program, calls, _code: code })
}

/// Copies a batch into a program's input buffers, padded up to the program's batch size.
fn feed(arena: &mut [f32], program: &Program, batch: &Batch<'_>) -> Result<(), BackendError> {
    let mut ranges = vec![program.input.range(), program.weights.range()];
    ranges.extend(program.labels.as_ref().map(|l| l.range()));
    let mut slices = disjoint_mut(arena, &ranges)
        .ok_or_else(|| BackendError::new("the program's inputs overlap in the arena"))?
        .into_iter();
    let (x, weights, labels) = (slices.next(), slices.next(), slices.next());
    let (Some(x), Some(weights)) = (x, weights) else { unreachable!("two ranges were given") };
    write_padded(batch, PaddedInputs { x, labels, weights })
}

/// Mutable slices of `arena` for pairwise disjoint `ranges`, in the order given; `None` when
/// two overlap or one is out of bounds.
fn disjoint_mut<'a>(
    arena: &'a mut [f32],
    ranges: &[std::ops::Range<usize>],
) -> Option<Vec<&'a mut [f32]>> {
    let mut by_start: Vec<usize> = (0..ranges.len()).collect();
    by_start.sort_by_key(|&i| ranges[i].start);
    let mut out: Vec<Option<&'a mut [f32]>> = (0..ranges.len()).map(|_| None).collect();
    let (mut rest, mut at) = (arena, 0);
    for i in by_start {
        let r = &ranges[i];
        if r.start < at || r.end < r.start {
            return None;
        }
        if rest.len() < r.end - at {
            return None;
        }
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(r.start - at);
        let (slice, tail) = tail.split_at_mut(r.len());
        out[i] = Some(slice);
        (rest, at) = (tail, r.end);
    }
    out.into_iter().collect()
}

impl StepBackend for JitBackend {
    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32, BackendError> {
        let c = &self.train;
        feed(&mut self.arena, &c.program, batch)?;
        // SAFETY: the kernels were bounds-checked against this program's plan, and the arena
        // is at least as long as every compiled program needs.
        unsafe { run_kernels(&self.pool, &c.calls, &mut self.arena, self.step) };
        self.step += 1;
        Ok(self.arena[c.program.loss.offset])
    }

    fn eval_step(&mut self, batch: &Batch<'_>) -> Result<EvalOutput, BackendError> {
        self.compile_eval().map_err(backend_error)?;
        let c = self.eval.as_ref().expect("compiled above");
        feed(&mut self.arena, &c.program, batch)?;
        // SAFETY: as in `train_step`.
        unsafe { run_kernels(&self.pool, &c.calls, &mut self.arena, self.step) };
        let loss = self.arena[c.program.loss.offset];
        let correct = match self.model.training.loss {
            Loss::SoftmaxCrossEntropy => {
                let p = &c.program.prediction;
                let classes = p.len / c.program.batch;
                let logits = &self.arena[p.offset..p.offset + batch.len * classes];
                Some(argmax_matches(logits, classes, batch.labels))
            }
            _ => None,
        };
        Ok(EvalOutput { loss, correct })
    }
}

impl Checkpointable for JitBackend {
    fn checkpoint(&self) -> Checkpoint {
        let tensors = self
            .persistent
            .buffers
            .iter()
            .map(|(name, b)| {
                let values = self.arena[b.offset..b.offset + b.len].to_vec();
                (name.clone(), self.shapes[name].clone(), values)
            })
            .collect();
        Checkpoint { model: self.model.name.clone(), step: self.step, epoch: 0, tensors }
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let shapes = self.shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice()));
        check_compatible(checkpoint, &self.model.name, shapes)?;
        for (name, _, values) in &checkpoint.tensors {
            let b = &self.persistent.buffers[name];
            self.arena[b.offset..b.offset + b.len].copy_from_slice(values);
        }
        self.step = checkpoint.step;
        Ok(())
    }
}

/// How many rows of `logits` (`classes` per row) have their first maximum at the label.
fn argmax_matches(logits: &[f32], classes: usize, labels: &[f32]) -> usize {
    logits
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &label)| {
            let best = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            best == label as usize
        })
        .count()
}
