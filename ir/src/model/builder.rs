//! [`Sequential`]: build a [`Model`] in code, one method per layer.
//!
//! Each layer method appends a layer reading the previous one; the adjusting methods
//! ([`Sequential::activation`], [`Sequential::padding_same`], [`Sequential::strides`],
//! [`Sequential::named`], [`Sequential::inputs`], …) change the layer added last. Layers get
//! the same Keras-style default names as in model files (`conv2d_1`, `dense_2`), so a model
//! built here lowers to the same graph as the equivalent JSON file.
//!
//! ```
//! use kiln_ir::model::{Activation, Loss, Optimizer, Sequential, Training};
//!
//! let model = Sequential::new("lenet5", [28, 28, 1])
//!     .conv2d(6, 5).padding_same().activation(Activation::Relu)
//!     .max_pool2d(2)
//!     .conv2d(16, 5).activation(Activation::Relu)
//!     .max_pool2d(2)
//!     .flatten()
//!     .dense(120, Activation::Relu)
//!     .dense(84, Activation::Relu)
//!     .dense(10, Activation::Softmax)
//!     .train(Training {
//!         loss: Loss::SoftmaxCrossEntropy,
//!         optimizer: Optimizer::Sgd { lr: 0.05, momentum: 0.9, nesterov: false },
//!         ..Training::default()
//!     })
//!     .build();
//! assert_eq!(model.parameter_count().unwrap(), 61_706);
//! ```
//!
//! Graph-form models (skip connections) name their layers and list what a layer reads:
//!
//! ```
//! use kiln_ir::model::{Activation, Sequential};
//!
//! let model = Sequential::new("resnet_block", [28, 28, 1])
//!     .conv2d(16, 3).padding_same().activation(Activation::Relu).named("stem")
//!     .conv2d(16, 3).padding_same().activation(Activation::Relu)
//!     .conv2d(16, 3).padding_same().named("conv_b")
//!     .add(["stem", "conv_b"]).activation(Activation::Relu)
//!     .flatten()
//!     .dense(10, Activation::Softmax)
//!     .build();
//! assert_eq!(model.layer_names()[3], "add_1");
//! ```
//!
//! The builder does not check anything itself: [`Model::build`] (and so every backend)
//! reports bad settings, names or shapes as for a model file.

use super::layers::{
    Activation, ActivationLayer, AddLayer, Conv2dLayer, DenseLayer, DropoutLayer,
    GaussianNoiseLayer, Layer, LayerKind, MaxoutLayer, Pool2dLayer, ReshapeLayer,
};
use super::training::{EarlyStopping, Loss, Optimizer, Target, Training};
use super::Model;
use crate::init::Init;
use crate::ops::{PadMode, Padding};

/// A [`Model`] under construction: see the [module documentation](self).
///
/// The adjusting methods panic when the last layer does not have the setting (for example
/// `.padding_same()` after `.dense(..)`, or any of them before the first layer): that is a
/// mistake in the program, not in data.
#[derive(Clone, Debug, PartialEq)]
#[must_use = "a builder does nothing until `.build()`"]
pub struct Sequential {
    model: Model,
}

impl Sequential {
    /// An empty model named `name` whose examples have `input_shape` (without the batch
    /// dimension; NHWC images are `[H, W, C]`), with the default [`Training`].
    pub fn new(name: impl Into<String>, input_shape: impl Into<Vec<usize>>) -> Self {
        Sequential { model: Model::new(name, input_shape, Vec::new()) }
    }

    /// The finished model.
    pub fn build(self) -> Model {
        self.model
    }

    /// The model so far.
    pub fn model(&self) -> &Model {
        &self.model
    }

    // ---- Layers -------------------------------------------------------------------------

    /// Appends any layer (with its name and inputs, if set).
    pub fn layer(mut self, layer: Layer) -> Self {
        self.model.layers.push(layer);
        self
    }

    /// Appends a layer of this kind, unnamed, reading the previous layer.
    pub fn kind(self, kind: impl Into<LayerKind>) -> Self {
        self.layer(Layer::new(kind))
    }

    /// A `dense` layer of `units` outputs with this activation (bias, Glorot-uniform kernel).
    pub fn dense(self, units: usize, activation: Activation) -> Self {
        self.kind(DenseLayer::new(units).activation(activation))
    }

    /// A `dense` layer with all its settings.
    pub fn dense_with(self, dense: DenseLayer) -> Self {
        self.kind(dense)
    }

