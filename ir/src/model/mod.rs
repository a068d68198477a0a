//! Model files (JSON): sequential and graph forms, lowered to a forward graph with its loss.
//!
//! A model file has one schema with two forms. In the sequential form each layer reads the
//! previous one; in the graph form a layer may name what it reads with `"inputs"` (earlier
//! layers, or `"input"` for the model input), which allows skip connections:
//!
//! ```json
//! {
//!   "name": "keras_cnn",
//!   "input": { "shape": [28, 28, 1] },
//!   "layers": [
//!     { "type": "conv2d", "filters": 32, "kernel_size": 3, "activation": "relu" },
//!     { "type": "max_pool2d", "pool_size": 2 },
//!     { "type": "flatten" },
//!     { "type": "dense", "units": 10, "activation": "softmax" }
//!   ],
//!   "training": { "loss": "softmax_cross_entropy", "optimizer": { "type": "rmsprop" } }
//! }
//! ```
//!
//! Parsing checks everything it can while deserializing, so every [`ModelError`] names the
//! file, the line and column, the layer, and suggests a close name for a misspelt one.
//! [`Model::build`] lowers the model to a [`Graph`] (see [`LossGraph`] for its conventions).

mod build;
mod builder;
pub use builder::*;
mod de;
mod error;
mod layers;
mod parse;
mod summary;
pub use summary::thousands;
mod training;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::Path;

pub use build::{derive_seed, MAX_ELEMENTS};
pub use de::MAX_SIZE;
pub use error::{suggest, ErrorKind, LayerRef, Location, ModelError};
pub use layers::{
    Activation, ActivationLayer, AddLayer, Conv2dLayer, DenseLayer, DropoutLayer,
    GaussianNoiseLayer, Layer, LayerKind, MaxoutLayer, Pool2dLayer, ReshapeLayer,
};
pub use training::{EarlyStopping, Loss, Optimizer, Target, Training};

use crate::graph::{Graph, NodeId};
use crate::shape::Shape;

/// A model: its input, its layers, which layer is the output, and how to train it.
/// Build one with [`Model::from_json`] / [`Model::load`], or in code (all fields are public;
/// [`Model::new`] fills in the defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// The model's name (default: the file's stem).
    pub name: String,
    /// The input per example.
    pub input: InputSpec,
    /// The layers, in order; a layer can only read earlier ones.
    pub layers: Vec<Layer>,
    /// The name of the output layer; `None` is the last layer.
    pub output: Option<String>,
    /// How the model is trained.
    pub training: Training,
    /// Where the model came from, for error messages; `None` for models built in code.
    pub origin: Option<Origin>,
}

/// The model input: `"input": {"shape": [28, 28, 1]}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object like {\"shape\": [28, 28, 1]}")]
pub struct InputSpec {
    /// The shape of one example, without the batch dimension (NHWC images: `[H, W, C]`).
    #[serde(deserialize_with = "de::shape")]
    pub shape: Vec<usize>,
}

/// Where a model's parts are in its file, for error messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The file name shown in errors.
    pub file: String,
    /// Each layer's position, in layer order.
    pub layers: Vec<LayerOrigin>,
    /// The `input` value.
    pub input: Option<Location>,
    /// The `output` value.
    pub output: Option<Location>,
    /// The `training` value.
    pub training: Option<Location>,
    /// The `training.loss` value.
    pub loss: Option<Location>,
    /// The `training.target` value.
    pub target: Option<Location>,
}

/// Where a layer is in its file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerOrigin {
    /// The layer's opening brace.
    pub at: Location,
    /// The value of each key of the layer, in file order.
    pub fields: Vec<(String, Location)>,
}

impl Default for Location {
    fn default() -> Self {
        Location { line: 1, column: 1 }
    }
}

/// Which graph to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The training graph: with dropout and Gaussian noise.
    Train,
    /// The evaluation graph: dropout and Gaussian noise are left out.
    Eval,
}

/// A model lowered to a graph computing the prediction and the loss of one batch.
///
/// Conventions (autodiff and the interpreter rely on them):
/// - leaves: `input` (`Input`, `[batch, ...input shape]`), `labels` (`Input`, `[batch]`,
///   class ids as f32; only when the loss needs labels), and the parameters `<layer>.kernel`
///   and `<layer>.bias`;
/// - each layer's nodes are named after it: its main op gets the layer's name, the rest
///   `<layer>.<op>` (`conv2d_1.bias_add`, `conv2d_1.relu`);
/// - `loss` is the scalar loss op node; `Output { name: "prediction" }` and
///   `Output { name: "loss" }` nodes mark the results.
#[derive(Clone, Debug)]
pub struct LossGraph {
    /// The graph.
    pub graph: Graph,
    /// The input leaf.
    pub input: NodeId,
    /// The labels leaf, when the loss compares with labels.
    pub labels: Option<NodeId>,
    /// The example-weights leaf `[N]` of the loss: `1/n` for each of the `n` real examples of a
    /// batch, `0` for the rows padding a short batch (see [`crate::ops`]' losses).
    pub weights: NodeId,
    /// The prediction: the logits (before a folded softmax) for softmax cross-entropy,
    /// otherwise the output layer's value.
    pub prediction: NodeId,
    /// The scalar loss (the loss op node, not its `output` node).
    pub loss: NodeId,
    /// The layers in the graph, in order.
    pub layers: Vec<LayerInfo>,
}

