//! Layers and activations of a model file.

use serde::Deserialize;

use super::de::{self, MAX_SIZE};
use crate::init::Init;
use crate::ops::{PadMode, Padding};

/// One entry of the `layers` list.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// The layer's name; `None` gives the Keras-style default `<type>_<k>` (see
    /// [`super::Model::layer_names`]).
    pub name: Option<String>,
    /// The names of the layers (or `"input"`) it reads; `None` reads the previous layer (the
    /// model input for the first layer).
    pub inputs: Option<Vec<String>>,
    /// What the layer computes.
    pub kind: LayerKind,
}

impl Layer {
    /// An unnamed layer reading the previous one.
    pub fn new(kind: impl Into<LayerKind>) -> Self {
        Layer { name: None, inputs: None, kind: kind.into() }
    }

    /// Gives the layer a name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Makes the layer read the named layers (graph form).
    pub fn with_inputs<S: Into<String>>(mut self, inputs: impl IntoIterator<Item = S>) -> Self {
        self.inputs = Some(inputs.into_iter().map(Into::into).collect());
        self
    }
}

/// The layer types and their settings.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    /// `dense`: `x · kernel + bias` on a flat input `[N, features]`.
    Dense(DenseLayer),
    /// `conv2d`: 2-D convolution of an NHWC input.
    Conv2d(Conv2dLayer),
    /// `max_pool2d`: maximum over windows ('valid').
    MaxPool2d(Pool2dLayer),
    /// `avg_pool2d`: mean over windows ('valid').
    AvgPool2d(Pool2dLayer),
    /// `flatten`: `[N, ...] -> [N, product]`.
    Flatten,
    /// `reshape`: to `[N, ...shape]`.
    Reshape(ReshapeLayer),
    /// `dropout`: inverted dropout while training; nothing at evaluation.
    Dropout(DropoutLayer),
    /// `gaussian_noise`: additive noise while training; nothing at evaluation.
    GaussianNoise(GaussianNoiseLayer),
    /// `activation`: an activation function on its own.
    Activation(ActivationLayer),
    /// `maxout`: the maximum of each group of `pieces` consecutive features.
    Maxout(MaxoutLayer),
    /// `add`: elementwise sum of two or more inputs of the same shape (residual connections).
    Add(AddLayer),
    /// `concat`: concatenation of two or more inputs along the channels (last) axis.
    Concat,
}

impl LayerKind {
    /// Every layer type name, as written in model files.
    pub const TYPES: &'static [&'static str] = &[
        "dense",
        "conv2d",
        "max_pool2d",
        "avg_pool2d",
        "flatten",
        "reshape",
        "dropout",
        "gaussian_noise",
        "activation",
        "maxout",
        "add",
        "concat",
    ];

    /// The type name, as written in model files (`conv2d`).
    pub fn type_name(&self) -> &'static str {
        match self {
            LayerKind::Dense(_) => "dense",
            LayerKind::Conv2d(_) => "conv2d",
            LayerKind::MaxPool2d(_) => "max_pool2d",
            LayerKind::AvgPool2d(_) => "avg_pool2d",
            LayerKind::Flatten => "flatten",
            LayerKind::Reshape(_) => "reshape",
            LayerKind::Dropout(_) => "dropout",
            LayerKind::GaussianNoise(_) => "gaussian_noise",
            LayerKind::Activation(_) => "activation",
            LayerKind::Maxout(_) => "maxout",
            LayerKind::Add(_) => "add",
            LayerKind::Concat => "concat",
        }
    }

    /// True for the layers that join several inputs (`add`, `concat`).
    pub fn is_merge(&self) -> bool {
        matches!(self, LayerKind::Add(_) | LayerKind::Concat)
    }

    /// The activation applied at the end of the layer, if the layer has one.
    pub fn activation(&self) -> Option<Activation> {
        match self {
            LayerKind::Dense(d) => Some(d.activation),
            LayerKind::Conv2d(c) => Some(c.activation),
            LayerKind::Activation(a) => Some(a.activation),
            LayerKind::Add(a) => Some(a.activation),
            _ => None,
        }
    }

    /// Checks the settings' ranges (the file parser checks them too, with positions; this is
    /// for models built in code).
    pub(crate) fn check(&self) -> Result<(), String> {
        let positive = |what: &str, v: usize| {
            if v == 0 || v > MAX_SIZE {
                Err(format!("`{what}` must be in 1..={MAX_SIZE}, got {v}"))
            } else {
                Ok(())
            }
        };
        let pair = |what: &str, v: [usize; 2]| {
            if v.iter().any(|&x| x == 0 || x > MAX_SIZE) {
                Err(format!("`{what}` must be in 1..={MAX_SIZE}, got {v:?}"))
            } else {
                Ok(())
            }
        };
        match self {
            LayerKind::Dense(d) => positive("units", d.units)?,
            LayerKind::Conv2d(c) => {
                positive("filters", c.filters)?;
                pair("kernel_size", c.kernel_size)?;
                pair("strides", c.strides)?;
                if let Padding::Explicit(p) = c.padding {
                    if p.iter().any(|&x| x > MAX_SIZE) {
                        return Err(format!("`padding` must be at most {MAX_SIZE}, got {p:?}"));
                    }
                }
            }
            LayerKind::MaxPool2d(p) | LayerKind::AvgPool2d(p) => {
                pair("pool_size", p.pool_size)?;
                pair("strides", p.strides())?;
            }
            LayerKind::Reshape(r) => {
                if r.shape.is_empty() || r.shape.iter().any(|&d| d == 0 || d > MAX_SIZE) {
                    return Err(format!(
                        "`shape` must list dimensions of at least 1, got {:?}",
                        r.shape
                    ));
                }
            }
            LayerKind::Dropout(d) => {
                if !(0.0..1.0).contains(&d.rate) {
                    return Err(format!("`rate` must be in [0, 1), got {}", d.rate));
                }
            }
            LayerKind::GaussianNoise(g) => {
                if !(g.stddev >= 0.0 && g.stddev.is_finite()) {
                    return Err(format!("`stddev` must be >= 0, got {}", g.stddev));
                }
            }
            LayerKind::Maxout(m) => positive("pieces", m.pieces)?,
            LayerKind::Flatten
            | LayerKind::Activation(_)
            | LayerKind::Add(_)
            | LayerKind::Concat => {}
        }
        Ok(())
    }
}

