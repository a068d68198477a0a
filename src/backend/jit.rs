//! The JIT backend: training and evaluation steps compiled to native code.
//!
//! Programs are specialised to their batch size. The last, smaller batch of an epoch gets its
//! own specialisation, compiled when first needed (no masking): every program shares the
//! persistent region of the arena (parameters and optimizer state) and the values region,
//! which is as large as the largest program needs.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use kiln_compiler::codegen::{compile, CompiledKernels};
use kiln_compiler::memory::Persistent;
use kiln_compiler::program::{build, initial_persistent, Program};
use kiln_compiler::step::{evaluation, training_step};
use kiln_compiler::CompileError;
use kiln_ir::model::{Loss, Model};
use kiln_runtime::checkpoint::check_compatible;
use kiln_runtime::exec::{run_kernels, KernelCall, Pool};
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
    train: HashMap<usize, Compiled>,
    eval: HashMap<usize, Compiled>,
    pool: Pool,
    step: u64,
    stats: JitStats,
    /// The shape of every persistent buffer, for checkpoints.
    shapes: BTreeMap<String, Vec<usize>>,
}

fn backend_error(e: impl std::fmt::Display) -> BackendError {
    BackendError::new(e.to_string())
}

impl JitBackend {
    /// Compiles the training step of `model` for its batch size and initialises the
    /// parameters; kernels run on `threads` threads.
    pub fn new(model: Model, threads: usize) -> Result<Self, CompileError> {
        let batch = model.training.batch_size;
        let start = Instant::now();
        let first = training_step(&model, batch)?;
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
        let mut backend = JitBackend {
            model,
            persistent,
            arena,
            train: HashMap::new(),
            eval: HashMap::new(),
            pool: Pool::new(threads),
            step: 0,
            stats: JitStats::default(),
            shapes,
        };
        backend.stats.lower_ms += start.elapsed().as_secs_f64() * 1e3;
        backend.compile_train(batch)?;
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
        self.compile_train(batch.len).map_err(backend_error)?;
        let c = &self.train[&batch.len];
        let mut times = vec![Vec::with_capacity(steps); c.calls.len()];
        for _ in 0..steps {
            Self::feed(&mut self.arena, &c.program, batch)?;
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

    /// The training program for `batch`, if compiled.
    pub fn train_program(&self, batch: usize) -> Option<&Program> {
        self.train.get(&batch).map(|c| &c.program)
    }

    fn finish(&mut self, program: Program, start: Instant) -> Result<Compiled, CompileError> {
        self.stats.lower_ms += start.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let code = compile(&program.kernels).map_err(|e| CompileError::Codegen(e.to_string()))?;
        self.stats.codegen_ms += t.elapsed().as_secs_f64() * 1e3;
        self.stats.kernels += program.kernels.len();
        let calls = program
            .kernels
            .iter()
            .enumerate()
            .map(|(i, k)| KernelCall { f: code.get(i), work_items: k.work_items() })
            .collect();
        if self.arena.len() < program.plan.len {
            self.arena.resize(program.plan.len, 0.0);
        }
        self.stats.arena_len = self.arena.len();
        Ok(Compiled { program, calls, _code: code })
    }

    fn compile_train(&mut self, batch: usize) -> Result<(), CompileError> {
        if self.train.contains_key(&batch) {
            return Ok(());
        }
        let start = Instant::now();
        let tg = training_step(&self.model, batch)?;
        let program =
            build(&tg.graph, tg.input, tg.labels, tg.loss, tg.prediction, &self.persistent)?;
        let compiled = self.finish(program, start)?;
        self.train.insert(batch, compiled);
        Ok(())
    }

    fn compile_eval(&mut self, batch: usize) -> Result<(), CompileError> {
        if self.eval.contains_key(&batch) {
            return Ok(());
        }
        let start = Instant::now();
        let lg = evaluation(&self.model, batch)?;
        let program =
            build(&lg.graph, lg.input, lg.labels, lg.loss, lg.prediction, &self.persistent)?;
        let compiled = self.finish(program, start)?;
        self.eval.insert(batch, compiled);
        Ok(())
    }

    /// Copies a batch into a program's input buffers.
    fn feed(arena: &mut [f32], program: &Program, batch: &Batch<'_>) -> Result<(), BackendError> {
        let input = &program.input;
        if batch.x.len() != input.len {
            return Err(BackendError::new(format!(
                "the model's input holds {} values per batch of {} but the batch holds {}",
                input.len,
                batch.len,
                batch.x.len()
            )));
        }
        arena[input.offset..input.offset + input.len].copy_from_slice(batch.x);
        if let Some(l) = &program.labels {
            arena[l.offset..l.offset + l.len].copy_from_slice(&batch.labels[..l.len]);
        }
        Ok(())
    }
}

impl StepBackend for JitBackend {
    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32, BackendError> {
        self.compile_train(batch.len).map_err(backend_error)?;
        let c = &self.train[&batch.len];
        Self::feed(&mut self.arena, &c.program, batch)?;
        // SAFETY: the kernels were bounds-checked against this program's plan, and the arena
        // is at least as long as every compiled program needs.
        unsafe { run_kernels(&self.pool, &c.calls, &mut self.arena, self.step) };
        self.step += 1;
        Ok(self.arena[c.program.loss.offset])
    }

    fn eval_step(&mut self, batch: &Batch<'_>) -> Result<EvalOutput, BackendError> {
        self.compile_eval(batch.len).map_err(backend_error)?;
        let c = &self.eval[&batch.len];
        Self::feed(&mut self.arena, &c.program, batch)?;
        // SAFETY: as in `train_step`.
        unsafe { run_kernels(&self.pool, &c.calls, &mut self.arena, self.step) };
        let loss = self.arena[c.program.loss.offset];
        let correct = match self.model.training.loss {
            Loss::SoftmaxCrossEntropy => {
                let p = &c.program.prediction;
                let logits = &self.arena[p.offset..p.offset + p.len];
                let classes = p.len / batch.len;
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
