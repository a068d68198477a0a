//! Step backends: what the runtime's training loop drives.

use std::collections::HashMap;

use kiln_compiler::interp::{run, Variables};
use kiln_compiler::step::{evaluation, training_step, TrainGraph};
use kiln_compiler::CompileError;
use kiln_ir::model::{Loss, LossGraph, Model};
use kiln_ir::{EvalCtx, NodeId, Shape, Tensor};
use kiln_runtime::checkpoint::check_compatible;
use kiln_runtime::{
    BackendError, Batch, Checkpoint, CheckpointError, Checkpointable, EvalOutput, StepBackend,
};

/// Trains a model with the reference interpreter: slow, f64, obviously correct.
///
/// Graphs are built per batch size (the last batch of an epoch may be smaller) and share the
/// parameters and optimizer state by name.
pub struct InterpreterBackend {
    model: Model,
    vars: Variables,
    train: HashMap<usize, TrainGraph>,
    eval: HashMap<usize, LossGraph>,
    step: u64,
}

impl InterpreterBackend {
    /// A backend for `model`, its parameters initialised from the model's seed.
    pub fn new(model: Model) -> Result<Self, CompileError> {
        let mut backend = InterpreterBackend {
            model,
            vars: Variables::default(),
            train: HashMap::new(),
            eval: HashMap::new(),
            step: 0,
        };
        let batch = backend.model.training.batch_size;
        backend.train_graph(batch)?;
        Ok(backend)
    }

    /// The current parameter and state values.
    pub fn variables(&self) -> &Variables {
        &self.vars
    }

    fn train_graph(&mut self, batch: usize) -> Result<&TrainGraph, CompileError> {
        if !self.train.contains_key(&batch) {
            let tg = training_step(&self.model, batch)?;
            self.vars.init_from(&tg.graph);
            self.train.insert(batch, tg);
        }
        Ok(&self.train[&batch])
    }

    fn feeds(
        input: NodeId,
        input_shape: &Shape,
        labels: Option<NodeId>,
        batch: &Batch<'_>,
    ) -> Result<HashMap<NodeId, Tensor>, BackendError> {
        if batch.x.len() != input_shape.numel() {
            return Err(BackendError::new(format!(
                "the model's input is {input_shape} ({} values) but the batch holds {} values",
                input_shape.numel(),
                batch.x.len()
            )));
        }
        let mut feeds = HashMap::new();
        let x = batch.x.iter().map(|&v| v as f64).collect();
        feeds.insert(input, Tensor::new(input_shape.clone(), x));
        if let Some(l) = labels {
            let y = batch.labels.iter().map(|&v| v as f64).collect();
            feeds.insert(l, Tensor::new([batch.len], y));
        }
        Ok(feeds)
    }
}

fn backend_error(e: CompileError) -> BackendError {
    BackendError::new(e.to_string())
}

impl StepBackend for InterpreterBackend {
    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32, BackendError> {
        let tg = self.train_graph(batch.len).map_err(backend_error)?;
        let input_shape = tg.graph.node(tg.input).shape.clone();
        let feeds = Self::feeds(tg.input, &input_shape, tg.labels, batch)?;
        let (loss, tg) = (tg.loss, &self.train[&batch.len]);
        let values = run(&tg.graph, &feeds, &mut self.vars, &EvalCtx { step: self.step })
            .map_err(backend_error)?;
        self.step += 1;
        Ok(values[&loss].data[0] as f32)
    }

    fn eval_step(&mut self, batch: &Batch<'_>) -> Result<EvalOutput, BackendError> {
        if !self.eval.contains_key(&batch.len) {
            let lg = evaluation(&self.model, batch.len).map_err(backend_error)?;
            self.vars.init_from(&lg.graph);
            self.eval.insert(batch.len, lg);
        }
        let lg = &self.eval[&batch.len];
        let input_shape = lg.graph.node(lg.input).shape.clone();
        let feeds = Self::feeds(lg.input, &input_shape, lg.labels, batch)?;
        let values = run(&lg.graph, &feeds, &mut self.vars, &EvalCtx { step: self.step })
            .map_err(backend_error)?;
        let loss = values[&lg.loss].data[0] as f32;
        let correct = match self.model.training.loss {
            Loss::SoftmaxCrossEntropy => Some(count_correct(&values[&lg.prediction], batch.labels)),
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
