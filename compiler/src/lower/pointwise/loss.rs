//! Losses (a weighted sum over the examples each, see `kiln_ir::ops`), their elementwise
//! gradients and one-hot encoding.

use kiln_ir::ops::BCE_EPS;

use super::nest::{
    affine, declare, for_loop, nest, set, splat_const, store, sum_run, Map, PAR_MIN,
};
use super::softmax::{exp_sum, row_max};
use super::Cx;
use crate::kernel::{Binary, Cmp, Expr, Index, Kernel, LoopKind, Unary};

/// The smallest f32 that is `>= x` (x > 0).
fn f32_at_least(x: f64) -> f32 {
    let f = x as f32;
    if (f as f64) < x {
        f32::from_bits(f.to_bits() + 1)
    } else {
        f
    }
}

/// The largest f32 that is `<= x` (x > 0).
fn f32_at_most(x: f64) -> f32 {
    let f = x as f32;
    if (f as f64) > x {
        f32::from_bits(f.to_bits() - 1)
    } else {
        f
    }
}

/// The clip range `[BCE_EPS, 1 - BCE_EPS]` in f32: an f32 `p` is inside it exactly when
/// `lo <= p <= hi`.
pub(super) fn bce_range() -> (f32, f32) {
    (f32_at_least(BCE_EPS), f32_at_most(1.0 - BCE_EPS))
}

/// `one_hot{classes}(labels [N])`: per label (parallel over labels when large),
/// `y[c] = c == label ? 1 : 0` for every class (labels outside the classes or not integers
/// match none, as in the reference).
pub(super) fn one_hot(cx: &Cx<'_>) -> Vec<Kernel> {
    let n = cx.shape(0).numel();
    let classes = cx.out_shape().dim(1);
    if n * classes == 0 {
        return Vec::new();
    }
    let mut k = Kernel::new(cx.name());
    let l = declare(&mut k, &cx.input(0));
    let y = declare(&mut k, &cx.out());
    let dims: &[usize] = if n > 1 { &[n] } else { &[] };
    let parallel = n > 1 && n * classes >= PAR_MIN;
    k.body = nest(&mut k, dims, parallel, |k, vars| {
        let label = k.reg("label", 1, 1);
        let c = k.var();
        let value = Expr::select(
            Cmp::Eq,
            Expr::IndexValue(Index::var(c, 1)),
            Expr::reg(label),
            Expr::c(1.0),
            Expr::c(0.0),
        );
        let at = affine(0, &[classes as i64], vars).plus_var(c, 1);
        vec![
            set(label, Expr::load(l, affine(0, &[1], vars), 1)),
            for_loop(c, classes, 1, LoopKind::Serial, vec![store(y, at, value)]),
        ]
    });
    vec![k]
}

/// `softmax_cross_entropy(logits [N, C], labels [N], weights [N])`: one serial kernel. Per
/// row, in row order: one scalar pass for the maximum and `x[label]` (a select on
/// `c == label`), the exp-sum as a fixed-order row sum, then
/// `total += w * ((max + log sum) - x[label])`; finally `y = total`.
pub(super) fn softmax_cross_entropy(cx: &Cx<'_>) -> Vec<Kernel> {
    let (n, c) = (cx.shape(0).dim(0), cx.shape(0).dim(1));
    let mut k = Kernel::new(cx.name());
    let x = declare(&mut k, &cx.input(0));
    let l = declare(&mut k, &cx.input(1));
    let w = declare(&mut k, &cx.input(2));
    let y = declare(&mut k, &cx.out());
    let total = k.reg("total", 1, 1);
    let mut body = vec![set(total, Expr::c(0.0))];
    if n > 0 && c > 0 {
        let (label, max, max4, picked) =
            (k.reg("label", 1, 1), k.reg("max", 1, 1), k.reg("max_v", 4, 1), k.reg("picked", 1, 1));
        let r = k.var();
        let base = Index::var(r, c as i64);
        let j = k.var();
        let v = Expr::load(x, base.clone().plus_var(j, 1), 1);
        let pick = Expr::select(
            Cmp::Eq,
            Expr::IndexValue(Index::var(j, 1)),
            Expr::reg(label),
            v.clone(),
            Expr::reg(picked),
        );
        let mut row = vec![
            set(label, Expr::load(l, Index::var(r, 1), 1)),
            set(max, Expr::c(f32::NEG_INFINITY)),
            set(picked, Expr::c(0.0)),
            for_loop(
                j,
                c,
                1,
                LoopKind::Serial,
                vec![set(picked, pick), set(max, v.bin(Binary::Max, Expr::reg(max)))],
            ),
            set(max4, Expr::reg(max).splat()),
        ];
        let (sum_stmts, sum) = sum_run(&mut k, c, &mut |_, i, lanes| {
            let m = if lanes == 4 { Expr::reg(max4) } else { Expr::reg(max) };
            let e =
                Expr::load(x, base.clone().plus_index(i), lanes).bin(Binary::Sub, m).un(Unary::Exp);
            (Vec::new(), e)
        });
        row.extend(sum_stmts);
        let lse = Expr::reg(max).bin(Binary::Add, Expr::reg(sum).un(Unary::Log));
        let loss = lse.bin(Binary::Sub, Expr::reg(picked));
        let weighted = Expr::load(w, Index::var(r, 1), 1).bin(Binary::Mul, loss);
        row.push(set(total, Expr::reg(total).bin(Binary::Add, weighted)));
        body.push(for_loop(r, n, 1, LoopKind::Serial, row));
    }
    body.push(store(y, Index::constant(0), Expr::reg(total)));
    k.body = body;
    vec![k]
}

