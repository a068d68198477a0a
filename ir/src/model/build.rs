//! Lowering a [`Model`] to a [`Graph`] with its loss (see [`LossGraph`] for the conventions).
//!
//! Seeds: the `n`-th parameter created (0-based, in layer order, kernel before bias) is
//! initialised with seed `derive_seed(training.seed, 1, n)`, and the `n`-th dropout or noise
//! op draws with seed `derive_seed(training.seed, 2, n)`, where
//! `derive_seed(seed, stream, n) = splitmix64(splitmix64(seed) ^ (stream << 32) ^ n)`.
//! Evaluation graphs have no random ops, so parameters get the same seeds in both modes.

use super::{
    Activation, ErrorKind, LayerInfo, LayerKind, LayerRef, Loss, LossGraph, Mode, Model,
    ModelError, Resolved, Source, Target,
};
use crate::graph::{Graph, NodeId};
use crate::init::Init;
use crate::ops::{self, Op, PadMode, Padding};
use crate::shape::Shape;
use crate::IrError;

/// The splitmix64 finaliser: a bijection on `u64` that mixes all bits.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of the `n`-th item of a `stream` (1: parameters, 2: random ops).
pub fn derive_seed(seed: u64, stream: u64, n: u64) -> u64 {
    splitmix64(splitmix64(seed) ^ (stream << 32) ^ n)
}

/// The largest tensor a model may have, in elements (2^40: 4 TiB of f32). Larger shapes are
/// reported as errors rather than risking overflow.
pub const MAX_ELEMENTS: u64 = 1 << 40;

/// True when a tensor of these dimensions has at most [`MAX_ELEMENTS`] elements.
fn size_ok(dims: &[usize]) -> bool {
    dims.iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128))
        .is_some_and(|n| n <= MAX_ELEMENTS as u128)
}

const PARAM_STREAM: u64 = 1;
const RANDOM_STREAM: u64 = 2;

pub(super) fn build(model: &Model, batch: usize, mode: Mode) -> Result<LossGraph, ModelError> {
    if batch == 0 {
        return Err(ModelError::new(
            model.file(),
            ErrorKind::Semantic,
            "the batch size must be at least 1",
        ));
    }
    let r = model.resolve()?;
    let n = model.layers.len();
    // The layers the output depends on; the others are checked, then left out.
    let mut needed = vec![false; n];
    needed[r.output] = true;
    for i in (0..n).rev() {
        if needed[i] {
            for s in &r.inputs[i] {
                if let Source::Layer(j) = *s {
                    needed[j] = true;
                }
            }
        }
    }
    if needed.iter().any(|&x| !x) {
        Lowering::new(model, &r, batch, mode, vec![true; n])?.layers()?;
    }
    let mut lowering = Lowering::new(model, &r, batch, mode, needed)?;
    lowering.layers()?;
    lowering.finish()
}

/// A lowered layer.
#[derive(Clone, Copy)]
struct Value {
    /// The layer's value.
    out: NodeId,
    /// Its value before a final softmax (the same as `out` without one).
    logits: NodeId,
}

struct Lowering<'m> {
    model: &'m Model,
    r: &'m Resolved,
    batch: usize,
    mode: Mode,
    include: Vec<bool>,
    graph: Graph,
    input: NodeId,
    values: Vec<Option<Value>>,
    infos: Vec<LayerInfo>,
    params: u64,
    randoms: u64,
    param_elems: usize,
    /// Whether the output layer's final softmax is folded into the loss.
    fold_softmax: bool,
}