    /// A `conv2d` layer of `filters` square `kernel`×`kernel` filters: stride 1, 'valid'
    /// padding, linear. Adjust with [`Self::activation`], [`Self::padding_same`],
    /// [`Self::padding`] and [`Self::strides`].
    pub fn conv2d(self, filters: usize, kernel: usize) -> Self {
        self.kind(Conv2dLayer::new(filters, kernel))
    }

    /// A `conv2d` layer with all its settings.
    pub fn conv2d_with(self, conv: Conv2dLayer) -> Self {
        self.kind(conv)
    }

    /// A `max_pool2d` layer with square `size`×`size` windows and stride `size`.
    pub fn max_pool2d(self, size: usize) -> Self {
        self.kind(LayerKind::MaxPool2d(Pool2dLayer::new(size)))
    }

    /// An `avg_pool2d` layer with square `size`×`size` windows and stride `size`.
    pub fn avg_pool2d(self, size: usize) -> Self {
        self.kind(LayerKind::AvgPool2d(Pool2dLayer::new(size)))
    }

    /// A `flatten` layer: `[N, ...] -> [N, product]`.
    pub fn flatten(self) -> Self {
        self.kind(LayerKind::Flatten)
    }

    /// A `reshape` layer to `[N, ...shape]`.
    pub fn reshape(self, shape: impl Into<Vec<usize>>) -> Self {
        self.kind(ReshapeLayer { shape: shape.into() })
    }

    /// A `dropout` layer dropping each value with probability `rate` while training.
    pub fn dropout(self, rate: f64) -> Self {
        self.kind(DropoutLayer { rate })
    }

    /// A `gaussian_noise` layer adding noise of standard deviation `stddev` while training.
    pub fn gaussian_noise(self, stddev: f64) -> Self {
        self.kind(GaussianNoiseLayer { stddev })
    }

    /// An `activation` layer applying `activation` on its own.
    pub fn activation_layer(self, activation: Activation) -> Self {
        self.kind(ActivationLayer { activation })
    }

    /// A `maxout` layer: the maximum of each group of `pieces` consecutive features.
    pub fn maxout(self, pieces: usize) -> Self {
        self.kind(MaxoutLayer { pieces })
    }

    /// An `add` layer summing the named layers (or `"input"`); linear until
    /// [`Self::activation`].
    #[allow(clippy::should_implement_trait)] // named after the `add` layer type
    pub fn add<S: Into<String>>(self, inputs: impl IntoIterator<Item = S>) -> Self {
        self.layer(Layer::new(AddLayer::default()).with_inputs(inputs))
    }

    /// A `concat` layer joining the named layers (or `"input"`) along the channels.
    pub fn concat<S: Into<String>>(self, inputs: impl IntoIterator<Item = S>) -> Self {
        self.layer(Layer::new(LayerKind::Concat).with_inputs(inputs))
    }

    // ---- Adjusting the last layer -------------------------------------------------------

