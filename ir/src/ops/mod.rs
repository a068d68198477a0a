//! The op table: every op of the IR, each defined in one place.
//!
//! An op is a small struct (its attributes) implementing [`OpSpec`]: shape inference, reference
//! semantics (what the interpreter runs) and its vector-Jacobian product, built from IR ops. The
//! [`op_table!`] invocation below lists them all and generates the [`Op`] enum that the graph
//! stores. Adding an op means writing its struct and `OpSpec` impl in the file of its family and
//! adding one line to the table.
//!
//! Attributes serialise with serde; the text form prints them as `{key=value, …}`.

mod activation;
mod conv;
mod elementwise;
mod fused;
mod leaf;
mod loss;
mod matmul;
mod pool;
mod random;
mod reduce;
mod shape_ops;
#[cfg(test)]
mod testing;

pub use activation::{Maxout, MaxoutGrad, Softmax};
pub use conv::{Conv2d, Conv2dGradFilter, Conv2dGradInput, PadMode, Padding};
pub use elementwise::{
    Add, Div, Elu, Exp, LeakyRelu, Log, Mul, Neg, Relu, Sigmoid, Sqrt, Step, Sub, Tanh,
};
pub use fused::{
    Conv2dBiasAct, Conv2dBiasActMaxPool2d, MatMulBiasAct, MaxPool2dGradRelu, MaxPool2dGradReluBias,
    ReluGrad, SoftmaxCrossEntropyGrad,
};
pub use leaf::{Assign, Constant, Init, Input, Output, Parameter, State};
pub use loss::{
    BinaryCrossEntropy, BinaryCrossEntropyGrad, MeanSquaredError, OneHot, SoftmaxCrossEntropy,
    BCE_EPS,
};
pub use matmul::{BiasAdd, MatMul, Transpose};
pub use pool::{AvgPool2d, AvgPool2dGrad, MaxPool2d, MaxPool2dGrad};
pub use random::{counter_uniform, Dropout, GaussianNoise};
pub use reduce::{Broadcast, ReduceSum};
pub use shape_ops::{Concat, Part, Reshape, Slice};

use crate::graph::{Graph, NodeId};
use crate::shape::Shape;
use crate::tensor::Tensor;
use crate::IrError;

/// What the reference semantics of an op may read besides its operands.
#[derive(Clone, Copy, Debug, Default)]
pub struct EvalCtx {
    /// The number of training steps taken before this one; random ops (dropout, noise) draw
    /// from a counter-based generator keyed by (seed, step, element), so the same step always
    /// sees the same mask.
    pub step: u64,
}

/// The definition of one op: shape rule, reference semantics and gradient rule.
pub trait OpSpec {
    /// The output shape for the given operand shapes, or a message saying what is wrong.
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String>;

    /// The reference semantics: plain loops over f64 values, obviously correct rather than fast.
    fn eval(&self, operands: &[&Tensor], out: &Shape, ctx: &EvalCtx) -> Tensor;

    /// Adds to `v.graph` the nodes computing the gradient of each operand from the gradient of
    /// this op's output, and records them with [`Vjp::set`]. Operands whose `v.wants[i]` is
    /// false may be skipped. The default says the op is not differentiable.
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        Err(IrError::NotDifferentiable { node: v.graph.node(v.node).name.clone() })
    }

    /// True for ops whose value comes from outside the graph (inputs, parameters, state,
    /// constants): they have no operands and their shape is given, not inferred.
    fn is_leaf(&self) -> bool {
        false
    }
}

/// Checks the operand count; used at the top of `infer`.
pub(crate) fn expect_arity(operands: &[&Shape], n: usize) -> Result<(), String> {
    if operands.len() == n {
        Ok(())
    } else {
        Err(format!("takes {n} operand(s), got {}", operands.len()))
    }
}

