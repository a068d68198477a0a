//! Elementwise ops: unary functions and binary arithmetic (a rank-0 operand broadcasts).

use super::{expect_arity, EvalCtx, OpSpec, ReduceSum, Vjp};
use crate::graph::NodeId;
use crate::shape::Shape;
use crate::tensor::Tensor;
use crate::IrError;

/// Declares a unary elementwise op: its struct, its attributes, its reference function
/// `|x, op| -> y` and its gradient rule `|v, x, y, g| -> dx` built from IR ops.
macro_rules! unary_op {
    ($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),* }
     eval: |$x:ident, $op:ident| $f:expr,
     vjp: |$v:ident, $xn:ident, $yn:ident, $g:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name { $( #[doc = concat!("The `", stringify!($field), "` coefficient.")] pub $field: $ty ),* }

        impl OpSpec for $name {
            fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
                expect_arity(operands, 1)?;
                Ok(operands[0].clone())
            }
            fn eval(&self, operands: &[&Tensor], _: &Shape, _: &EvalCtx) -> Tensor {
                let $op = self;
                let _ = $op;
                operands[0].map(|$x| $f)
            }
            #[allow(unused_variables)]
            fn vjp(&self, $v: &mut Vjp<'_>) -> Result<(), IrError> {
                let $op = self;
                let $xn = $v.operands[0];
                let $yn = $v.node;
                let $g = $v.grad;
                let dx: Option<NodeId> = $body;
                if let Some(dx) = dx {
                    $v.set(0, dx);
                }
                Ok(())
            }
        }
    };
}

unary_op!(
    /// `-x`.
    Neg {}
    eval: |x, op| -x,
    vjp: |v, x, y, g| Some(v.add(Neg {}, &[g])?)
);

unary_op!(
    /// `exp x`.
    Exp {}
    eval: |x, op| x.exp(),
    vjp: |v, x, y, g| Some(v.add(Mul {}, &[g, y])?)
);

unary_op!(
    /// Natural logarithm.
    Log {}
    eval: |x, op| x.ln(),
    vjp: |v, x, y, g| Some(v.add(Div {}, &[g, x])?)
);

unary_op!(
    /// Square root.
    Sqrt {}
    eval: |x, op| x.sqrt(),
    vjp: |v, x, y, g| {
        let half = v.scalar(0.5)?;
        let t = v.add(Div {}, &[g, y])?;
        Some(v.add(Mul {}, &[t, half])?)
    }
);

unary_op!(
    /// `max(x, 0)`.
    Relu {}
    eval: |x, op| if x > 0.0 { x } else { 0.0 },
    vjp: |v, x, y, g| {
        let mask = v.add(Step {}, &[x])?;
        Some(v.add(Mul {}, &[g, mask])?)
    }
);

unary_op!(
    /// `x > 0 ? x : alpha x`.
    LeakyRelu { alpha: f64 }
    eval: |x, op| if x > 0.0 { x } else { op.alpha * x },
    vjp: |v, x, y, g| {
        // d/dx = alpha + (1 - alpha) step(x)
        let mask = v.add(Step {}, &[x])?;
        let k = v.scalar(1.0 - op.alpha)?;
        let alpha = v.scalar(op.alpha)?;
        let scaled = v.add(Mul {}, &[mask, k])?;
        let d = v.add(Add {}, &[scaled, alpha])?;
        Some(v.add(Mul {}, &[g, d])?)
    }
);

unary_op!(
    /// `x > 0 ? x : alpha (exp x - 1)`.
    Elu { alpha: f64 }
    eval: |x, op| if x > 0.0 { x } else { op.alpha * (x.exp() - 1.0) },
    vjp: |v, x, y, g| {
        // d/dx = step(x) + (1 - step(x)) (y + alpha)
        let s = v.add(Step {}, &[x])?;
        let one = v.scalar(1.0)?;
        let alpha = v.scalar(op.alpha)?;
        let not_s = v.add(Sub {}, &[one, s])?;
        let y_alpha = v.add(Add {}, &[y, alpha])?;
        let neg_part = v.add(Mul {}, &[not_s, y_alpha])?;
        let d = v.add(Add {}, &[s, neg_part])?;
        Some(v.add(Mul {}, &[g, d])?)
    }
);

unary_op!(
    /// Logistic function `1 / (1 + exp(-x))`.
    Sigmoid {}
    eval: |x, op| if x >= 0.0 { 1.0 / (1.0 + (-x).exp()) } else { x.exp() / (1.0 + x.exp()) },
    vjp: |v, x, y, g| {
        let one = v.scalar(1.0)?;
        let one_minus_y = v.add(Sub {}, &[one, y])?;
        let d = v.add(Mul {}, &[y, one_minus_y])?;
        Some(v.add(Mul {}, &[g, d])?)
    }
);

