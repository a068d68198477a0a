//! Helpers for the ops' unit tests.

use super::{EvalCtx, OpSpec};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Infers the output shape of `op` on `operands` and evaluates its reference semantics.
pub fn run(op: &dyn OpSpec, operands: &[&Tensor]) -> Tensor {
    let shapes: Vec<&Shape> = operands.iter().map(|t| &t.shape).collect();
    let out = op.infer(&shapes).unwrap_or_else(|e| panic!("infer: {e}"));
    op.eval(operands, &out, &EvalCtx::default())
}

/// Checks `grad` against central differences of `loss` at `t`, entry by entry.
pub fn check_fd(what: &str, t: &Tensor, grad: &Tensor, loss: impl Fn(&Tensor) -> f64) {
    assert_eq!(t.shape, grad.shape, "{what}: gradient shape");
    let h = 1e-6;
    for i in 0..t.data.len() {
        let (mut plus, mut minus) = (t.clone(), t.clone());
        plus.data[i] += h;
        minus.data[i] -= h;
        let fd = (loss(&plus) - loss(&minus)) / (2.0 * h);
        let g = grad.data[i];
        let ok = (fd - g).abs() <= 1e-6 * (1.0 + g.abs());
        assert!(ok, "{what}[{i}]: fd {fd}, grad {g}");
    }
}
