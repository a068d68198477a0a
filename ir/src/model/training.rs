//! The `training` section: loss, target, optimizer and the run's settings.

use serde::Deserialize;

use super::de;

/// How the model is trained (`training` in the file; every field has a default).
#[derive(Clone, Debug, PartialEq)]
pub struct Training {
    /// The loss (default `softmax_cross_entropy`).
    pub loss: Loss,
    /// What the prediction is compared with; `None` is the loss' default (see
    /// [`Training::target`]).
    pub target: Option<Target>,
    /// The optimizer (default SGD with lr 0.01).
    pub optimizer: Optimizer,
    /// L2 weight decay coefficient (≥ 0, default 0).
    pub weight_decay: f64,
    /// Examples per step (≥ 1, default 64).
    pub batch_size: usize,
    /// Passes over the training set (≥ 1, default 1).
    pub epochs: usize,
    /// Seed of the initialisers, dropout and noise, and the shuffle (default 0).
    pub seed: u64,
    /// Stop when the test loss stops improving (default: never).
    pub early_stopping: Option<EarlyStopping>,
}

impl Default for Training {
    fn default() -> Self {
        Training {
            loss: Loss::SoftmaxCrossEntropy,
            target: None,
            optimizer: Optimizer::default(),
            weight_decay: 0.0,
            batch_size: 64,
            epochs: 1,
            seed: 0,
            early_stopping: None,
        }
    }
}

impl Training {
    /// The target in effect: the given one, else labels for softmax cross-entropy and the
    /// input (reconstruction) for mse and binary cross-entropy.
    pub fn target(&self) -> Target {
        self.target.unwrap_or(match self.loss {
            Loss::SoftmaxCrossEntropy => Target::Labels,
            Loss::Mse | Loss::BinaryCrossEntropy => Target::Input,
        })
    }
}

/// The loss function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Mean softmax cross-entropy of the logits against class labels; a final softmax of the
    /// output layer is folded into it.
    SoftmaxCrossEntropy,
    /// Mean squared error.
    Mse,
    /// Mean binary cross-entropy of probabilities.
    BinaryCrossEntropy,
}

impl Loss {
    /// The name, as written in model files.
    pub fn name(&self) -> &'static str {
        match self {
            Loss::SoftmaxCrossEntropy => "softmax_cross_entropy",
            Loss::Mse => "mse",
            Loss::BinaryCrossEntropy => "binary_cross_entropy",
        }
    }
}

/// What the prediction is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The class labels `[N]` (one-hot encoded for mse and binary cross-entropy).
    Labels,
    /// The clean model input (autoencoders).
    Input,
}

/// The optimizer and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// `{"type": "sgd", "lr": 0.01, "momentum": 0, "nesterov": false}`.
    Sgd {
        /// Learning rate (> 0).
        lr: f64,
        /// Momentum in [0, 1).
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// `{"type": "rmsprop", "lr": 0.001, "rho": 0.9, "eps": 1e-7}`.
    Rmsprop {
        /// Learning rate (> 0).
        lr: f64,
        /// Decay of the squared-gradient average, in (0, 1).
        rho: f64,
        /// Added to the denominator (> 0).
        eps: f64,
    },
    /// `{"type": "adam", "lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7}`.
    Adam {
        /// Learning rate (> 0).
        lr: f64,
        /// Decay of the first moment, in [0, 1).
        beta1: f64,
        /// Decay of the second moment, in [0, 1).
        beta2: f64,
        /// Added to the denominator (> 0).
        eps: f64,
    },
}

impl Default for Optimizer {
    /// SGD with lr 0.01, no momentum.
    fn default() -> Self {
        Optimizer::Sgd { lr: 0.01, momentum: 0.0, nesterov: false }
    }
}