unary_op!(
    /// Hyperbolic tangent.
    Tanh {}
    eval: |x, op| x.tanh(),
    vjp: |v, x, y, g| {
        let one = v.scalar(1.0)?;
        let y2 = v.add(Mul {}, &[y, y])?;
        let d = v.add(Sub {}, &[one, y2])?;
        Some(v.add(Mul {}, &[g, d])?)
    }
);

unary_op!(
    /// Heaviside step `x > 0 ? 1 : 0`; its gradient is zero.
    Step {}
    eval: |x, op| if x > 0.0 { 1.0 } else { 0.0 },
    vjp: |v, x, y, g| None
);

/// Shape rule shared by the binary ops: equal shapes, or one operand of rank 0.
fn binary_infer(operands: &[&Shape]) -> Result<Shape, String> {
    expect_arity(operands, 2)?;
    let (a, b) = (operands[0], operands[1]);
    if a == b || b.rank() == 0 {
        Ok(a.clone())
    } else if a.rank() == 0 {
        Ok(b.clone())
    } else {
        Err(format!("operands must have the same shape (or one be a scalar), got {a} and {b}"))
    }
}

/// Reference evaluation shared by the binary ops.
fn binary_eval(operands: &[&Tensor], out: &Shape, f: impl Fn(f64, f64) -> f64) -> Tensor {
    let (a, b) = (operands[0], operands[1]);
    let pick = |t: &Tensor, i: usize| if t.shape.rank() == 0 { t.data[0] } else { t.data[i] };
    Tensor::new(out.clone(), (0..out.numel()).map(|i| f(pick(a, i), pick(b, i))).collect())
}

/// Sums a gradient back to a rank-0 operand's shape when that operand was broadcast.
fn unbroadcast(v: &mut Vjp<'_>, operand: usize, grad: NodeId) -> Result<NodeId, IrError> {
    let target = v.shape(v.operands[operand]);
    let have = v.shape(grad);
    if target.rank() == 0 && have.rank() > 0 {
        v.add(ReduceSum { axes: (0..have.rank()).collect() }, &[grad])
    } else {
        Ok(grad)
    }
}

/// Declares a binary elementwise op with its reference function and gradient rule
/// `|v, a, b, y, g| -> (da, db)`.
macro_rules! binary_op {
    ($(#[$doc:meta])* $name:ident,
     eval: |$a:ident, $b:ident| $f:expr,
     vjp: |$v:ident, $an:ident, $bn:ident, $yn:ident, $g:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {}

        impl OpSpec for $name {
            fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
                binary_infer(operands)
            }
            fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
                binary_eval(operands, out, |$a, $b| $f)
            }
            #[allow(unused_variables)]
            fn vjp(&self, $v: &mut Vjp<'_>) -> Result<(), IrError> {
                let ($an, $bn, $yn, $g) = ($v.operands[0], $v.operands[1], $v.node, $v.grad);
                let (da, db): (Option<NodeId>, Option<NodeId>) = $body;
                for (i, d) in [(0, da), (1, db)] {
                    if let Some(d) = d {
                        let d = unbroadcast($v, i, d)?;
                        $v.set(i, d);
                    }
                }
                Ok(())
            }
        }
    };
}

binary_op!(
    /// `a + b`.
    Add,
    eval: |a, b| a + b,
    vjp: |v, a, b, y, g| (Some(g), Some(g))
);

binary_op!(
    /// `a - b`.
    Sub,
    eval: |a, b| a - b,
    vjp: |v, a, b, y, g| {
        let db = if v.wants[1] { Some(v.add(Neg {}, &[g])?) } else { None };
        (Some(g), db)
    }
);

binary_op!(
    /// `a * b`.
    Mul,
    eval: |a, b| a * b,
    vjp: |v, a, b, y, g| {
        let da = if v.wants[0] { Some(v.add(Mul {}, &[g, b])?) } else { None };
        let db = if v.wants[1] { Some(v.add(Mul {}, &[g, a])?) } else { None };
        (da, db)
    }
);

binary_op!(
    /// `a / b`.
    Div,
    eval: |a, b| a / b,
    vjp: |v, a, b, y, g| {
        let da = if v.wants[0] { Some(v.add(Div {}, &[g, b])?) } else { None };
        let db = if v.wants[1] {
            // d(a/b)/db = -(a/b)/b
            let t = v.add(Div {}, &[y, b])?;
            let t = v.add(Mul {}, &[g, t])?;
            Some(v.add(Neg {}, &[t])?)
        } else {
            None
        };
        (da, db)
    }
);
