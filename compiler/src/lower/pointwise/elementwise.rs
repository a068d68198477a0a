//! Elementwise ops: unary functions, binary arithmetic with rank-0 broadcasting, `assign`, and
//! the random ops (dropout, Gaussian noise). All are flat maps over the output.

use kiln_ir::ops::{Dropout, GaussianNoise};
use kiln_ir::Op;

use super::nest::{splat_const, Lets, Map};
use super::Cx;
use crate::kernel::{Binary, Cmp, Expr, Kernel, Unary};

/// `op(x)` for a unary elementwise op, in `lanes` lanes.
fn unary_expr(op: &Op, lets: &mut Lets<'_>, x: Expr, lanes: u8) -> Expr {
    let c = |v: f64| splat_const(v as f32, lanes);
    let zero = c(0.0);
    match op {
        Op::Neg(_) => x.un(Unary::Neg),
        Op::Exp(_) => x.un(Unary::Exp),
        Op::Log(_) => x.un(Unary::Log),
        Op::Sqrt(_) => x.un(Unary::Sqrt),
        Op::Tanh(_) => x.un(Unary::Tanh),
        // `x > 0 ? x : 0`, exactly `max(x, 0)` as the IR defines max.
        Op::Relu(_) => x.bin(Binary::Max, zero),
        Op::LeakyRelu(o) => {
            Expr::select(Cmp::Gt, x.clone(), zero, x.clone(), c(o.alpha).bin(Binary::Mul, x))
        }
        Op::Elu(o) => {
            let neg =
                c(o.alpha).bin(Binary::Mul, x.clone().un(Unary::Exp).bin(Binary::Sub, c(1.0)));
            Expr::select(Cmp::Gt, x.clone(), zero, x, neg)
        }
        // With e = exp(-|x|): x >= 0 ? 1 / (1 + e) : e / (1 + e), one exp per element.
        Op::Sigmoid(_) => {
            let e = lets
                .bind(x.clone().bin(Binary::Min, x.clone().un(Unary::Neg)).un(Unary::Exp), lanes);
            let den = lets.bind(c(1.0).bin(Binary::Add, e.clone()), lanes);
            Expr::select(
                Cmp::Ge,
                x,
                zero,
                c(1.0).bin(Binary::Div, den.clone()),
                e.bin(Binary::Div, den),
            )
        }
        Op::Step(_) => Expr::select(Cmp::Gt, x, zero, c(1.0), c(0.0)),
        op => unreachable!("`{}` is not a unary elementwise op", op.name()),
    }
}

/// neg, exp, log, sqrt, relu, leaky_relu, elu, sigmoid, tanh, step.
pub(super) fn unary(cx: &Cx<'_>) -> Vec<Kernel> {
    let n = cx.out_shape().numel();
    let mut m = Map::dense(cx.name(), cx.out(), &[n]);
    m.operand(cx, 0, &[1]);
    let op = cx.op();
    m.emit(&|lets, x, _, lanes| unary_expr(op, lets, x[0].clone(), lanes))
}

/// add, sub, mul, div; a rank-0 operand of a non-scalar result is loaded once and splat, a
/// constant operand is inlined.
pub(super) fn binary(cx: &Cx<'_>) -> Vec<Kernel> {
    let out = cx.out_shape();
    let n = out.numel();
    let mut m = Map::dense(cx.name(), cx.out(), &[n]);
    for i in 0..2 {
        let broadcast = cx.shape(i).rank() == 0 && out.rank() > 0;
        m.operand(cx, i, &[if broadcast { 0 } else { 1 }]);
    }
    let op = match cx.op() {
        Op::Add(_) => Binary::Add,
        Op::Sub(_) => Binary::Sub,
        Op::Mul(_) => Binary::Mul,
        Op::Div(_) => Binary::Div,
        op => unreachable!("`{}` is not a binary elementwise op", op.name()),
    };
    m.emit(&|_, s, _, _| s[0].clone().bin(op, s[1].clone()))
}

/// `relu_grad(g, a)`: `g * (a > 0 ? 1 : 0)`, the mask computed with the same select as `step`
/// and applied with the same multiply as `mul`, so it is bit-identical to the unfused pair.
pub(super) fn relu_grad(cx: &Cx<'_>) -> Vec<Kernel> {
    let n = cx.out_shape().numel();
    let mut m = Map::dense(cx.name(), cx.out(), &[n]);
    m.operand(cx, 0, &[1]).operand(cx, 1, &[1]);
    m.emit(&|_, s, _, lanes| {
        let c = |v: f32| splat_const(v, lanes);
        let mask = Expr::select(Cmp::Gt, s[1].clone(), c(0.0), c(1.0), c(0.0));
        s[0].clone().bin(Binary::Mul, mask)
    })
}

/// `assign(target, value)`: copies `value` into the target's buffer (the parameter or state
/// itself; the planner gives the assign node that same buffer).
pub(super) fn assign(cx: &Cx<'_>) -> Vec<Kernel> {
    let n = cx.shape(0).numel();
    let mut m = Map::dense(cx.name(), cx.input(0), &[n]);
    m.operand(cx, 1, &[1]);
    m.emit(&|_, s, _, _| s[0].clone())
}

/// The smallest f32 `t` with `u >= t` exactly when `u >= rate`, for every uniform `u` (a
/// multiple of 2^-24, exact in f32): the f32 comparison then keeps the reference's mask.
pub(super) fn keep_threshold(rate: f64) -> f32 {
    let scale = (1u32 << 24) as f64;
    ((rate * scale).ceil() / scale) as f32
}

/// `dropout`: `uniform(seed, step, i) >= rate ? x * 1 / (1 - rate) : 0`, one lane at a time.
pub(super) fn dropout(cx: &Cx<'_>, op: &Dropout) -> Vec<Kernel> {
    let n = cx.out_shape().numel();
    let mut m = Map::dense(cx.name(), cx.out(), &[n]);
    m.operand(cx, 0, &[1]).scalar();
    let (seed, threshold, scale) =
        (op.seed, keep_threshold(op.rate), (1.0 / (1.0 - op.rate)) as f32);
    m.emit(&|_, x, index, _| {
        Expr::select(
            Cmp::Ge,
            Expr::Uniform { seed, index: index.clone() },
            Expr::c(threshold),
            x[0].clone().bin(Binary::Mul, Expr::c(scale)),
            Expr::c(0.0),
        )
    })
}

/// `gaussian_noise`: `x + stddev * normal(seed, step, i)`, one lane at a time.
pub(super) fn gaussian_noise(cx: &Cx<'_>, op: &GaussianNoise) -> Vec<Kernel> {
    let n = cx.out_shape().numel();
    let mut m = Map::dense(cx.name(), cx.out(), &[n]);
    m.operand(cx, 0, &[1]).scalar();
    let (seed, stddev) = (op.seed, op.stddev as f32);
    m.emit(&|_, x, index, _| {
        Expr::Normal { seed, index: index.clone() }.fma(Expr::c(stddev), x[0].clone())
    })
}
