//! `reduce_sum`: the axes are first grouped into runs of reduced and kept axes (axes of extent
//! 1 dropped, neighbours of the same kind merged), then:
//! - `[R, C]` (leading axes, the bias gradient) and `[K, R, C]` (e.g. a sum over H and W of
//!   NHWC): f32x4 accumulators across `C`, tiles of [`TILE`] columns, a serial loop over the
//!   `R` rows in blocks of [`ROW_BLOCK`]; parallel over `K`, or over the tiles;
//! - `[R]` (everything) and `[K, R]` (trailing axes): a fixed-order row sum per output,
//!   parallel over outputs when large;
//! - anything else: the output is zeroed, then a nest over the input in row-major order adds
//!   each innermost run (f32x4 along a kept run, a row sum along a reduced one), parallel over
//!   the outermost axis only when it is kept.
//!
//! Every output's summation order depends only on the shapes.

use super::nest::{
    affine, declare, for_loop, nest, row_major, run, scaled, set_at, splat_const, store, sum_run,
    Map, PAR_MIN,
};
use super::Cx;
use crate::kernel::{Binary, BufId, Expr, Index, Kernel, LoopKind, Reg, Stmt, Var};

/// Output columns per tile of a column sum (4 f32x4 accumulators, and 4 for a block's sum).
const TILE: usize = 16;

/// Rows per block of a column sum.
const ROW_BLOCK: usize = 64;

/// `reduce_sum{axes}`.
pub(super) fn reduce_sum(cx: &Cx<'_>, axes: &[usize]) -> Vec<Kernel> {
    let x = cx.shape(0);
    if x.numel() == 0 {
        return fill_zero(cx);
    }
    let mut groups: Vec<(usize, bool)> = Vec::new();
    for (a, &d) in x.dims().iter().enumerate() {
        if d == 1 {
            continue;
        }
        let reduced = axes.contains(&a);
        match groups.last_mut() {
            Some((e, r)) if *r == reduced => *e *= d,
            _ => groups.push((d, reduced)),
        }
    }
    match *groups.as_slice() {
        _ if groups.iter().all(|&(_, r)| !r) => {
            let mut m = Map::dense(cx.name(), cx.out(), &[x.numel()]);
            m.operand(cx, 0, &[1]);
            m.emit(&|_, s, _, _| s[0].clone())
        }
        [(n, true)] => rows(cx, 1, n),
        [(k, false), (n, true)] => rows(cx, k, n),
        [(r, true), (c, false)] => columns(cx, 1, r, c),
        [(o, false), (r, true), (c, false)] => columns(cx, o, r, c),
        _ => general(cx, &groups),
    }
}

fn fill_zero(cx: &Cx<'_>) -> Vec<Kernel> {
    let mut m = Map::dense(cx.name(), cx.out(), &[cx.out_shape().numel()]);
    m.constant(0.0);
    m.emit(&|_, s, _, _| s[0].clone())
}

/// A kernel with the operand's and the output's buffers declared.
fn kernel(cx: &Cx<'_>) -> (Kernel, BufId, BufId) {
    let mut k = Kernel::new(cx.name());
    let x = declare(&mut k, &cx.input(0));
    let y = declare(&mut k, &cx.out());
    (k, x, y)
}

/// `y[i] = Σ_j x[i * n + j]` for `i < outputs`: a row sum per output.
fn rows(cx: &Cx<'_>, outputs: usize, n: usize) -> Vec<Kernel> {
    let (mut k, x, y) = kernel(cx);
    let dims: &[usize] = if outputs > 1 { &[outputs] } else { &[] };
    let parallel = outputs > 1 && outputs * n >= PAR_MIN;
    k.body = nest(&mut k, dims, parallel, |k, vars| {
        let base = affine(0, &[n as i64], vars);
        let (mut s, sum) = sum_run(k, n, &mut |_, i, lanes| {
            (Vec::new(), Expr::load(x, base.clone().plus_index(i), lanes))
        });
        s.push(store(y, affine(0, &[1], vars), Expr::reg(sum)));
        s
    });
    vec![k]
}