macro_rules! into_kind {
    ($($ty:ident => $variant:ident),*) => {
        $( impl From<$ty> for LayerKind {
            fn from(l: $ty) -> LayerKind { LayerKind::$variant(l) }
        } )*
    };
}
into_kind!(DenseLayer => Dense, Conv2dLayer => Conv2d, ReshapeLayer => Reshape,
    DropoutLayer => Dropout, GaussianNoiseLayer => GaussianNoise, ActivationLayer => Activation,
    MaxoutLayer => Maxout, AddLayer => Add);

fn yes() -> bool {
    true
}
fn glorot() -> Init {
    Init::GlorotUniform
}
fn zeros() -> Init {
    Init::Zeros
}
fn one_pair() -> [usize; 2] {
    [1, 1]
}
fn two_pair() -> [usize; 2] {
    [2, 2]
}
fn valid() -> Padding {
    Padding::Mode(PadMode::Valid)
}

/// `dense { units, activation = "linear", use_bias = true, kernel_initializer =
/// "glorot_uniform", bias_initializer = "zeros" }`. Kernel `[in, units]`, bias `[units]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseLayer {
    /// Output features (≥ 1).
    #[serde(deserialize_with = "de::positive")]
    pub units: usize,
    /// Applied after the bias.
    #[serde(default)]
    pub activation: Activation,
    /// Whether there is a bias.
    #[serde(default = "yes")]
    pub use_bias: bool,
    /// The kernel's initialiser.
    #[serde(default = "glorot")]
    pub kernel_initializer: Init,
    /// The bias' initialiser.
    #[serde(default = "zeros")]
    pub bias_initializer: Init,
}

impl DenseLayer {
    /// `units` outputs, linear, with a bias, Keras' default initialisers.
    pub fn new(units: usize) -> Self {
        DenseLayer {
            units,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Init::GlorotUniform,
            bias_initializer: Init::Zeros,
        }
    }

    /// Sets the activation.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }
}

/// `conv2d { filters, kernel_size, strides = 1, padding = "valid", activation = "linear",
/// use_bias = true, kernel_initializer = "glorot_uniform", bias_initializer = "zeros" }`.
/// Sizes are an integer or `[height, width]`; padding is `"valid"`, `"same"` or
/// `[top, bottom, left, right]`. Filter `[KH, KW, C, filters]`, bias `[filters]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2dLayer {
    /// Output channels (≥ 1).
    #[serde(deserialize_with = "de::positive")]
    pub filters: usize,
    /// Kernel height and width.
    #[serde(deserialize_with = "de::pair")]
    pub kernel_size: [usize; 2],
    /// Vertical and horizontal stride.
    #[serde(default = "one_pair", deserialize_with = "de::pair")]
    pub strides: [usize; 2],
    /// Zero padding.
    #[serde(default = "valid", deserialize_with = "de::padding")]
    pub padding: Padding,
    /// Applied after the bias.
    #[serde(default)]
    pub activation: Activation,
    /// Whether there is a bias.
    #[serde(default = "yes")]
    pub use_bias: bool,
    /// The filter's initialiser.
    #[serde(default = "glorot")]
    pub kernel_initializer: Init,
    /// The bias' initialiser.
    #[serde(default = "zeros")]
    pub bias_initializer: Init,
}

