//! Activations across the channel axis: softmax (per row: max, exp and sum, divide) and
//! maxout with its gradient. The softmax's row passes ([`row_max`], [`exp_sum`]) are shared
//! with the softmax cross-entropy gradient (`loss.rs`), so both compute the same exponentials.

use super::nest::{
    affine, declare, for_loop, lanes_of, nest, run, serial, set, set_at, store, sum_run, Map,
    PAR_MIN,
};
use super::Cx;
use crate::kernel::{Binary, BufId, Cmp, Expr, Index, Kernel, LoopKind, Reg, Stmt, Unary};

/// Unroll the loop over a maxout group up to this many pieces.
const MAX_UNROLL: usize = 8;

/// `softmax` along the last axis, one row per iteration (parallel over rows when large):
/// the row maximum ([`row_max`]), `y = exp(x - max)` stored and summed ([`exp_sum`]), then
/// `y /= sum`.
pub(super) fn softmax(cx: &Cx<'_>) -> Vec<Kernel> {
    let c = cx.out_shape().dim(-1);
    let numel = cx.out_shape().numel();
    if numel == 0 {
        return Vec::new();
    }
    let rows = numel / c;
    let mut k = Kernel::new(cx.name());
    let x = declare(&mut k, &cx.input(0));
    let y = declare(&mut k, &cx.out());
    let dims: &[usize] = if rows > 1 { &[rows] } else { &[] };
    let parallel = rows > 1 && numel >= PAR_MIN;
    k.body = nest(&mut k, dims, parallel, |k, vars| {
        let base = affine(0, &[c as i64], vars);
        let at = |i: &Index| base.clone().plus_index(i);
        let (mut s, max) = row_max(k, x, &at, c);
        let (sum_stmts, sum) = exp_sum(k, x, y, &at, c, max);
        s.extend(sum_stmts);
        // Divide by the sum.
        let sum4 = k.reg("sum_v", 4, 1);
        s.push(set(sum4, lanes_of(Expr::reg(sum), 4)));
        s.extend(run(k, c, true, &mut |_, i, lanes| {
            let value = Expr::load(y, at(i), lanes).bin(Binary::Div, pick(sum, sum4, lanes));
            vec![store(y, at(i), value)]
        }));
        s
    });
    vec![k]
}

/// The 4-lane register `r4` or the scalar `r1`, for a value of `lanes` lanes.
fn pick(r1: Reg, r4: Reg, lanes: u8) -> Expr {
    if lanes == 4 {
        Expr::reg(r4)
    } else {
        Expr::reg(r1)
    }
}

/// Statements leaving in the returned register the maximum of a row of `c` elements of `x`
/// (element `i` at `at(i)`): four scalar registers over blocks of 4 elements, combined, then
/// a scalar tail.
pub(super) fn row_max(
    k: &mut Kernel,
    x: BufId,
    at: &dyn Fn(&Index) -> Index,
    c: usize,
) -> (Vec<Stmt>, Reg) {
    let mut s = Vec::new();
    let max = k.reg("max", 1, 1);
    let c4 = c / 4 * 4;
    let neg_inf = Expr::c(f32::NEG_INFINITY);
    if c4 > 0 {
        let m4 = k.reg("max4", 1, 4);
        let u = k.var();
        s.push(for_loop(u, 4, 1, LoopKind::Unrolled, vec![set_at(m4, u, neg_inf.clone())]));
        let (i, u) = (k.var(), k.var());
        let value = Expr::load(x, at(&Index::var(i, 1).plus_var(u, 1)), 1)
            .bin(Binary::Max, Expr::Reg(m4, Index::var(u, 1)));
        let inner = for_loop(u, 4, 1, LoopKind::Unrolled, vec![set_at(m4, u, value)]);
        s.push(for_loop(i, c4, 4, LoopKind::Serial, vec![inner]));
        let r = |j| Expr::Reg(m4, Index::constant(j));
        s.push(set(max, r(0).bin(Binary::Max, r(1)).bin(Binary::Max, r(2).bin(Binary::Max, r(3)))));
    } else {
        s.push(set(max, neg_inf));
    }
    if c > c4 {
        s.extend(serial(k, c - c4, c4 as i64, |_, i| {
            let value = Expr::load(x, at(i), 1).bin(Binary::Max, Expr::reg(max));
            vec![set(max, value)]
        }));
    }
    (s, max)
}