    /// Names the last layer (instead of the default `<type>_<k>`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.last("named").name = Some(name.into());
        self
    }

    /// Makes the last layer read the named layers (or `"input"`) instead of the previous one.
    pub fn inputs<S: Into<String>>(mut self, inputs: impl IntoIterator<Item = S>) -> Self {
        self.last("inputs").inputs = Some(inputs.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the activation of the last layer (`dense`, `conv2d`, `add` or `activation`).
    pub fn activation(mut self, activation: Activation) -> Self {
        match &mut self.last("activation").kind {
            LayerKind::Dense(d) => d.activation = activation,
            LayerKind::Conv2d(c) => c.activation = activation,
            LayerKind::Add(a) => a.activation = activation,
            LayerKind::Activation(a) => a.activation = activation,
            other => panic!(
                "`.activation(..)`: {} layers have none; append one with `.activation_layer(..)`",
                other.type_name()
            ),
        }
        self
    }

    /// Sets the padding of the last layer (`conv2d`).
    pub fn padding(mut self, padding: Padding) -> Self {
        match &mut self.last("padding").kind {
            LayerKind::Conv2d(c) => c.padding = padding,
            other => panic!("`.padding(..)`: {} layers have no padding", other.type_name()),
        }
        self
    }

    /// 'same' padding for the last layer (`conv2d`): the output keeps the input's size
    /// (divided by the stride).
    pub fn padding_same(self) -> Self {
        self.padding(Padding::Mode(PadMode::Same))
    }

    /// Sets the stride of the last layer (`conv2d`, `max_pool2d`, `avg_pool2d`) in both
    /// directions.
    pub fn strides(mut self, stride: usize) -> Self {
        match &mut self.last("strides").kind {
            LayerKind::Conv2d(c) => c.strides = [stride, stride],
            LayerKind::MaxPool2d(p) | LayerKind::AvgPool2d(p) => p.strides = Some([stride; 2]),
            other => panic!("`.strides(..)`: {} layers have no strides", other.type_name()),
        }
        self
    }

    /// Whether the last layer (`dense`, `conv2d`) has a bias.
    pub fn use_bias(mut self, use_bias: bool) -> Self {
        match &mut self.last("use_bias").kind {
            LayerKind::Dense(d) => d.use_bias = use_bias,
            LayerKind::Conv2d(c) => c.use_bias = use_bias,
            other => panic!("`.use_bias(..)`: {} layers have no bias", other.type_name()),
        }
        self
    }

    /// Sets the kernel initialiser of the last layer (`dense`, `conv2d`).
    pub fn kernel_initializer(mut self, init: Init) -> Self {
        match &mut self.last("kernel_initializer").kind {
            LayerKind::Dense(d) => d.kernel_initializer = init,
            LayerKind::Conv2d(c) => c.kernel_initializer = init,
            other => {
                panic!("`.kernel_initializer(..)`: {} layers have no kernel", other.type_name())
            }
        }
        self
    }

    /// The last layer, for the adjusting method `what`.
    fn last(&mut self, what: &str) -> &mut Layer {
        match self.model.layers.last_mut() {
            Some(layer) => layer,
            None => panic!("`.{what}(..)` adjusts the last layer, but there is none yet"),
        }
    }

    // ---- The model ----------------------------------------------------------------------

    /// Makes the named layer the model's output (default: the last layer).
    pub fn output(mut self, layer: impl Into<String>) -> Self {
        self.model.output = Some(layer.into());
        self
    }

    /// Sets all the training settings.
    pub fn train(mut self, training: Training) -> Self {
        self.model.training = training;
        self
    }

    /// Sets the loss.
    pub fn loss(mut self, loss: Loss) -> Self {
        self.model.training.loss = loss;
        self
    }

    /// Sets what the prediction is compared with (default: the loss' usual target).
    pub fn target(mut self, target: Target) -> Self {
        self.model.training.target = Some(target);
        self
    }

    /// Sets the optimizer.
    pub fn optimizer(mut self, optimizer: Optimizer) -> Self {
        self.model.training.optimizer = optimizer;
        self
    }

    /// Sets the L2 weight decay.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.model.training.weight_decay = weight_decay;
        self
    }

    /// Sets the batch size.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.model.training.batch_size = batch_size;
        self
    }

    /// Sets the number of epochs.
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.model.training.epochs = epochs;
        self
    }

    /// Sets the seed of the initialisers, dropout, noise and shuffle.
    pub fn seed(mut self, seed: u64) -> Self {
        self.model.training.seed = seed;
        self
    }

    /// Stops training when the test loss has not improved by more than `min_delta` for
    /// `patience` epochs.
    pub fn early_stopping(mut self, patience: usize, min_delta: f64) -> Self {
        self.model.training.early_stopping = Some(EarlyStopping { patience, min_delta });
        self
    }
}