/// The state of one vector-Jacobian product being built: the forward node, its operands, the
/// incoming gradient, and the operand gradients produced so far.
pub struct Vjp<'g> {
    /// The graph the gradient nodes are added to.
    pub graph: &'g mut Graph,
    /// The forward node (its value may be reused, e.g. sigmoid's output).
    pub node: NodeId,
    /// The forward node's operands, in order.
    pub operands: Vec<NodeId>,
    /// The gradient of the loss with respect to the forward node's output.
    pub grad: NodeId,
    /// Which operands need a gradient.
    pub wants: Vec<bool>,
    /// The gradient of each operand, once set.
    pub grads: Vec<Option<NodeId>>,
}

impl<'g> Vjp<'g> {
    /// Starts the VJP of `node` given the gradient of its output.
    pub fn new(graph: &'g mut Graph, node: NodeId, grad: NodeId, wants: Vec<bool>) -> Self {
        let operands = graph.operands(node);
        let grads = vec![None; operands.len()];
        Vjp { graph, node, operands, grad, wants, grads }
    }

    /// Adds a gradient node named after the forward node (`d.<name>.<op>`).
    pub fn add(&mut self, op: impl Into<Op>, operands: &[NodeId]) -> Result<NodeId, IrError> {
        let op = op.into();
        let name = format!("d.{}.{}", self.graph.node(self.node).name, op.name());
        self.graph.add(op, operands, &name)
    }

    /// A scalar constant node.
    pub fn scalar(&mut self, value: f64) -> Result<NodeId, IrError> {
        let name = format!("d.{}.const", self.graph.node(self.node).name);
        self.graph.leaf(Constant { value }, Shape::scalar(), &name)
    }

    /// The shape of a node.
    pub fn shape(&self, node: NodeId) -> Shape {
        self.graph.node(node).shape.clone()
    }

    /// Records the gradient of operand `i`.
    pub fn set(&mut self, i: usize, grad: NodeId) {
        self.grads[i] = Some(grad);
    }
}

/// Generates the [`Op`] enum and its dispatch from the list of op structs.
macro_rules! op_table {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal ),* $(,)?) => {
        /// An op of the IR with its attributes. Serialises as `{"op": "<snake_case name>", …attrs}`.
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(tag = "op")]
        pub enum Op {
            $( $(#[$doc])* #[serde(rename = $name)] $variant($variant), )*
        }

        impl Op {
            /// The definition of this op.
            pub fn spec(&self) -> &dyn OpSpec {
                match self { $( Op::$variant(op) => op, )* }
            }

            /// The op's name in the text form, e.g. `conv2d`.
            pub fn name(&self) -> &'static str {
                match self { $( Op::$variant(_) => $name, )* }
            }

            /// Every op name, in table order.
            pub const NAMES: &'static [&'static str] = &[$( $name, )*];
        }

        $( impl From<$variant> for Op {
            fn from(op: $variant) -> Op { Op::$variant(op) }
        } )*
    };
}

