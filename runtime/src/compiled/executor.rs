//! [`Executor`]: runs a compiled model's kernels over its arena, as a [`StepBackend`] and
//! [`Checkpointable`]. The JIT hands it the function pointers it just compiled; an executable
//! built by `kiln build` hands it the kernels linked into it.

use std::time::Instant;

use super::layout::{LayoutError, ModelLayout, ProgramLayout};
use crate::checkpoint::{check_compatible, Checkpoint, CheckpointError, Checkpointable};
use crate::exec::{run_kernels, KernelCall, KernelFn, Pool};
use crate::padding::{write_padded, PaddedInputs};
use crate::train::{BackendError, Batch, EvalOutput, StepBackend};

/// A compiled model ready to train: layout, arena, kernels and thread pool.
pub struct Executor {
    layout: ModelLayout,
    arena: Vec<f32>,
    train: Vec<KernelCall>,
    eval: Option<Vec<KernelCall>>,
    pool: Pool,
    step: u64,
}

/// Pairs a program's kernels with their functions.
fn calls(program: &ProgramLayout, fns: &[KernelFn]) -> Result<Vec<KernelCall>, LayoutError> {
    if fns.len() != program.kernels.len() {
        return Err(LayoutError(format!(
            "{} kernel functions for a program of {} kernels",
            fns.len(),
            program.kernels.len()
        )));
    }
    Ok(program
        .kernels
        .iter()
        .zip(fns)
        .map(|(k, &f)| KernelCall { f, work_items: k.work_items })
        .collect())
}

impl Executor {
    /// An executor for `layout` whose persistent region starts as `initial`, running the
    /// training kernels `train` (and `eval`, the evaluation kernels, when the layout has an
    /// evaluation program) on `threads` threads.
    ///
    /// # Safety
    /// `train` and `eval` must be the kernels the layout's programs list, in order, compiled
    /// against those programs' memory plans (so they access the arena only within
    /// `arena_len`).
    pub unsafe fn new(
        layout: ModelLayout,
        initial: &[f32],
        train: &[KernelFn],
        eval: Option<&[KernelFn]>,
        threads: usize,
    ) -> Result<Self, LayoutError> {
        layout.check()?;
        if initial.len() != layout.persistent_len {
            return Err(LayoutError(format!(
                "{} initial values for a persistent region of {}",
                initial.len(),
                layout.persistent_len
            )));
        }
        let train = calls(&layout.train, train)?;
        let eval = match (&layout.eval, eval) {
            (Some(p), Some(fns)) => Some(calls(p, fns)?),
            (None, None) => None,
            _ => return Err(LayoutError("evaluation kernels without their program".into())),
        };
        // Zeroed allocation (fresh pages from the OS, not a memset of the whole arena): the
        // kernels touch the values region only when they run.
        let mut arena = vec![0.0f32; layout.arena_len()];
        arena[..initial.len()].copy_from_slice(initial);
        Ok(Executor { layout, arena, train, eval, pool: Pool::new(threads), step: 0 })
    }

    /// Adds the evaluation program (the JIT compiles it on first use).
    ///
    /// # Safety
    /// As for [`Executor::new`]: `fns` are `program`'s kernels.
    pub unsafe fn set_eval(
        &mut self,
        program: ProgramLayout,
        fns: &[KernelFn],
    ) -> Result<(), LayoutError> {
        program.check()?;
        self.eval = Some(calls(&program, fns)?);
        self.layout.eval = Some(program);
        let need = self.layout.arena_len();
        if self.arena.len() < need {
            self.arena.resize(need, 0.0);
        }
        Ok(())
    }

    /// Whether the evaluation program is there.
    pub fn has_eval(&self) -> bool {
        self.eval.is_some()
    }

    /// The layout.
    pub fn layout(&self) -> &ModelLayout {
        &self.layout
    }

    /// Training steps taken (the step counter that seeds dropout and noise).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The arena length in f32 elements.
    pub fn arena_len(&self) -> usize {
        self.arena.len()
    }

    /// The threads kernels run on.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The current values of every parameter and optimizer-state variable, sorted by name.
    pub fn variables(&self) -> impl Iterator<Item = (&str, &[f32])> + '_ {
        self.layout.variables.iter().map(|v| (v.name.as_str(), &self.arena[v.range()]))
    }

    /// Runs `steps` training steps on `batch`, timing every kernel, and returns for each kernel
    /// its symbol, work items and median time in microseconds, slowest first.
    pub fn profile(
        &mut self,
        batch: &Batch<'_>,
        steps: usize,
    ) -> Result<Vec<(String, usize, f64)>, BackendError> {
        let mut times = vec![Vec::with_capacity(steps); self.train.len()];
        for _ in 0..steps {
            feed(&mut self.arena, &self.layout.train, batch)?;
            for (i, call) in self.train.iter().enumerate() {
                let t = Instant::now();
                // SAFETY: as in `train_step`, one kernel at a time.
                unsafe {
                    run_kernels(&self.pool, std::slice::from_ref(call), &mut self.arena, self.step)
                };
                times[i].push(t.elapsed().as_secs_f64() * 1e6);
            }
            self.step += 1;
        }
        let mut out: Vec<(String, usize, f64)> = self
            .layout
            .train
            .kernels
            .iter()
            .zip(times)
            .map(|(k, mut t)| {
                t.sort_by(f64::total_cmp);
                (k.symbol.clone(), k.work_items, t[t.len() / 2])
            })
            .collect();
        out.sort_by(|a, b| b.2.total_cmp(&a.2));
        Ok(out)
    }
}