/// One layer of a built model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// 1-based position in the model's `layers`.
    pub index: usize,
    /// The layer's name.
    pub name: String,
    /// The layer's type (`conv2d`).
    pub kind: &'static str,
    /// The shape of its value, with the batch dimension.
    pub output_shape: Shape,
    /// Number of trainable parameter values.
    pub params: usize,
    /// The names of the layers (or `input`) it reads.
    pub inputs: Vec<String>,
}

/// What a layer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The model input.
    Input,
    /// The layer at this 0-based index.
    Layer(usize),
}

/// A model's names and connections, checked.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    /// Every layer's name.
    pub names: Vec<String>,
    /// What each layer reads.
    pub inputs: Vec<Vec<Source>>,
    /// The 0-based index of the output layer.
    pub output: usize,
}

/// Layer names that would clash with the graph's own leaves.
const RESERVED_NAMES: &[&str] = &["input", "labels"];

impl Model {
    /// A model with these layers, the default training settings and no file.
    pub fn new(
        name: impl Into<String>,
        input_shape: impl Into<Vec<usize>>,
        layers: Vec<Layer>,
    ) -> Self {
        Model {
            name: name.into(),
            input: InputSpec { shape: input_shape.into() },
            layers,
            output: None,
            training: Training::default(),
            origin: None,
        }
    }

    /// Parses a model from JSON text; `file` names it in error messages. The names and
    /// connections are checked too; shapes are checked by [`Model::build`].
    pub fn from_json(text: &str, file: &str) -> Result<Model, ModelError> {
        let model = parse::parse(text, file)?;
        model.resolve()?;
        Ok(model)
    }

