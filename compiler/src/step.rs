//! The graphs a backend runs for a model: one training step (forward, loss, gradients of every
//! parameter, optimizer update) and evaluation (forward and loss, dropout and noise off).

use kiln_ir::model::{LossGraph, Mode, Model};
use kiln_ir::{Graph, IrError, NodeId, Op};

use crate::autodiff::gradients;
use crate::optimizer::append_updates;
use crate::rewrite::{rewrite, FusionReport, RewriteOptions, Rewritten};
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

/// Options of the compilation pipeline between autodiff and lowering.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompileOptions {
    /// Run the egg rewrite pass (clean-up and fusion); on by default, off for `--no-fusion`.
    pub fusion: bool,
    /// Budgets and explanations of the pass.
    pub rewrite: RewriteOptions,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { fusion: true, rewrite: RewriteOptions::default() }
    }
}

/// The training step of `model` after the rewrite pass (when `options.fusion`), with the
/// pass's report.
pub fn compiled_training_step(
    model: &Model,
    batch: usize,
    options: &CompileOptions,
) -> Result<(TrainGraph, Option<FusionReport>), CompileError> {
    let step = training_step(model, batch)?;
    if !options.fusion {
        return Ok((step, None));
    }
    let Rewritten { graph, renamed, report } = rewrite(&step.graph, &options.rewrite)?;
    let at = |n: NodeId| renamed.get(&n).copied();
    let need = |n: NodeId| required(&renamed, &step.graph, n);
    let (params, grads): (Vec<NodeId>, Vec<NodeId>) =
        step.params.iter().zip(&step.grads).filter_map(|(&p, &g)| Some((at(p)?, at(g)?))).unzip();
    let fused = TrainGraph {
        input: need(step.input)?,
        labels: step.labels.and_then(at),
        weights: need(step.weights)?,
        loss: need(step.loss)?,
        prediction: need(step.prediction)?,
        params,
        grads,
        updates: step.updates.iter().filter_map(|&u| at(u)).collect(),
        graph,
    };
    fused.graph.validate()?;
    Ok((fused, Some(report)))
}

/// The evaluation graph of `model` after the rewrite pass (when `options.fusion`), with the
/// pass's report.
pub fn compiled_evaluation(
    model: &Model,
    batch: usize,
    options: &CompileOptions,
) -> Result<(LossGraph, Option<FusionReport>), CompileError> {
    let lg = evaluation(model, batch)?;
    if !options.fusion {
        return Ok((lg, None));
    }
    let Rewritten { graph, renamed, report } = rewrite(&lg.graph, &options.rewrite)?;
    let at = |n: NodeId| required(&renamed, &lg.graph, n);
    let fused = LossGraph {
        input: at(lg.input)?,
        labels: lg.labels.map(at).transpose()?,
        weights: at(lg.weights)?,
        prediction: at(lg.prediction)?,
        loss: at(lg.loss)?,
        layers: lg.layers.clone(),
        graph,
    };
    fused.graph.validate()?;
    Ok((fused, Some(report)))
}

/// The id after the rewrite pass of `node` (of `original`), which the compiled graph needs.
fn required(
    renamed: &std::collections::HashMap<NodeId, NodeId>,
    original: &Graph,
    node: NodeId,
) -> Result<NodeId, IrError> {
    renamed.get(&node).copied().ok_or_else(|| IrError::Invalid {
        node: original.node(node).name.clone(),
        message: "the rewrite pass dropped a node the compiled graph needs".into(),
    })
}