/// `softmax_cross_entropy_grad(logits [N, C], labels [N], weights [N], g [])`: one kernel,
/// one row per iteration (parallel over rows when large). The row maximum and
/// `y = exp(x - max)` with its sum are computed as `softmax` computes them; then one scalar
/// pass `y[j] = (y[j] / sum - (j == label ? 1 : 0)) * (w[row] * g)` rounds as the unfused
/// chain (softmax, one_hot, sub, mul) does. Labels outside the classes match no class.
pub(super) fn softmax_cross_entropy_grad(cx: &Cx<'_>) -> Vec<Kernel> {
    let (n, c) = (cx.out_shape().dim(0), cx.out_shape().dim(1));
    if n * c == 0 {
        return Vec::new();
    }
    let mut k = Kernel::new(cx.name());
    let x = declare(&mut k, &cx.input(0));
    let l = declare(&mut k, &cx.input(1));
    let w = declare(&mut k, &cx.input(2));
    let g = declare(&mut k, &cx.input(3));
    let y = declare(&mut k, &cx.out());
    let dims: &[usize] = if n > 1 { &[n] } else { &[] };
    let parallel = n > 1 && n * c >= PAR_MIN;
    k.body = nest(&mut k, dims, parallel, |k, vars| {
        let row = affine(0, &[1], vars);
        let base = affine(0, &[c as i64], vars);
        let at = |i: &Index| base.clone().plus_index(i);
        let (mut s, max) = row_max(k, x, &at, c);
        let (sum_stmts, sum) = exp_sum(k, x, y, &at, c, max);
        s.extend(sum_stmts);
        let (label, scale) = (k.reg("label", 1, 1), k.reg("scale", 1, 1));
        let g0 = Expr::load(g, Index::constant(0), 1);
        s.push(set(label, Expr::load(l, row.clone(), 1)));
        s.push(set(scale, Expr::load(w, row, 1).bin(Binary::Mul, g0)));
        let j = k.var();
        let col = at(&Index::var(j, 1));
        let p = Expr::load(y, col.clone(), 1).bin(Binary::Div, Expr::reg(sum));
        let one_hot = Expr::select(
            Cmp::Eq,
            Expr::IndexValue(Index::var(j, 1)),
            Expr::reg(label),
            Expr::c(1.0),
            Expr::c(0.0),
        );
        let value = p.bin(Binary::Sub, one_hot).bin(Binary::Mul, Expr::reg(scale));
        s.push(for_loop(j, c, 1, LoopKind::Serial, vec![store(y, col, value)]));
        s
    });
    vec![k]
}