/// Statements storing `y = exp(x - max)` over a row of `c` elements (element `i` at `at(i)`
/// in both buffers) and leaving their sum, in the fixed order of [`sum_run`], in the returned
/// register.
pub(super) fn exp_sum(
    k: &mut Kernel,
    x: BufId,
    y: BufId,
    at: &dyn Fn(&Index) -> Index,
    c: usize,
    max: Reg,
) -> (Vec<Stmt>, Reg) {
    let max4 = k.reg("max_v", 4, 1);
    let mut s = vec![set(max4, Expr::reg(max).splat())];
    let (sum_stmts, sum) = sum_run(k, c, &mut |_, i, lanes| {
        let e = Expr::load(x, at(i), lanes).bin(Binary::Sub, pick(max, max4, lanes)).un(Unary::Exp);
        (vec![store(y, at(i), e)], Expr::load(y, at(i), lanes))
    });
    s.extend(sum_stmts);
    (s, sum)
}

/// `maxout{pieces}`: a map over the units whose operands are the `pieces` strided views of
/// the input; `m = x0; m = max(x_j, m)` keeps the first maximum as the reference does.
pub(super) fn maxout(cx: &Cx<'_>, pieces: usize) -> Vec<Kernel> {
    let units = cx.out_shape().numel();
    let mut m = Map::dense(cx.name(), cx.out(), &[units]);
    for j in 0..pieces {
        match cx.constant(0) {
            Some(v) => m.constant(v),
            None => m.read(cx.input(0), j as i64, &[pieces as i64]),
        };
    }
    m.emit(&|_, s, _, _| s[1..].iter().fold(s[0].clone(), |m, v| v.clone().bin(Binary::Max, m)))
}

/// `maxout_grad{pieces}(x, g)`: per unit (parallel over units when large), the index of the
/// first maximum of its group, then `dx[j] = j == argmax ? g : 0` over the group.
pub(super) fn maxout_grad(cx: &Cx<'_>, pieces: usize) -> Vec<Kernel> {
    let units = cx.shape(1).numel();
    if units == 0 || pieces == 0 {
        return Vec::new();
    }
    let mut k = Kernel::new(cx.name());
    let x = declare(&mut k, &cx.input(0));
    let g = declare(&mut k, &cx.input(1));
    let y = declare(&mut k, &cx.out());
    let dims: &[usize] = if units > 1 { &[units] } else { &[] };
    let parallel = units > 1 && units * pieces >= PAR_MIN;
    let kind = if pieces <= MAX_UNROLL { LoopKind::Unrolled } else { LoopKind::Serial };
    k.body = nest(&mut k, dims, parallel, |k, vars| {
        let base = affine(0, &[pieces as i64], vars);
        let (max, arg, grad) = (k.reg("max", 1, 1), k.reg("arg", 1, 1), k.reg("g", 1, 1));
        let mut s = vec![
            set(max, Expr::load(x, base.clone(), 1)),
            set(arg, Expr::c(0.0)),
            set(grad, Expr::load(g, affine(0, &[1], vars), 1)),
        ];
        if pieces > 1 {
            let j = k.var();
            let at = base.clone().plus_var(j, 1).plus(1);
            let v = Expr::load(x, at, 1);
            let better = Expr::select(
                Cmp::Gt,
                v.clone(),
                Expr::reg(max),
                Expr::IndexValue(Index::var(j, 1).plus(1)),
                Expr::reg(arg),
            );
            let body = vec![set(arg, better), set(max, v.bin(Binary::Max, Expr::reg(max)))];
            s.push(for_loop(j, pieces - 1, 1, kind, body));
        }
        let j = k.var();
        let value = Expr::select(
            Cmp::Eq,
            Expr::IndexValue(Index::var(j, 1)),
            Expr::reg(arg),
            Expr::reg(grad),
            Expr::c(0.0),
        );
        s.push(for_loop(j, pieces, 1, kind, vec![store(y, base.clone().plus_var(j, 1), value)]));
        s
    });
    vec![k]
}