/// `y[o, j] = Σ_r x[o, r, j]` for `o < outer`: full tiles of [`TILE`] columns, then one kernel
/// for the remaining f32x4 columns and the scalar tail. Parallel over `o` when there are
/// several, else over the tiles (when there are several).
fn columns(cx: &Cx<'_>, outer: usize, rows: usize, c: usize) -> Vec<Kernel> {
    let c4 = c / 4 * 4;
    let tiles = c4 / TILE;
    let big = outer * rows * c >= PAR_MIN;
    let dims: &[usize] = if outer > 1 { &[outer] } else { &[] };
    let mut kernels = Vec::new();
    if tiles > 0 {
        let (mut k, x, y) = kernel(cx);
        let parallel = big && (outer > 1 || tiles >= 2);
        k.body = nest(&mut k, dims, parallel, |k, vars| {
            let t = k.var();
            let x_base = affine(0, &[(rows * c) as i64], vars).plus_var(t, 1);
            let y_base = affine(0, &[c as i64], vars).plus_var(t, 1);
            let body = column_block(k, (x, x_base), (y, y_base), TILE / 4, 0, rows, c);
            let kind = if parallel && outer == 1 { LoopKind::Parallel } else { LoopKind::Serial };
            vec![for_loop(t, tiles * TILE, TILE, kind, body)]
        });
        kernels.push(k);
    }
    let done = tiles * TILE;
    if done < c {
        let (mut k, x, y) = kernel(cx);
        k.body = nest(&mut k, dims, big && outer > 1, |k, vars| {
            let x_base = affine(done as i64, &[(rows * c) as i64], vars);
            let y_base = affine(done as i64, &[c as i64], vars);
            column_block(k, (x, x_base), (y, y_base), (c4 - done) / 4, c - c4, rows, c)
        });
        kernels.push(k);
    }
    kernels
}

/// Statements storing at `y_base` the column sums of `rows` rows of `c` elements of `x` (from
/// `x_base`): tiles of [`TILE`] columns in a loop, then the rest, each column summed in
/// [`column_block`]'s fixed order. For kernels that sum what they just wrote (a fused bias
/// gradient).
pub(in crate::lower) fn column_sums(
    k: &mut Kernel,
    (x, x_base): (BufId, Index),
    (y, y_base): (BufId, Index),
    rows: usize,
    c: usize,
) -> Vec<Stmt> {
    let c4 = c / 4 * 4;
    let tiles = c4 / TILE;
    let mut s = Vec::new();
    if tiles > 0 {
        let t = k.var();
        let (xt, yt) = (x_base.clone().plus_var(t, 1), y_base.clone().plus_var(t, 1));
        let body = column_block(k, (x, xt), (y, yt), TILE / 4, 0, rows, c);
        s.push(for_loop(t, tiles * TILE, TILE, LoopKind::Serial, body));
    }
    let done = tiles * TILE;
    if done < c {
        let (xr, yr) = (x_base.plus(done as i64), y_base.plus(done as i64));
        s.extend(column_block(k, (x, xr), (y, yr), (c4 - done) / 4, c - c4, rows, c));
    }
    s
}

