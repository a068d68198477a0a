//! The graphs a backend runs for a model: one training step (forward, loss, gradients of every
//! parameter, optimizer update) and evaluation (forward and loss, dropout and noise off).

use kiln_ir::model::{LossGraph, Mode, Model};
use kiln_ir::{Graph, NodeId, Op};

use crate::autodiff::gradients;
use crate::optimizer::append_updates;
use crate::CompileError;

/// A training-step graph and its interesting nodes.
#[derive(Clone, Debug)]
pub struct TrainGraph {
    /// The whole step: forward, loss, backward and `assign`s of the updates.
    pub graph: Graph,
    /// The data input `[batch, ...]`.
    pub input: NodeId,
    /// The labels input `[batch]`, when the loss uses labels.
    pub labels: Option<NodeId>,
    /// The example weights `[batch]` of the loss (`1/n` for the `n` real examples, `0` for
    /// padding rows).
    pub weights: NodeId,
    /// The scalar loss (mean over the real examples of the batch).
    pub loss: NodeId,
    /// The model's prediction (logits for classifiers).
    pub prediction: NodeId,
    /// The trainable parameters, in graph order.
    pub params: Vec<NodeId>,
    /// The gradient of the loss with respect to each parameter.
    pub grads: Vec<NodeId>,
    /// The `assign` nodes: parameter updates, then optimizer state.
    pub updates: Vec<NodeId>,
}

/// Builds the training step of `model` for batches of `batch` examples.
pub fn training_step(model: &Model, batch: usize) -> Result<TrainGraph, CompileError> {
    let LossGraph { mut graph, input, labels, weights, prediction, loss, .. } =
        model.build(batch, Mode::Train)?;
    let params = graph.nodes_where(|op| matches!(op, Op::Parameter(_)));
    let grads = gradients(&mut graph, loss, &params)?;
    let training = &model.training;
    let updates =
        append_updates(&mut graph, &params, &grads, &training.optimizer, training.weight_decay)?;
    graph.validate()?;
    Ok(TrainGraph { graph, input, labels, weights, loss, prediction, params, grads, updates })
}

/// Builds the evaluation graph of `model` (no dropout, no noise, no update).
pub fn evaluation(model: &Model, batch: usize) -> Result<LossGraph, CompileError> {
    let lg = model.build(batch, Mode::Eval)?;
    lg.graph.validate()?;
    Ok(lg)
}