impl Conv2dLayer {
    /// `filters` square `kernel`×`kernel` filters, stride 1, 'valid', linear, with a bias.
    pub fn new(filters: usize, kernel: usize) -> Self {
        Conv2dLayer {
            filters,
            kernel_size: [kernel, kernel],
            strides: [1, 1],
            padding: valid(),
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Init::GlorotUniform,
            bias_initializer: Init::Zeros,
        }
    }

    /// Sets the activation.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Sets the padding.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }
}

/// `max_pool2d` / `avg_pool2d { pool_size = 2, strides = pool_size }` ('valid' windows).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool2dLayer {
    /// Window height and width.
    #[serde(default = "two_pair", deserialize_with = "de::pair")]
    pub pool_size: [usize; 2],
    /// Vertical and horizontal stride; `None` is the window size.
    #[serde(default, deserialize_with = "de::opt_pair")]
    pub strides: Option<[usize; 2]>,
}

impl Pool2dLayer {
    /// Square `size`×`size` windows, stride `size`.
    pub fn new(size: usize) -> Self {
        Pool2dLayer { pool_size: [size, size], strides: None }
    }

    /// The stride used: `strides`, or the window size.
    pub fn strides(&self) -> [usize; 2] {
        self.strides.unwrap_or(self.pool_size)
    }
}

/// `reshape { shape }`: the new shape per example (without the batch dimension).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReshapeLayer {
    /// Dimensions per example, each ≥ 1.
    #[serde(deserialize_with = "de::shape")]
    pub shape: Vec<usize>,
}

/// `dropout { rate }` with `0 <= rate < 1`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropoutLayer {
    /// Probability of dropping each value while training.
    #[serde(deserialize_with = "de::unit_right_open")]
    pub rate: f64,
}

/// `gaussian_noise { stddev }` (`stddev >= 0`), added while training only: the denoising
/// autoencoder's input corruption.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaussianNoiseLayer {
    /// Standard deviation of the noise.
    #[serde(deserialize_with = "de::non_negative_f64")]
    pub stddev: f64,
}

/// `activation { activation }`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationLayer {
    /// The function applied.
    pub activation: Activation,
}

/// `maxout { pieces }`: a dense layer of `units * pieces` followed by maxout gives a layer of
/// `units` maxout units.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxoutLayer {
    /// Values per unit (≥ 1).
    #[serde(deserialize_with = "de::positive")]
    pub pieces: usize,
}

/// `add { activation = "linear" }` of two or more inputs of the same shape.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLayer {
    /// Applied after the sum.
    #[serde(default)]
    pub activation: Activation,
}

/// The layer with no settings (`flatten {}`, `concat {}`): only the common keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoSettings {}

/// An activation function: a name (`"relu"`) or an object (`{"type": "leaky_relu",
/// "alpha": 0.1}`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Activation {
    /// The identity (no node).
    #[default]
    Linear,
    /// `max(x, 0)`.
    Relu,
    /// `x > 0 ? x : alpha x`; `alpha` defaults to 0.2 as `keras.activations.leaky_relu`.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f64,
    },
    /// `x > 0 ? x : alpha (exp x - 1)`; `alpha` defaults to 1.
    Elu {
        /// Scale of the negative part.
        alpha: f64,
    },
    /// The logistic function.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Softmax over the last axis.
    Softmax,
}

impl Activation {
    /// Every activation name, as written in model files.
    pub const NAMES: &'static [&'static str] =
        &["relu", "leaky_relu", "elu", "sigmoid", "tanh", "softmax", "linear"];

    /// The activation with this name and its default parameters.
    pub fn from_name(name: &str) -> Option<Activation> {
        Some(match name {
            "relu" => Activation::Relu,
            "leaky_relu" => Activation::LeakyRelu { alpha: 0.2 },
            "elu" => Activation::Elu { alpha: 1.0 },
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "softmax" => Activation::Softmax,
            "linear" => Activation::Linear,
            _ => return None,
        })
    }

    /// The name, as written in model files.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Elu { .. } => "elu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
        }
    }
}