impl<'m> Lowering<'m> {
    fn new(
        model: &'m Model,
        r: &'m Resolved,
        batch: usize,
        mode: Mode,
        include: Vec<bool>,
    ) -> Result<Self, ModelError> {
        let mut graph = Graph::new();
        let mut dims = vec![batch];
        dims.extend(&model.input.shape);
        if !size_ok(&dims) {
            return Err(ModelError::new(
                model.file(),
                ErrorKind::Semantic,
                format!("the input batch {dims:?} has more than {MAX_ELEMENTS} values"),
            )
            .at(model.origin.as_ref().and_then(|o| o.input)));
        }
        let input = graph
            .leaf(ops::Input {}, Shape(dims), "input")
            .map_err(|e| ModelError::new(model.file(), ErrorKind::Semantic, e.to_string()))?;
        // No layer the output depends on can read the output layer (layers only read earlier
        // ones), so its final softmax can always be folded into the loss.
        let fold_softmax = model.training.loss == Loss::SoftmaxCrossEntropy
            && model.layers[r.output].kind.activation() == Some(Activation::Softmax);
        Ok(Lowering {
            model,
            r,
            batch,
            mode,
            include,
            graph,
            input,
            values: vec![None; model.layers.len()],
            infos: Vec::new(),
            params: 0,
            randoms: 0,
            param_elems: 0,
            fold_softmax,
        })
    }

    fn layers(&mut self) -> Result<(), ModelError> {
        for i in 0..self.model.layers.len() {
            if self.include[i] {
                self.layer(i)?;
            }
        }
        Ok(())
    }