impl From<Sequential> for Model {
    fn from(builder: Sequential) -> Model {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mode;

    fn json(name: &str) -> Model {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/models")
            .join(format!("{name}.json"));
        Model::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    fn mlp() -> Model {
        Sequential::new("mlp", [28, 28, 1])
            .flatten()
            .dense(128, Activation::Relu)
            .dense(10, Activation::Softmax)
            .optimizer(Optimizer::Sgd { lr: 0.1, momentum: 0.0, nesterov: false })
            .build()
    }

    fn lenet5() -> Model {
        Sequential::new("lenet5", [28, 28, 1])
            .conv2d(6, 5)
            .padding_same()
            .activation(Activation::Relu)
            .max_pool2d(2)
            .conv2d(16, 5)
            .activation(Activation::Relu)
            .max_pool2d(2)
            .flatten()
            .dense(120, Activation::Relu)
            .dense(84, Activation::Relu)
            .dense(10, Activation::Softmax)
            .train(Training {
                loss: Loss::SoftmaxCrossEntropy,
                optimizer: Optimizer::Sgd { lr: 0.05, momentum: 0.9, nesterov: false },
                ..Training::default()
            })
            .build()
    }

    fn keras_cnn() -> Model {
        Sequential::new("keras_cnn", [28, 28, 1])
            .conv2d(32, 3)
            .activation(Activation::Relu)
            .max_pool2d(2)
            .conv2d(64, 3)
            .activation(Activation::Relu)
            .max_pool2d(2)
            .conv2d(64, 3)
            .activation(Activation::Relu)
            .flatten()
            .dense(64, Activation::Relu)
            .dense(10, Activation::Softmax)
            .optimizer(Optimizer::Rmsprop { lr: 0.001, rho: 0.9, eps: 1e-7 })
            .build()
    }

    fn autoencoder() -> Model {
        Sequential::new("autoencoder", [784])
            .dense(128, Activation::Relu)
            .dense(32, Activation::Relu)
            .dense(128, Activation::Relu)
            .dense(784, Activation::Sigmoid)
            .loss(Loss::Mse)
            .target(Target::Input)
            .optimizer(Optimizer::Adam { lr: 0.001, beta1: 0.9, beta2: 0.999, eps: 1e-7 })
            .build()
    }

    fn resnet_block() -> Model {
        Sequential::new("resnet_block", [28, 28, 1])
            .conv2d(16, 3)
            .padding_same()
            .activation(Activation::Relu)
            .named("stem")
            .conv2d(16, 3)
            .padding_same()
            .activation(Activation::Relu)
            .named("conv_a")
            .conv2d(16, 3)
            .padding_same()
            .named("conv_b")
            .add(["stem", "conv_b"])
            .activation(Activation::Relu)
            .named("residual")
            .max_pool2d(2)
            .flatten()
            .dense(10, Activation::Softmax)
            .optimizer(Optimizer::with_defaults("adam").unwrap())
            .build()
    }

    #[test]
    fn builder_models_match_the_model_files() {
        let cases: [(&str, Model, Option<usize>); 5] = [
            ("mlp", mlp(), Some(101_770)),
            ("lenet5", lenet5(), Some(61_706)),
            ("keras_cnn", keras_cnn(), Some(93_322)),
            ("autoencoder", autoencoder(), None),
            ("resnet_block", resnet_block(), None),
        ];
        for (name, built, params) in cases {
            let file = json(name);
            let count = built.parameter_count().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(count, file.parameter_count().unwrap(), "{name}: parameter count");
            if let Some(p) = params {
                assert_eq!(count, p, "{name}: parameter count");
            }
            assert_eq!(built.layer_names(), file.layer_names(), "{name}: layer names");
            assert_eq!(built.training, file.training, "{name}: training");
            assert_eq!(built.layers, file.layers, "{name}: layers");
            let text =
                |m: &Model| crate::text::print(&m.build(2, Mode::Train).unwrap().graph).unwrap();
            assert_eq!(text(&built), text(&file), "{name}: forward graph");
        }
    }

    #[test]
    fn adjusting_methods_change_the_last_layer() {
        let model = Sequential::new("m", [8, 8, 3])
            .conv2d(4, 3)
            .strides(2)
            .use_bias(false)
            .kernel_initializer(Init::Zeros)
            .max_pool2d(2)
            .strides(1)
            .flatten()
            .dropout(0.5)
            .dense(3, Activation::Linear)
            .named("logits")
            .inputs(["flatten_1"])
            .output("logits")
            .batch_size(8)
            .epochs(2)
            .seed(7)
            .build();
        let LayerKind::Conv2d(c) = &model.layers[0].kind else { panic!() };
        assert_eq!((c.strides, c.use_bias, c.kernel_initializer), ([2, 2], false, Init::Zeros));
        let LayerKind::MaxPool2d(p) = &model.layers[1].kind else { panic!() };
        assert_eq!(p.strides(), [1, 1]);
        assert_eq!(
            model.layer_names(),
            ["conv2d_1", "max_pool2d_1", "flatten_1", "dropout_1", "logits"]
        );
        assert_eq!(model.layers[4].inputs, Some(vec!["flatten_1".to_string()]));
        assert_eq!(
            (model.training.batch_size, model.training.epochs, model.training.seed),
            (8, 2, 7)
        );
        assert!(model.build(2, Mode::Train).is_ok());
    }

    #[test]
    #[should_panic(expected = "flatten layers have none")]
    fn activation_on_a_layer_without_one_panics() {
        let _ = Sequential::new("m", [4]).flatten().activation(Activation::Relu);
    }
}
