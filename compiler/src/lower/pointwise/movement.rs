//! Data movement: broadcast, bias add, transpose, concat and slice, all maps whose operands
//! are strided views (vectorised wherever the innermost run is contiguous).

use kiln_ir::ops::Slice;

use super::nest::{row_major, Map};
use super::Cx;
use crate::kernel::{Binary, Kernel};

/// `broadcast{shape, axes}`: each output element reads the operand at its kept axes (stride 0
/// along the new ones; an innermost broadcast run is one register splat across f32x4 stores).
pub(super) fn broadcast(cx: &Cx<'_>, axes: &[usize]) -> Vec<Kernel> {
    let out = cx.out_shape().dims().to_vec();
    let kept: Vec<usize> = (0..out.len()).filter(|a| !axes.contains(a)).collect();
    let x_strides = row_major(&kept.iter().map(|&a| out[a]).collect::<Vec<_>>());
    let mut strides = vec![0i64; out.len()];
    for (&a, &s) in kept.iter().zip(&x_strides) {
        strides[a] = s;
    }
    let mut m = Map::dense(cx.name(), cx.out(), &out);
    m.operand(cx, 0, &strides);
    m.emit(&|_, x, _, _| x[0].clone())
}

/// `bias_add(x [..., C], b [C])`: rows of `C`, vectorised along `C`, parallel over rows.
pub(super) fn bias_add(cx: &Cx<'_>) -> Vec<Kernel> {
    let c = cx.out_shape().dim(-1);
    let rows = cx.out_shape().numel() / c.max(1);
    let mut m = Map::dense(cx.name(), cx.out(), &[rows, c]);
    m.operand(cx, 0, &[c as i64, 1]).operand(cx, 1, &[0, 1]);
    m.emit(&|_, s, _, _| s[0].clone().bin(Binary::Add, s[1].clone()))
}

/// `transpose{perm}`: output axis `i` reads input axis `perm[i]` (vector copies when the last
/// axis stays last, scalar copies otherwise).
pub(super) fn transpose(cx: &Cx<'_>, perm: &[usize]) -> Vec<Kernel> {
    let x_strides = row_major(cx.shape(0).dims());
    let strides: Vec<i64> = perm.iter().map(|&p| x_strides[p]).collect();
    let mut m = Map::dense(cx.name(), cx.out(), cx.out_shape().dims());
    m.operand(cx, 0, &strides);
    m.emit(&|_, x, _, _| x[0].clone())
}

/// `concat{axis}`: one map per operand, writing its block of the output.
pub(super) fn concat(cx: &Cx<'_>, axis: usize) -> Vec<Kernel> {
    let out_strides = row_major(cx.out_shape().dims());
    let mut start = 0;
    let mut kernels = Vec::new();
    for i in 0..cx.operands.len() {
        let dims = cx.shape(i).dims().to_vec();
        let base = start as i64 * out_strides[axis];
        let mut m = Map::new(cx.name(), cx.out(), base, &dims, &out_strides);
        m.operand(cx, i, &row_major(&dims));
        kernels.extend(m.emit(&|_, x, _, _| x[0].clone()));
        start += dims[axis];
    }
    kernels
}

/// `slice{axis, start, len}`: a map over the output reading the operand's block.
pub(super) fn slice(cx: &Cx<'_>, op: &Slice) -> Vec<Kernel> {
    let x_strides = row_major(cx.shape(0).dims());
    let mut m = Map::dense(cx.name(), cx.out(), cx.out_shape().dims());
    let base = op.start as i64 * x_strides[op.axis];
    match cx.constant(0) {
        Some(v) => m.constant(v),
        None => m.read(cx.input(0), base, &x_strides),
    };
    m.emit(&|_, x, _, _| x[0].clone())
}
