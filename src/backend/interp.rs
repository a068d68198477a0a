//! Step backends: what the runtime's training loop drives.

use std::collections::HashMap;

use kiln_compiler::interp::{run, Variables};
use kiln_compiler::program::Io;
use kiln_compiler::step::{
    compiled_evaluation, compiled_training_step, CompileOptions, TrainGraph,
};
use kiln_compiler::CompileError;
use kiln_ir::model::{Loss, LossGraph, Model};
use kiln_ir::{EvalCtx, Graph, NodeId, Shape, Tensor};
use kiln_runtime::checkpoint::check_compatible;
use kiln_runtime::padding::{write_padded, PaddedInputs};
use kiln_runtime::{
    BackendError, Batch, Checkpoint, CheckpointError, Checkpointable, EvalOutput, StepBackend,
};

/// Trains a model with the reference interpreter: slow, f64, obviously correct.
///
/// Like the JIT, it builds one training graph and one evaluation graph for the model's batch
/// size and pads shorter batches with zero-weight rows; both share the parameters and
/// optimizer state by name.
pub struct InterpreterBackend {
    model: Model,
    vars: Variables,
    train: TrainGraph,
    eval: Option<LossGraph>,
    step: u64,
    options: CompileOptions,
}

impl InterpreterBackend {
    /// A backend for `model`, its parameters initialised from the model's seed.
    pub fn new(model: Model) -> Result<Self, CompileError> {
        Self::with_options(model, CompileOptions::default())
    }

    /// Like [`InterpreterBackend::new`], with compile options (e.g. fusion off).
    pub fn with_options(model: Model, options: CompileOptions) -> Result<Self, CompileError> {
        let (train, _) = compiled_training_step(&model, model.training.batch_size, &options)?;
        let mut vars = Variables::default();
        vars.init_from(&train.graph);
        Ok(InterpreterBackend { model, vars, train, eval: None, step: 0, options })
    }

    /// The current parameter and state values.
    pub fn variables(&self) -> &Variables {
        &self.vars
    }
}

/// The feeds of a graph's inputs for `batch`, padded up to the graph's batch size.
fn feeds(
    graph: &Graph,
    io: Io,
    batch: &Batch<'_>,
) -> Result<HashMap<NodeId, Tensor>, BackendError> {
    let input_shape = graph.node(io.input).shape.clone();
    let capacity = input_shape.dim(0);
    let mut x = vec![0.0f32; input_shape.numel()];
    let mut labels = io.labels.map(|_| vec![0.0f32; capacity]);
    let mut weights = vec![0.0f32; capacity];
    let dst = PaddedInputs { x: &mut x, labels: labels.as_deref_mut(), weights: &mut weights };
    write_padded(batch, dst)?;
    let to_f64 = |v: Vec<f32>| v.into_iter().map(f64::from).collect();
    let mut feeds = HashMap::new();
    feeds.insert(io.input, Tensor::new(input_shape, to_f64(x)));
    if let (Some(l), Some(labels)) = (io.labels, labels) {
        feeds.insert(l, Tensor::new([capacity], to_f64(labels)));
    }
    feeds.insert(io.weights, Tensor::new([capacity], to_f64(weights)));
    Ok(feeds)
}

fn backend_error(e: CompileError) -> BackendError {
    BackendError::new(e.to_string())
}

impl StepBackend for InterpreterBackend {
    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32, BackendError> {
        let tg = &self.train;
        let feeds = feeds(&tg.graph, Io::from(tg), batch)?;
        let values = run(&tg.graph, &feeds, &mut self.vars, &EvalCtx { step: self.step })
            .map_err(backend_error)?;
        self.step += 1;
        Ok(values[&tg.loss].data[0] as f32)
    }

    fn eval_step(&mut self, batch: &Batch<'_>) -> Result<EvalOutput, BackendError> {
        if self.eval.is_none() {
            let batch = self.model.training.batch_size;
            let (lg, _) =
                compiled_evaluation(&self.model, batch, &self.options).map_err(backend_error)?;
            self.vars.init_from(&lg.graph);
            self.eval = Some(lg);
        }
        let lg = self.eval.as_ref().expect("built above");
        let feeds = feeds(&lg.graph, Io::from(lg), batch)?;
        let values = run(&lg.graph, &feeds, &mut self.vars, &EvalCtx { step: self.step })
            .map_err(backend_error)?;
        let loss = values[&lg.loss].data[0] as f32;
        let correct = match self.model.training.loss {
            Loss::SoftmaxCrossEntropy => {
                let logits = &values[&lg.prediction];
                let classes = logits.shape.dim(-1);
                let real =
                    Tensor::new([batch.len, classes], logits.data[..batch.len * classes].to_vec());
                Some(count_correct(&real, batch.labels))
            }
            _ => None,
        };
        Ok(EvalOutput { loss, correct })
    }
}

/// Checkpoints hold f32 values: saving rounds the interpreter's f64 variables to f32.
impl Checkpointable for InterpreterBackend {
    fn checkpoint(&self) -> Checkpoint {
        let tensors = self
            .vars
            .names()
            .into_iter()
            .map(|name| {
                let t = self.vars.get(name).expect("a listed variable");
                let values = t.data.iter().map(|&v| v as f32).collect();
                (name.to_string(), t.shape.dims().to_vec(), values)
            })
            .collect();
        Checkpoint { model: self.model.name.clone(), step: self.step, epoch: 0, tensors }
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let names = self.vars.names();
        let shapes =
            names.iter().map(|&n| (n, self.vars.get(n).expect("a listed variable").shape.dims()));
        check_compatible(checkpoint, &self.model.name, shapes)?;
        for (name, shape, values) in &checkpoint.tensors {
            let data = values.iter().map(|&v| f64::from(v)).collect();
            self.vars.set(name, Tensor::new(Shape(shape.clone()), data));
        }
        self.step = checkpoint.step;
        Ok(())
    }
}

/// How many rows of `logits [N, C]` have their maximum at the label.
pub fn count_correct(logits: &Tensor, labels: &[f32]) -> usize {
    let classes = logits.shape.dim(-1);
    logits
        .data
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &label)| {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |best, (i, &v)| if v > row[best] { i } else { best });
            best == label as usize
        })
        .count()
}
