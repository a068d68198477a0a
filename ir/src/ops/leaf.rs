//! Leaves and sinks: inputs, parameters, state, constants, `assign` and `output`.

use super::{expect_arity, EvalCtx, OpSpec, Vjp};
use crate::shape::Shape;
use crate::tensor::Tensor;
use crate::IrError;

pub use crate::init::Init;

/// Leaves get their value from outside the graph; evaluating one is an interpreter error.
fn leaf_eval(op: &str) -> ! {
    panic!("`{op}` is a leaf: the interpreter supplies its value")
}

/// A data input fed at every step (a batch of images, labels or targets).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {}

impl OpSpec for Input {
    fn infer(&self, _: &[&Shape]) -> Result<Shape, String> {
        Err("an input's shape is given, not inferred".into())
    }
    fn eval(&self, _: &[&Tensor], _: &Shape, _: &EvalCtx) -> Tensor {
        leaf_eval("input")
    }
    fn is_leaf(&self) -> bool {
        true
    }
}

/// A trainable parameter, filled by `init` (seeded) before the first step.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// The initialiser.
    pub init: Init,
    /// The initialiser's seed.
    pub seed: u64,
}

impl OpSpec for Parameter {
    fn infer(&self, _: &[&Shape]) -> Result<Shape, String> {
        Err("a parameter's shape is given, not inferred".into())
    }
    fn eval(&self, _: &[&Tensor], _: &Shape, _: &EvalCtx) -> Tensor {
        leaf_eval("parameter")
    }
    fn is_leaf(&self) -> bool {
        true
    }
}

/// Non-trainable state carried from step to step (optimizer slots, step powers).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The initialiser (zeros or ones).
    pub init: Init,
}

impl OpSpec for State {
    fn infer(&self, _: &[&Shape]) -> Result<Shape, String> {
        Err("a state's shape is given, not inferred".into())
    }
    fn eval(&self, _: &[&Tensor], _: &Shape, _: &EvalCtx) -> Tensor {
        leaf_eval("state")
    }
    fn is_leaf(&self) -> bool {
        true
    }
}

/// A tensor of the node's shape filled with `value`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constant {
    /// The value of every element.
    pub value: f64,
}

impl OpSpec for Constant {
    fn infer(&self, _: &[&Shape]) -> Result<Shape, String> {
        Err("a constant's shape is given, not inferred".into())
    }
    fn eval(&self, _: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        Tensor::full(out.clone(), self.value)
    }
    fn is_leaf(&self) -> bool {
        true
    }
}

/// `assign(target, value)`: at the end of the step, parameter or state `target` takes `value`.
/// Its own value is `value`. Every parameter update of a training step is one `assign`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assign {}

impl OpSpec for Assign {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 2)?;
        if operands[0] != operands[1] {
            return Err(format!("cannot assign {} to {}", operands[1], operands[0]));
        }
        Ok(operands[0].clone())
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, _: &EvalCtx) -> Tensor {
        operands[1].clone()
    }
}

/// Marks a named result of the graph (`loss`, `logits`, `output`). Its value is its operand's.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// The result's name.
    pub name: String,
}

impl OpSpec for Output {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        Ok(operands[0].clone())
    }
    fn eval(&self, operands: &[&Tensor], _: &Shape, _: &EvalCtx) -> Tensor {
        operands[0].clone()
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        v.set(0, v.grad);
        Ok(())
    }
}