/// Copies a batch into a program's input slots, padded up to the program's batch size.
fn feed(arena: &mut [f32], program: &ProgramLayout, batch: &Batch<'_>) -> Result<(), BackendError> {
    let mut ranges = vec![program.input.range(), program.weights.range()];
    ranges.extend(program.labels.map(|l| l.range()));
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
        if r.start < at || r.end < r.start || rest.len() < r.end - at {
            return None;
        }
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(r.start - at);
        let (slice, tail) = tail.split_at_mut(r.len());
        out[i] = Some(slice);
        (rest, at) = (tail, r.end);
    }
    out.into_iter().collect()
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

impl StepBackend for Executor {
    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32, BackendError> {
        let p = &self.layout.train;
        feed(&mut self.arena, p, batch)?;
        // SAFETY: the kernels were bounds-checked against this program's plan (`new`'s
        // contract), and the arena is as long as every program needs.
        unsafe { run_kernels(&self.pool, &self.train, &mut self.arena, self.step) };
        self.step += 1;
        Ok(self.arena[p.loss.offset])
    }

    fn eval_step(&mut self, batch: &Batch<'_>) -> Result<EvalOutput, BackendError> {
        let (Some(p), Some(calls)) = (&self.layout.eval, &self.eval) else {
            return Err(BackendError::new("the model has no evaluation program"));
        };
        feed(&mut self.arena, p, batch)?;
        // SAFETY: as in `train_step`.
        unsafe { run_kernels(&self.pool, calls, &mut self.arena, self.step) };
        let loss = self.arena[p.loss.offset];
        let correct = self.layout.classifier.then(|| {
            let classes = p.prediction.len / p.batch;
            let logits =
                &self.arena[p.prediction.offset..p.prediction.offset + batch.len * classes];
            argmax_matches(logits, classes, batch.labels)
        });
        Ok(EvalOutput { loss, correct })
    }
}

impl Checkpointable for Executor {
    fn checkpoint(&self) -> Checkpoint {
        let tensors = self
            .layout
            .variables
            .iter()
            .map(|v| (v.name.clone(), v.shape.clone(), self.arena[v.range()].to_vec()))
            .collect();
        Checkpoint { model: self.layout.model.clone(), step: self.step, epoch: 0, tensors }
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let shapes = self.layout.variables.iter().map(|v| (v.name.as_str(), v.shape.as_slice()));
        check_compatible(checkpoint, &self.layout.model, shapes)?;
        for (name, _, values) in &checkpoint.tensors {
            // `check_compatible` proved every tensor names a variable of the same shape.
            if let Some(v) = self.layout.variables.iter().find(|v| &v.name == name) {
                self.arena[v.range()].copy_from_slice(values);
            }
        }
        self.step = checkpoint.step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compiled::layout::{KernelEntry, Slot, TrainingSettings, Variable};

    /// `loss = sum(w * x)`, then `param += 1`: a toy program over a 2-element batch.
    unsafe extern "C" fn toy(arena: *mut f32, _: u64, _: u64, _: u64) {
        unsafe {
            let (x, w) = (arena.add(16), arena.add(20));
            *arena.add(24) = *x * *w + *x.add(1) * *w.add(1);
            *arena += 1.0;
        }
    }

    fn layout() -> ModelLayout {
        let program = ProgramLayout {
            batch: 2,
            arena_len: 32,
            input: Slot { offset: 16, len: 2 },
            labels: Some(Slot { offset: 18, len: 2 }),
            weights: Slot { offset: 20, len: 2 },
            loss: Slot { offset: 24, len: 1 },
            prediction: Slot { offset: 16, len: 2 },
            kernels: vec![KernelEntry { symbol: "kiln_train_k0_toy".into(), work_items: 1 }],
        };
        ModelLayout {
            model: "toy".into(),
            classifier: false,
            persistent_len: 16,
            variables: vec![Variable { name: "p".into(), offset: 0, shape: vec![1] }],
            train: program.clone(),
            eval: Some(program),
            training: TrainingSettings {
                epochs: 1,
                seed: 0,
                early_stopping: None,
                description: vec![],
            },
        }
    }

    #[test]
    fn runs_kernels_pads_batches_and_checkpoints() {
        let fns: [KernelFn; 1] = [toy];
        let mut e = unsafe { Executor::new(layout(), &[5.0; 16], &fns, Some(&fns), 1) }.unwrap();
        let loss = e.train_step(&Batch { x: &[3.0], labels: &[0.0], len: 1 }).unwrap();
        assert_eq!(loss, 3.0, "one real example of weight 1, the padding row has weight 0");
        let c = e.checkpoint();
        assert_eq!((c.step, c.tensors.clone()), (1, vec![("p".into(), vec![1], vec![6.0])]));
        e.train_step(&Batch { x: &[1.0, 1.0], labels: &[0.0; 2], len: 2 }).unwrap();
        e.restore(&c).unwrap();
        assert_eq!(e.checkpoint(), c);
        assert_eq!(
            e.eval_step(&Batch { x: &[2.0, 4.0], labels: &[0.0; 2], len: 2 }).unwrap().loss,
            3.0
        );
    }

    #[test]
    fn rejects_a_layout_that_does_not_fit() {
        let fns: [KernelFn; 1] = [toy];
        let e = unsafe { Executor::new(layout(), &[0.0; 3], &fns, Some(&fns), 1) };
        assert!(e.err().unwrap().0.contains("initial values"));
        let e = unsafe { Executor::new(layout(), &[0.0; 16], &[], Some(&fns), 1) };
        assert!(e.err().unwrap().0.contains("0 kernel functions"));
        let mut bad = layout();
        bad.train.loss.offset = 40;
        let e = unsafe { Executor::new(bad, &[0.0; 16], &fns, Some(&fns), 1) };
        assert!(e.err().unwrap().0.contains("loss slot"));
    }
}