    fn name(&self, i: usize) -> &'m str {
        &self.r.names[i]
    }

    fn err(&self, i: usize, field: Option<&str>, message: impl Into<String>) -> ModelError {
        self.model.layer_error(i, Some(self.name(i)), field, message)
    }

    /// An error from the graph, in layer `i`.
    fn ir(&self, i: usize, e: IrError) -> ModelError {
        let message = match e {
            IrError::Shape { node, op, shapes, message } if node == self.name(i) => {
                format!("{op}: {message} (operand shapes: {shapes})")
            }
            other => other.to_string(),
        };
        self.err(i, None, message)
    }

    fn shape(&self, id: NodeId) -> Shape {
        self.graph.node(id).shape.clone()
    }

    fn add(
        &mut self,
        i: usize,
        op: impl Into<Op>,
        operands: &[NodeId],
        name: &str,
    ) -> Result<NodeId, ModelError> {
        self.graph.add(op, operands, name).map_err(|e| self.ir(i, e))
    }

    fn param(
        &mut self,
        i: usize,
        suffix: &str,
        shape: Shape,
        init: Init,
    ) -> Result<NodeId, ModelError> {
        if !size_ok(shape.dims()) {
            return Err(self.err(
                i,
                None,
                format!("the {suffix} {shape} has more than {MAX_ELEMENTS} values"),
            ));
        }
        let seed = derive_seed(self.model.training.seed, PARAM_STREAM, self.params);
        self.params += 1;
        self.param_elems += shape.numel();
        let name = format!("{}.{suffix}", self.name(i));
        self.graph.leaf(ops::Parameter { init, seed }, shape, &name).map_err(|e| self.ir(i, e))
    }

    fn random_seed(&mut self) -> u64 {
        let seed = derive_seed(self.model.training.seed, RANDOM_STREAM, self.randoms);
        self.randoms += 1;
        seed
    }

    /// Applies an activation; the node is named `name` (or `<name>.<activation>` when
    /// `suffix`).
    fn activate(
        &mut self,
        i: usize,
        x: NodeId,
        act: Activation,
        suffix: bool,
    ) -> Result<NodeId, ModelError> {
        let op: Op = match act {
            Activation::Linear => return Ok(x),
            Activation::Relu => ops::Relu {}.into(),
            Activation::LeakyRelu { alpha } => ops::LeakyRelu { alpha }.into(),
            Activation::Elu { alpha } => ops::Elu { alpha }.into(),
            Activation::Sigmoid => ops::Sigmoid {}.into(),
            Activation::Tanh => ops::Tanh {}.into(),
            Activation::Softmax => ops::Softmax {}.into(),
        };
        let name = if suffix {
            format!("{}.{}", self.name(i), act.name())
        } else {
            self.name(i).to_string()
        };
        self.add(i, op, &[x], &name)
    }

    fn source_name(&self, s: Source) -> &str {
        match s {
            Source::Input => "input",
            Source::Layer(j) => self.name(j),
        }
    }

    fn layer(&mut self, i: usize) -> Result<(), ModelError> {
        let model = self.model;
        let name = self.name(i);
        let sources = &self.r.inputs[i];
        let xs: Vec<NodeId> = sources
            .iter()
            .map(|&s| match s {
                Source::Input => self.input,
                Source::Layer(j) => self.values[j].expect("inputs are lowered first").out,
            })
            .collect();
        let shapes: Vec<Shape> = xs.iter().map(|&x| self.shape(x)).collect();
        let (x, xs_shape) = (xs[0], &shapes[0]);
        let xs_text = xs_shape.per_example();
        let from = self.source_name(sources[0]).to_string();
        let params_before = self.param_elems;
        let kind = &model.layers[i].kind;
        let (pre, act, act_is_main) = match kind {
            LayerKind::Dense(d) => {
                if xs_shape.rank() != 2 {
                    return Err(self.err(
                        i,
                        None,
                        format!(
                            "dense expects a flat input [N, features], but `{from}` gives {xs_text}; add a flatten layer before it"
                        ),
                    ));
                }
                let k = self.param(
                    i,
                    "kernel",
                    Shape::new([xs_shape.dim(1), d.units]),
                    d.kernel_initializer,
                )?;
                let mut y = self.add(i, ops::MatMul::default(), &[x, k], name)?;
                if d.use_bias {
                    let b = self.param(i, "bias", Shape::new([d.units]), d.bias_initializer)?;
                    y = self.add(i, ops::BiasAdd {}, &[y, b], &format!("{name}.bias_add"))?;
                }
                (y, d.activation, false)
            }
            LayerKind::Conv2d(c) => {
                self.expect_image(i, &from, xs_shape)?;
                let [h, w, ch] = [xs_shape.dim(1), xs_shape.dim(2), xs_shape.dim(3)];
                let [kh, kw] = c.kernel_size;
                let padded = match c.padding {
                    Padding::Mode(PadMode::Same) => None,
                    Padding::Mode(PadMode::Valid) => Some((h, w)),
                    Padding::Explicit([t, b, l, r]) => Some((h + t + b, w + l + r)),
                };
                if let Some((ph, pw)) = padded {
                    if kh > ph || kw > pw {
                        return Err(self.err(
                            i,
                            Some("kernel_size"),
                            format!(
                                "the kernel {kh}x{kw} is larger than the input {ph}x{pw} (`{from}` gives {xs_text}, after padding); use a smaller kernel or padding \"same\""
                            ),
                        ));
                    }
                }
                let k = self.param(
                    i,
                    "kernel",
                    Shape::new([kh, kw, ch, c.filters]),
                    c.kernel_initializer,
                )?;
                let conv = ops::Conv2d { stride: c.strides, pad: c.padding };
                let mut y = self.add(i, conv, &[x, k], name)?;
                if c.use_bias {
                    let b = self.param(i, "bias", Shape::new([c.filters]), c.bias_initializer)?;
                    y = self.add(i, ops::BiasAdd {}, &[y, b], &format!("{name}.bias_add"))?;
                }
                (y, c.activation, false)
            }
            LayerKind::MaxPool2d(p) | LayerKind::AvgPool2d(p) => {
                self.expect_image(i, &from, xs_shape)?;
                let [h, w] = [xs_shape.dim(1), xs_shape.dim(2)];
                let [sh, sw] = p.pool_size;
                if sh > h || sw > w {
                    return Err(self.err(
                        i,
                        Some("pool_size"),
                        format!(
                            "the pooling window {sh}x{sw} is larger than the input {h}x{w} (`{from}` gives {xs_text})"
                        ),
                    ));
                }
                let (size, stride) = (p.pool_size, p.strides());
                let y = if matches!(kind, LayerKind::MaxPool2d(_)) {
                    self.add(i, ops::MaxPool2d { size, stride }, &[x], name)?
                } else {
                    self.add(i, ops::AvgPool2d { size, stride }, &[x], name)?
                };
                (y, Activation::Linear, false)
            }
            LayerKind::Flatten => {
                let features = xs_shape.numel() / self.batch;
                let y =
                    self.add(i, ops::Reshape { shape: vec![self.batch, features] }, &[x], name)?;
                (y, Activation::Linear, false)
            }
            LayerKind::Reshape(rl) => {
                let have = xs_shape.numel() / self.batch;
                let want = if size_ok(&rl.shape) { rl.shape.iter().product() } else { 0 };
                if have != want {
                    return Err(self.err(
                        i,
                        Some("shape"),
                        format!(
                            "cannot reshape {xs_text} from `{from}` ({have} values per example) to {:?} ({want} values)",
                            rl.shape
                        ),
                    ));
                }
                let mut dims = vec![self.batch];
                dims.extend(&rl.shape);
                let y = self.add(i, ops::Reshape { shape: dims }, &[x], name)?;
                (y, Activation::Linear, false)
            }
            LayerKind::Dropout(d) => {
                let y = match self.mode {
                    Mode::Train => {
                        let seed = self.random_seed();
                        self.add(i, ops::Dropout { rate: d.rate, seed }, &[x], name)?
                    }
                    Mode::Eval => x,
                };
                (y, Activation::Linear, false)
            }
            LayerKind::GaussianNoise(g) => {
                let y = match self.mode {
                    Mode::Train => {
                        let seed = self.random_seed();
                        self.add(i, ops::GaussianNoise { stddev: g.stddev, seed }, &[x], name)?
                    }
                    Mode::Eval => x,
                };
                (y, Activation::Linear, false)
            }
            LayerKind::Activation(a) => (x, a.activation, true),
            LayerKind::Maxout(m) => {
                let last = xs_shape.dims().last().copied().unwrap_or(0);
                if xs_shape.rank() < 2 || last % m.pieces != 0 {
                    return Err(self.err(
                        i,
                        Some("pieces"),
                        format!(
                            "maxout with pieces={} needs a feature count divisible by {}, but `{from}` gives {xs_text}",
                            m.pieces, m.pieces
                        ),
                    ));
                }
                let y = self.add(i, ops::Maxout { pieces: m.pieces }, &[x], name)?;
                (y, Activation::Linear, false)
            }
            LayerKind::Add(a) => {
                for (k, s) in shapes.iter().enumerate().skip(1) {
                    if s != xs_shape {
                        return Err(self.err(
                            i,
                            Some("inputs"),
                            format!(
                                "add needs inputs of the same shape, but `{from}` gives {xs_text} and `{}` gives {}",
                                self.source_name(sources[k]),
                                s.per_example()
                            ),
                        ));
                    }
                }
                let mut y = x;
                for (k, &b) in xs.iter().enumerate().skip(1) {
                    let node = if k + 1 == xs.len() {
                        name.to_string()
                    } else {
                        format!("{name}.partial_{k}")
                    };
                    y = self.add(i, ops::Add {}, &[y, b], &node)?;
                }
                (y, a.activation, false)
            }
            LayerKind::Concat => {
                let rank = xs_shape.rank();
                for (k, s) in shapes.iter().enumerate().skip(1) {
                    let same = s.rank() == rank
                        && rank >= 2
                        && s.dims()[..rank - 1] == xs_shape.dims()[..rank - 1];
                    if !same {
                        return Err(self.err(
                            i,
                            Some("inputs"),
                            format!(
                                "concat joins along the last (channels) axis and needs the other dimensions equal, but `{from}` gives {xs_text} and `{}` gives {}",
                                self.source_name(sources[k]),
                                s.per_example()
                            ),
                        ));
                    }
                }
                let y = self.add(i, ops::Concat { axis: rank - 1 }, &xs, name)?;
                (y, Activation::Linear, false)
            }
        };
        let fold = self.fold_softmax && i == self.r.output && act == Activation::Softmax;
        let value = if fold {
            Value { out: pre, logits: pre }
        } else {
            let out = self.activate(i, pre, act, !act_is_main)?;
            let logits = if act == Activation::Softmax { pre } else { out };
            Value { out, logits }
        };
        let out_shape = self.shape(value.out);
        if !size_ok(out_shape.dims()) {
            return Err(self.err(
                i,
                None,
                format!("the output {out_shape} has more than {MAX_ELEMENTS} values"),
            ));
        }
        self.values[i] = Some(value);
        self.infos.push(LayerInfo {
            index: i + 1,
            name: name.to_string(),
            kind: kind.type_name(),
            output_shape: self.shape(value.out),
            params: self.param_elems - params_before,
            inputs: sources.iter().map(|&s| self.source_name(s).to_string()).collect(),
        });
        Ok(())
    }

    fn expect_image(&self, i: usize, from: &str, shape: &Shape) -> Result<(), ModelError> {
        if shape.rank() == 4 {
            return Ok(());
        }
        let kind = self.model.layers[i].kind.type_name();
        Err(self.err(
            i,
            None,
            format!(
                "{kind} expects an image input [N, height, width, channels], but `{from}` gives {}; use a reshape layer to make one",
                shape.per_example()
            ),
        ))
    }

    /// Adds the loss and the outputs.
    fn finish(mut self) -> Result<LossGraph, ModelError> {
        let model = self.model;
        let o = self.r.output;
        let weights = self
            .graph
            .leaf(ops::Input {}, Shape::new([self.batch]), "weights")
            .map_err(|e| self.ir(o, e))?;
        let v = self.values[o].expect("the output layer is lowered");
        let out_shape = self.shape(v.out);
        let training = &model.training;
        let target = training.target();
        let origin = model.origin.as_ref();
        let loss_name = training.loss.name();
        let output_err = |message: String| self.err(o, None, message);
        let setting_err = |at: Option<super::Location>, message: String| {
            ModelError::new(model.file(), ErrorKind::Semantic, message).at(at).in_layer(Some(
                LayerRef {
                    index: o + 1,
                    name: Some(self.name(o).to_string()),
                    kind: Some(model.layers[o].kind.type_name().into()),
                },
            ))
        };
        let mut labels = None;
        let (prediction, loss) = match training.loss {
            Loss::SoftmaxCrossEntropy => {
                if target != Target::Labels {
                    let at = origin.and_then(|o| o.target.or(o.loss));
                    return Err(setting_err(
                        at,
                        "softmax_cross_entropy compares the logits with class labels; `target` must be \"labels\"".into(),
                    ));
                }
                if out_shape.rank() != 2 {
                    return Err(output_err(format!(
                        "softmax_cross_entropy needs a 2-D output [N, classes], but the output layer gives {}; end the model with flatten and dense layers",
                        out_shape.per_example()
                    )));
                }
                let l = self.label_leaf()?;
                labels = Some(l);
                let loss =
                    self.add(o, ops::SoftmaxCrossEntropy {}, &[v.logits, l, weights], "loss")?;
                (v.logits, loss)
            }
            Loss::Mse | Loss::BinaryCrossEntropy => {
                let t = match target {
                    Target::Input => {
                        let input_shape = self.shape(self.input);
                        if out_shape != input_shape {
                            return Err(output_err(format!(
                                "{loss_name} with target \"input\" reconstructs the input, so the output must have the input's shape {}, but it is {}",
                                input_shape.per_example(),
                                out_shape.per_example()
                            )));
                        }
                        self.input
                    }
                    Target::Labels => {
                        if out_shape.rank() != 2 {
                            return Err(output_err(format!(
                                "{loss_name} with target \"labels\" compares with one-hot labels, so the output must be 2-D [N, classes], but it is {}",
                                out_shape.per_example()
                            )));
                        }
                        let l = self.label_leaf()?;
                        labels = Some(l);
                        let classes = out_shape.dim(1);
                        self.add(o, ops::OneHot { classes }, &[l], "labels.one_hot")?
                    }
                };
                let loss = if training.loss == Loss::Mse {
                    self.add(o, ops::MeanSquaredError {}, &[v.out, t, weights], "loss")?
                } else {
                    self.add(o, ops::BinaryCrossEntropy {}, &[v.out, t, weights], "loss")?
                };
                (v.out, loss)
            }
        };
        self.add(o, ops::Output { name: "prediction".into() }, &[prediction], "output.prediction")?;
        self.add(o, ops::Output { name: "loss".into() }, &[loss], "output.loss")?;
        Ok(LossGraph {
            graph: self.graph,
            input: self.input,
            labels,
            weights,
            prediction,
            loss,
            layers: self.infos,
        })
    }

    fn label_leaf(&mut self) -> Result<NodeId, ModelError> {
        let o = self.r.output;
        self.graph
            .leaf(ops::Input {}, Shape::new([self.batch]), "labels")
            .map_err(|e| self.ir(o, e))
    }
}