op_table! {
    /// A data input fed at every step (images, labels).
    Input => "input",
    /// A trainable parameter, initialised once.
    Parameter => "parameter",
    /// Non-trainable state carried across steps (optimizer slots).
    State => "state",
    /// A constant filled with one value.
    Constant => "constant",
    /// Writes a new value into a parameter or state at the end of the step.
    Assign => "assign",
    /// A named result of the graph (loss, logits).
    Output => "output",
    /// Elementwise `a + b` (a rank-0 operand broadcasts).
    Add => "add",
    /// Elementwise `a - b`.
    Sub => "sub",
    /// Elementwise `a * b`.
    Mul => "mul",
    /// Elementwise `a / b`.
    Div => "div",
    /// Elementwise `-x`.
    Neg => "neg",
    /// Elementwise `exp x`.
    Exp => "exp",
    /// Elementwise natural logarithm.
    Log => "log",
    /// Elementwise square root.
    Sqrt => "sqrt",
    /// Elementwise `max(x, 0)`.
    Relu => "relu",
    /// Elementwise `x > 0 ? x : alpha x`.
    LeakyRelu => "leaky_relu",
    /// Elementwise `x > 0 ? x : alpha (exp x - 1)`.
    Elu => "elu",
    /// Elementwise logistic function.
    Sigmoid => "sigmoid",
    /// Elementwise hyperbolic tangent.
    Tanh => "tanh",
    /// Elementwise Heaviside step: `x > 0 ? 1 : 0`.
    Step => "step",
    /// Sum over axes.
    ReduceSum => "reduce_sum",
    /// Repeats a tensor along new axes (the adjoint of `reduce_sum`).
    Broadcast => "broadcast",
    /// Matrix product with optional transposes.
    MatMul => "matmul",
    /// Adds a bias vector along the last axis.
    BiasAdd => "bias_add",
    /// Permutes axes.
    Transpose => "transpose",
    /// 2-D convolution, NHWC input, HWIO filter.
    Conv2d => "conv2d",
    /// Gradient of conv2d with respect to its input.
    Conv2dGradInput => "conv2d_grad_input",
    /// Gradient of conv2d with respect to its filter.
    Conv2dGradFilter => "conv2d_grad_filter",
    /// Max pooling over HxW windows.
    MaxPool2d => "max_pool2d",
    /// Gradient of max pooling (to the first maximum of each window).
    MaxPool2dGrad => "max_pool2d_grad",
    /// Average pooling over HxW windows.
    AvgPool2d => "avg_pool2d",
    /// Gradient of average pooling.
    AvgPool2dGrad => "avg_pool2d_grad",
    /// Same data, new shape.
    Reshape => "reshape",
    /// Concatenation along an axis.
    Concat => "concat",
    /// A contiguous range along one axis.
    Slice => "slice",
    /// One result of a fused op with several (a view of its packed output).
    Part => "part",
    /// Softmax along the last axis.
    Softmax => "softmax",
    /// Maximum over groups of `pieces` consecutive channels.
    Maxout => "maxout",
    /// Gradient of maxout.
    MaxoutGrad => "maxout_grad",
    /// Inverted dropout (training only).
    Dropout => "dropout",
    /// Additive Gaussian noise (training only).
    GaussianNoise => "gaussian_noise",
    /// One-hot encoding of integer labels.
    OneHot => "one_hot",
    /// Mean softmax cross-entropy of logits against integer labels.
    SoftmaxCrossEntropy => "softmax_cross_entropy",
    /// Mean squared error.
    MeanSquaredError => "mse",
    /// Mean binary cross-entropy of probabilities against targets in [0, 1].
    BinaryCrossEntropy => "binary_cross_entropy",
    /// Gradient of binary cross-entropy with respect to the prediction.
    BinaryCrossEntropyGrad => "binary_cross_entropy_grad",
    /// Fused: `matmul + bias (+ relu)`.
    MatMulBiasAct => "matmul_bias_act",
    /// Fused: `conv2d + bias (+ relu)`.
    Conv2dBiasAct => "conv2d_bias_act",
    /// Fused: `conv2d + bias (+ relu) + max_pool2d`.
    Conv2dBiasActMaxPool2d => "conv2d_bias_act_max_pool2d",
    /// Fused: the gradient through a ReLU from its output.
    ReluGrad => "relu_grad",
    /// Fused: the gradient through a max pool and the ReLU before it.
    MaxPool2dGradRelu => "max_pool2d_grad_relu",
    /// Fused: `max_pool2d_grad_relu` and the bias gradient of its result, packed.
    MaxPool2dGradReluBias => "max_pool2d_grad_relu_bias",
    /// Fused: the gradient of softmax cross-entropy with respect to the logits.
    SoftmaxCrossEntropyGrad => "softmax_cross_entropy_grad",
}

impl Op {
    /// The op's attributes as a JSON object (without the `op` tag), in key order.
    pub fn attrs(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.remove("op");
                map
            }
            _ => serde_json::Map::new(),
        }
    }

    /// Builds an op from its name and attributes (the inverse of [`Op::name`] and [`Op::attrs`]).
    pub fn from_parts(
        name: &str,
        mut attrs: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Op, String> {
        attrs.insert("op".into(), serde_json::Value::String(name.into()));
        serde_json::from_value(serde_json::Value::Object(attrs)).map_err(|e| e.to_string())
    }
}
