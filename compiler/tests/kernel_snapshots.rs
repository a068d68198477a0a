//! Snapshots of the kernels (and their Cranelift IR) of a few small ops: a change in lowering or
//! code generation shows up here in review.

use kiln_compiler::codegen::clif_text;
use kiln_compiler::kernel::print::print;
use kiln_compiler::kernel::Kernel;
use kiln_compiler::lower::lower;
use kiln_compiler::memory::{plan, Persistent};
use kiln_ir::ops::{
    Conv2d, Input, MatMul, MaxPool2d, PadMode, Padding, Relu, ReluGrad, SoftmaxCrossEntropy,
    SoftmaxCrossEntropyGrad,
};
use kiln_ir::{Graph, Op, Shape};

/// The kernels of `op` applied to inputs of the given shapes.
fn kernels(op: impl Into<Op>, inputs: &[&[usize]]) -> Vec<Kernel> {
    let mut g = Graph::new();
    let ids: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| g.leaf(Input {}, Shape::new(s.to_vec()), &format!("x{i}")).unwrap())
        .collect();
    let y = g.add(op, &ids, "y").unwrap();
    let order = g.topo_order().unwrap();
    let p = plan(&g, &order, &Persistent::default(), &[y]);
    lower(&g, y, &p, p.scratch.get(&y)).unwrap()
}

fn text(kernels: &[Kernel]) -> String {
    kernels.iter().map(print).collect::<Vec<_>>().join("\n")
}

#[test]
fn relu_with_a_scalar_tail() {
    insta::assert_snapshot!(text(&kernels(Relu {}, &[&[2, 7]])));
}

#[test]
fn small_gemm_with_row_and_column_tails() {
    insta::assert_snapshot!(text(&kernels(MatMul::default(), &[&[5, 6], &[6, 11]])));
}

#[test]
fn conv2d_same_padding() {
    let op = Conv2d { stride: [1, 1], pad: Padding::Mode(PadMode::Same) };
    insta::assert_snapshot!(text(&kernels(op, &[&[1, 4, 4, 2], &[3, 3, 2, 4]])));
}

#[test]
fn max_pool() {
    let op = MaxPool2d { size: [2, 2], stride: [2, 2] };
    insta::assert_snapshot!(text(&kernels(op, &[&[1, 4, 4, 6]])));
}

#[test]
fn softmax_cross_entropy() {
    insta::assert_snapshot!(text(&kernels(SoftmaxCrossEntropy {}, &[&[3, 10], &[3], &[3]])));
}

#[test]
fn fused_relu_grad() {
    insta::assert_snapshot!(text(&kernels(ReluGrad {}, &[&[2, 7], &[2, 7]])));
}

#[test]
fn fused_softmax_cross_entropy_grad() {
    let op = SoftmaxCrossEntropyGrad {};
    insta::assert_snapshot!(text(&kernels(op, &[&[3, 10], &[3], &[3], &[]])));
}

#[test]
fn clif_of_relu_and_gemm() {
    let relu = kernels(Relu {}, &[&[2, 7]]);
    let gemm = kernels(MatMul::default(), &[&[4, 3], &[3, 8]]);
    let clif: Vec<String> = relu.iter().chain(&gemm).map(|k| clif_text(k).unwrap()).collect();
    insta::assert_snapshot!(clif.join("\n"));
}