    /// Reads and parses a model file. Errors name the path.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ModelError::new(&file, ErrorKind::Io, format!("cannot read the model file: {e}"))
        })?;
        Model::from_json(&text, &file)
    }

    /// Lowers the model to a graph for batches of `batch` examples (see [`LossGraph`]).
    pub fn build(&self, batch: usize, mode: Mode) -> Result<LossGraph, ModelError> {
        build::build(self, batch, mode)
    }

    /// A Keras-style table of the layers, their output shapes and parameter counts, with the
    /// totals.
    pub fn summary(&self) -> Result<String, ModelError> {
        summary::summary(self)
    }

    /// Number of trainable parameter values.
    pub fn parameter_count(&self) -> Result<usize, ModelError> {
        Ok(self.build(1, Mode::Eval)?.graph.parameter_count())
    }

    /// Every layer's name: the given one, or the Keras-style default `<type>_<k>` where `k`
    /// counts the unnamed layers of that type from 1 (skipping names given to other layers).
    pub fn layer_names(&self) -> Vec<String> {
        default_names(self.layers.iter().map(|l| (l.kind.type_name(), l.name.as_deref())))
    }

    /// The file name for error messages.
    pub(crate) fn file(&self) -> String {
        match &self.origin {
            Some(o) => o.file.clone(),
            None => format!("<{}>", self.name),
        }
    }

    /// Where layer `i` (0-based), or its `field`, is in the file.
    pub(crate) fn layer_location(&self, i: usize, field: Option<&str>) -> Option<Location> {
        let layer = self.origin.as_ref()?.layers.get(i)?;
        let at_field =
            field.and_then(|f| layer.fields.iter().find(|(k, _)| k == f).map(|(_, l)| *l));
        Some(at_field.unwrap_or(layer.at))
    }

    /// An error about layer `i` (0-based), located at its `field` if present in the file.
    pub(crate) fn layer_error(
        &self,
        i: usize,
        name: Option<&str>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> ModelError {
        ModelError::new(self.file(), ErrorKind::Semantic, message)
            .at(self.layer_location(i, field))
            .in_layer(Some(LayerRef {
                index: i + 1,
                name: name.map(str::to_string),
                kind: self.layers.get(i).map(|l| l.kind.type_name().to_string()),
            }))
    }

    /// Checks the names and connections: unique valid names, inputs naming earlier layers,
    /// the right number of inputs per layer, a known output layer.
    pub(crate) fn resolve(&self) -> Result<Resolved, ModelError> {
        let file = self.file();
        let input_at = self.origin.as_ref().and_then(|o| o.input);
        if self.input.shape.is_empty() || self.input.shape.iter().any(|&d| d == 0 || d > MAX_SIZE) {
            return Err(ModelError::new(
                file,
                ErrorKind::Semantic,
                format!(
                    "the input shape {:?} must list dimensions in 1..={MAX_SIZE}",
                    self.input.shape
                ),
            )
            .at(input_at));
        }
        if self.layers.is_empty() {
            return Err(ModelError::new(
                file,
                ErrorKind::Semantic,
                "the model has no layers: `layers` must list at least one",
            ));
        }
        let names = self.layer_names();
        for (i, layer) in self.layers.iter().enumerate() {
            let name = &names[i];
            if let Some(given) = &layer.name {
                let valid = !given.is_empty()
                    && given.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return Err(self.layer_error(
                        i,
                        Some(given),
                        Some("name"),
                        format!("invalid layer name `{given}`: use letters, digits, `_` and `-`"),
                    ));
                }
                if RESERVED_NAMES.contains(&given.as_str()) {
                    return Err(self.layer_error(i, Some(given), Some("name"),
                        format!("`{given}` is reserved for the model's own {given}; choose another layer name"),
                    ));
                }
                if let Some(j) = names[..i].iter().position(|n| n == given) {
                    return Err(self.layer_error(
                        i,
                        Some(given),
                        Some("name"),
                        format!("duplicate layer name `{given}`: layer {} has it too", j + 1),
                    ));
                }
            }
            layer.kind.check().map_err(|m| self.layer_error(i, Some(name), None, m))?;
        }
        let index: HashMap<&str, usize> =
            names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let mut inputs = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let name = Some(names[i].as_str());
            let kind = layer.kind.type_name();
            let sources = match &layer.inputs {
                None if layer.kind.is_merge() => {
                    return Err(self.layer_error(
                        i,
                        name,
                        None,
                        format!(
                            "{kind} joins two or more layers: name them in `inputs`, e.g. \"inputs\": [\"a\", \"b\"]"
                        ),
                    ))
                }
                None if i == 0 => vec![Source::Input],
                None => vec![Source::Layer(i - 1)],
                Some(list) => {
                    let mut sources = Vec::with_capacity(list.len());
                    for r in list {
                        if r == "input" {
                            sources.push(Source::Input);
                            continue;
                        }
                        match index.get(r.as_str()) {
                            Some(&j) if j < i => sources.push(Source::Layer(j)),
                            Some(&j) if j == i => {
                                return Err(self.layer_error(
                                    i,
                                    name,
                                    Some("inputs"),
                                    format!("layer `{r}` cannot read itself"),
                                ))
                            }
                            Some(&j) => {
                                return Err(self.layer_error(
                                    i,
                                    name,
                                    Some("inputs"),
                                    format!(
                                        "`{r}` is layer {}, which comes later; a layer can only read earlier layers (or \"input\")",
                                        j + 1
                                    ),
                                ))
                            }
                            None => {
                                let candidates = std::iter::once("input")
                                    .chain(names[..i].iter().map(String::as_str));
                                let hint = suggest(r, candidates);
                                let message = if hint.is_some() {
                                    format!("unknown input `{r}`")
                                } else {
                                    format!(
                                        "unknown input `{r}`: inputs must name earlier layers or \"input\""
                                    )
                                };
                                return Err(self
                                    .layer_error(i, name, Some("inputs"), message)
                                    .suggest(hint));
                            }
                        }
                    }
                    sources
                }
            };
            let arity_ok =
                if layer.kind.is_merge() { sources.len() >= 2 } else { sources.len() == 1 };
            if !arity_ok {
                let want =
                    if layer.kind.is_merge() { "two or more inputs" } else { "exactly one input" };
                return Err(self.layer_error(
                    i,
                    name,
                    Some("inputs"),
                    format!("{kind} reads {want}, got {}", sources.len()),
                ));
            }
            inputs.push(sources);
        }
        let output = match &self.output {
            None => self.layers.len() - 1,
            Some(out) => match index.get(out.as_str()) {
                Some(&i) => i,
                None => {
                    let hint = suggest(out, names.iter().map(String::as_str));
                    return Err(ModelError::new(
                        file,
                        ErrorKind::Semantic,
                        format!("`output` names unknown layer `{out}`"),
                    )
                    .at(self.origin.as_ref().and_then(|o| o.output))
                    .suggest(hint));
                }
            },
        };
        Ok(Resolved { names, inputs, output })
    }
}

/// Default names for layers given as `(type, given name)`: see [`Model::layer_names`].
pub(crate) fn default_names<'a>(
    layers: impl Iterator<Item = (&'a str, Option<&'a str>)> + Clone,
) -> Vec<String> {
    let given: HashSet<&str> = layers.clone().filter_map(|(_, n)| n).collect();
    let mut counters: HashMap<&str, usize> = HashMap::new();
    layers
        .map(|(kind, name)| match name {
            Some(n) => n.to_string(),
            None => {
                let k = counters.entry(kind).or_insert(0);
                loop {
                    *k += 1;
                    let candidate = format!("{kind}_{k}");
                    if !given.contains(candidate.as_str()) {
                        break candidate;
                    }
                }
            }
        })
        .collect()
}