impl Optimizer {
    /// Every optimizer type name, as written in model files.
    pub const TYPES: &'static [&'static str] = &["sgd", "rmsprop", "adam"];

    /// The type name.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd { .. } => "sgd",
            Optimizer::Rmsprop { .. } => "rmsprop",
            Optimizer::Adam { .. } => "adam",
        }
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            Optimizer::Sgd { lr, .. }
            | Optimizer::Rmsprop { lr, .. }
            | Optimizer::Adam { lr, .. } => lr,
        }
    }

    /// The optimizer of this type with its default settings.
    pub fn with_defaults(name: &str) -> Option<Optimizer> {
        Some(match name {
            "sgd" => Optimizer::default(),
            "rmsprop" => Optimizer::Rmsprop { lr: 0.001, rho: 0.9, eps: 1e-7 },
            "adam" => Optimizer::Adam { lr: 0.001, beta1: 0.9, beta2: 0.999, eps: 1e-7 },
            _ => return None,
        })
    }
}

/// Stop training when the test loss has not improved by more than `min_delta` for
/// `patience` epochs.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object like {\"patience\": 3, \"min_delta\": 0.0}")]
pub struct EarlyStopping {
    /// Epochs without improvement tolerated (≥ 1).
    #[serde(deserialize_with = "de::positive")]
    pub patience: usize,
    /// Smallest decrease that counts as an improvement (≥ 0, default 0).
    #[serde(default, deserialize_with = "de::non_negative_f64")]
    pub min_delta: f64,
}

// The file's forms of the sections, checked while deserializing so that errors carry
// positions. The optimizer is kept raw and parsed on its own (it is tagged by `type`).

fn default_loss() -> Loss {
    Loss::SoftmaxCrossEntropy
}
fn default_batch() -> usize {
    64
}
fn default_epochs() -> usize {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a training object")]
pub(crate) struct TrainingDe<'a> {
    #[serde(default = "default_loss")]
    pub loss: Loss,
    #[serde(default)]
    pub target: Option<Target>,
    #[serde(default, borrow)]
    pub optimizer: Option<&'a serde_json::value::RawValue>,
    #[serde(default, deserialize_with = "de::non_negative_f64")]
    pub weight_decay: f64,
    #[serde(default = "default_batch", deserialize_with = "de::positive")]
    pub batch_size: usize,
    #[serde(default = "default_epochs", deserialize_with = "de::positive")]
    pub epochs: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default, deserialize_with = "de::object")]
    pub early_stopping: Option<EarlyStopping>,
}

fn lr_sgd() -> f64 {
    0.01
}
fn lr_small() -> f64 {
    0.001
}
fn rho() -> f64 {
    0.9
}
fn eps() -> f64 {
    1e-7
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SgdDe {
    #[serde(default = "lr_sgd", deserialize_with = "de::positive_f64")]
    lr: f64,
    #[serde(default, deserialize_with = "de::unit_right_open")]
    momentum: f64,
    #[serde(default)]
    nesterov: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RmsPropDe {
    #[serde(default = "lr_small", deserialize_with = "de::positive_f64")]
    lr: f64,
    #[serde(default = "rho", deserialize_with = "de::unit_open")]
    rho: f64,
    #[serde(default = "eps", deserialize_with = "de::positive_f64")]
    eps: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdamDe {
    #[serde(default = "lr_small", deserialize_with = "de::positive_f64")]
    lr: f64,
    #[serde(default = "beta1", deserialize_with = "de::unit_right_open")]
    beta1: f64,
    #[serde(default = "beta2", deserialize_with = "de::unit_right_open")]
    beta2: f64,
    #[serde(default = "eps", deserialize_with = "de::positive_f64")]
    eps: f64,
}

impl From<SgdDe> for Optimizer {
    fn from(o: SgdDe) -> Self {
        Optimizer::Sgd { lr: o.lr, momentum: o.momentum, nesterov: o.nesterov }
    }
}
impl From<RmsPropDe> for Optimizer {
    fn from(o: RmsPropDe) -> Self {
        Optimizer::Rmsprop { lr: o.lr, rho: o.rho, eps: o.eps }
    }
}
impl From<AdamDe> for Optimizer {
    fn from(o: AdamDe) -> Self {
        Optimizer::Adam { lr: o.lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps }
    }
}