/// A serial kernel storing `(negate ? -1 : 1) * Σ_r w[r] * (Σ_j term(p, t) over row r) / D`
/// for `p`, `t` of `N` rows of `D` values (fixed-order sums).
fn weighted_row_means(
    cx: &Cx<'_>,
    negate: bool,
    term: &dyn Fn(Expr, Expr, u8) -> Expr,
) -> Vec<Kernel> {
    let shape = cx.shape(0);
    let n = shape.dim(0);
    let d = shape.numel().checked_div(n).unwrap_or(0);
    let mut k = Kernel::new(cx.name());
    let p = declare(&mut k, &cx.input(0));
    let t = declare(&mut k, &cx.input(1));
    let w = declare(&mut k, &cx.input(2));
    let y = declare(&mut k, &cx.out());
    let total = k.reg("total", 1, 1);
    let mut body = vec![set(total, Expr::c(0.0))];
    if n > 0 && d > 0 {
        let r = k.var();
        let base = Index::var(r, d as i64);
        let (mut row, sum) = sum_run(&mut k, d, &mut |_, i, lanes| {
            let at = base.clone().plus_index(i);
            (Vec::new(), term(Expr::load(p, at.clone(), lanes), Expr::load(t, at, lanes), lanes))
        });
        let weighted = Expr::load(w, Index::var(r, 1), 1).bin(Binary::Mul, Expr::reg(sum));
        row.push(set(total, Expr::reg(total).bin(Binary::Add, weighted)));
        body.push(for_loop(r, n, 1, LoopKind::Serial, row));
    }
    let mean = Expr::reg(total).bin(Binary::Div, Expr::c(d.max(1) as f32));
    body.push(store(y, Index::constant(0), if negate { mean.un(Unary::Neg) } else { mean }));
    k.body = body;
    vec![k]
}

/// `mse(p, t, w)`: weighted per-example means of `(p - t)^2`.
pub(super) fn mse(cx: &Cx<'_>) -> Vec<Kernel> {
    weighted_row_means(cx, false, &|p, t, _| {
        let d = p.bin(Binary::Sub, t);
        d.clone().bin(Binary::Mul, d)
    })
}

/// `binary_cross_entropy(p, t, w)`: weighted per-example means of
/// `-(t log p + (1 - t) log(1 - p))`, `p` and `1 - p` clipped to the f32 clip range (NaN
/// passes through).
pub(super) fn binary_cross_entropy(cx: &Cx<'_>) -> Vec<Kernel> {
    let (lo, hi) = bce_range();
    weighted_row_means(cx, true, &|p, t, lanes| {
        let c = |v: f32| splat_const(v, lanes);
        // max(lo, min(hi, v)) keeps a NaN `v`.
        let clip = |v: Expr| c(lo).bin(Binary::Max, c(hi).bin(Binary::Min, v));
        let log_p = clip(p.clone()).un(Unary::Log);
        let log_q = clip(c(1.0).bin(Binary::Sub, p)).un(Unary::Log);
        let not_t = c(1.0).bin(Binary::Sub, t.clone());
        t.bin(Binary::Mul, log_p).bin(Binary::Add, not_t.bin(Binary::Mul, log_q))
    })
}

/// `binary_cross_entropy_grad(p, t, w)`: `(p - t) / (p (1 - p)) * w[row] / D` inside the clip
/// range, 0 outside (and for NaN), as a map over `[N, D]`.
pub(super) fn binary_cross_entropy_grad(cx: &Cx<'_>) -> Vec<Kernel> {
    let shape = cx.out_shape();
    let n = shape.dim(0);
    let d = shape.numel().checked_div(n).unwrap_or(0);
    let (lo, hi) = bce_range();
    let mut m = Map::dense(cx.name(), cx.out(), &[n, d]);
    m.operand(cx, 0, &[d as i64, 1]).operand(cx, 1, &[d as i64, 1]).operand(cx, 2, &[1, 0]);
    m.emit(&|_, s, _, lanes| {
        let c = |v: f32| splat_const(v, lanes);
        let (p, t, w) = (s[0].clone(), s[1].clone(), s[2].clone());
        let den = p.clone().bin(Binary::Mul, c(1.0).bin(Binary::Sub, p.clone()));
        let value = p
            .clone()
            .bin(Binary::Sub, t)
            .bin(Binary::Div, den)
            .bin(Binary::Mul, w)
            .bin(Binary::Div, c(d as f32));
        let inside = Expr::select(Cmp::Ge, c(hi), p.clone(), value, c(0.0));
        Expr::select(Cmp::Ge, p, c(lo), inside, c(0.0))
    })
}