/// Sums over `rows` rows (of `c` elements, from `x_base`) of the `4 * vectors + scalars`
/// columns, stored from `y_base`. In registers, in blocks of [`ROW_BLOCK`] rows: each block
/// is summed from zero, then added to the total (a fixed order, more accurate than one long
/// serial sum).
fn column_block(
    k: &mut Kernel,
    (x, x_base): (BufId, Index),
    (y, y_base): (BufId, Index),
    vectors: usize,
    scalars: usize,
    rows: usize,
    c: usize,
) -> Vec<Stmt> {
    let groups: Vec<(usize, u8, i64)> = [(vectors, 4u8, 0), (scalars, 1, 4 * vectors as i64)]
        .into_iter()
        .filter(|g| g.0 > 0)
        .collect();
    let regs: Vec<(Reg, Reg)> = groups
        .iter()
        .map(|&(count, lanes, _)| {
            let name = if lanes == 4 { "" } else { "1" };
            (
                k.reg(format!("acc{name}"), lanes, count as u32),
                k.reg(format!("part{name}"), lanes, count as u32),
            )
        })
        .collect();
    // `f(acc, count, lanes, offset, u)` for every register of every group, in unrolled loops.
    let each = |k: &mut Kernel, f: &dyn Fn(Reg, Reg, u8, i64, Var) -> Stmt| -> Vec<Stmt> {
        groups
            .iter()
            .zip(&regs)
            .map(|(&(count, lanes, offset), &(acc, part))| {
                let u = k.var();
                for_loop(u, count, 1, LoopKind::Unrolled, vec![f(acc, part, lanes, offset, u)])
            })
            .collect()
    };
    let at = |r: Reg, u: Var| Expr::Reg(r, Index::var(u, 1));
    let zero = |r: Reg, lanes: u8, u: Var| set_at(r, u, splat_const(0.0, lanes));
    // Sums `n` rows from row `first` (+ the block variable, if any) into `part`, adds it to
    // `acc`.
    let block = |k: &mut Kernel, first: Index, n: usize| -> Vec<Stmt> {
        let r = k.var();
        let row = x_base.clone().plus_index(&scaled(&first, c as i64)).plus_var(r, c as i64);
        let mut s = each(k, &|_, part, lanes, _, u| zero(part, lanes, u));
        let update = each(k, &|_, part, lanes, offset, u| {
            let x_at = row.clone().plus_index(&Index::var(u, lanes as i64).plus(offset));
            set_at(part, u, at(part, u).bin(Binary::Add, Expr::load(x, x_at, lanes)))
        });
        s.push(for_loop(r, n, 1, LoopKind::Serial, update));
        s.extend(each(k, &|acc, part, _, _, u| {
            set_at(acc, u, at(acc, u).bin(Binary::Add, at(part, u)))
        }));
        s
    };
    let mut s = each(k, &|acc, _, lanes, _, u| zero(acc, lanes, u));
    let full = rows / ROW_BLOCK * ROW_BLOCK;
    if full > 0 {
        let b = k.var();
        let body = block(k, Index::var(b, 1), ROW_BLOCK);
        s.push(for_loop(b, full, ROW_BLOCK, LoopKind::Serial, body));
    }
    if full < rows {
        s.extend(block(k, Index::constant(full as i64), rows - full));
    }
    s.extend(each(k, &|acc, _, lanes, offset, u| {
        let y_at = y_base.clone().plus_index(&Index::var(u, lanes as i64).plus(offset));
        store(y, y_at, at(acc, u))
    }));
    s
}

/// Any other grouping: zero the output, then add every innermost run of the input in
/// row-major order.
fn general(cx: &Cx<'_>, groups: &[(usize, bool)]) -> Vec<Kernel> {
    let dims: Vec<usize> = groups.iter().map(|g| g.0).collect();
    let x_strides = row_major(&dims);
    let kept: Vec<usize> = groups.iter().filter(|g| !g.1).map(|g| g.0).collect();
    let kept_strides = row_major(&kept);
    let mut kept_iter = kept_strides.iter();
    let y_strides: Vec<i64> =
        groups.iter().map(|g| if g.1 { 0 } else { *kept_iter.next().expect("kept") }).collect();

    let mut kernels = fill_zero(cx);
    let (mut k, x, y) = kernel(cx);
    let m = dims.len();
    let d = dims[m - 1];
    let parallel = !groups[0].1 && cx.shape(0).numel() >= PAR_MIN;
    k.body = nest(&mut k, &dims[..m - 1], parallel, |k, vars| {
        let xi = affine(0, &x_strides[..m - 1], vars);
        let yi = affine(0, &y_strides[..m - 1], vars);
        if groups[m - 1].1 {
            let (mut s, sum) = sum_run(k, d, &mut |_, i, lanes| {
                (Vec::new(), Expr::load(x, xi.clone().plus_index(i), lanes))
            });
            let value = Expr::load(y, yi.clone(), 1).bin(Binary::Add, Expr::reg(sum));
            s.push(store(y, yi, value));
            s
        } else {
            run(k, d, true, &mut |_, i, lanes| {
                let at = yi.clone().plus_index(i);
                let value = Expr::load(y, at.clone(), lanes)
                    .bin(Binary::Add, Expr::load(x, xi.clone().plus_index(i), lanes));
                vec![store(y, at, value)]
            })
        }
    });
    kernels.push(k);
    kernels
}
