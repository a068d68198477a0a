//! Dense reference tensors: the values the reference semantics of every op compute on.
//!
//! They hold f64 so that the reference interpreter is an exact oracle for the f32 backends and
//! finite-difference gradient checks are meaningful.

use crate::shape::Shape;

/// A dense, row-major tensor of f64 values with a static shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The shape; `data.len() == shape.numel()`.
    pub shape: Shape,
    /// The elements in row-major order.
    pub data: Vec<f64>,
}

impl Tensor {
    /// A tensor from a shape and its row-major data.
    ///
    /// # Panics
    /// If the data length does not match the shape (a bug in the caller, never user input).
    pub fn new(shape: impl Into<Shape>, data: Vec<f64>) -> Self {
        let shape = shape.into();
        assert_eq!(shape.numel(), data.len(), "tensor data does not match shape {shape}");
        Tensor { shape, data }
    }

    /// A tensor of the given shape filled with `value`.
    pub fn full(shape: impl Into<Shape>, value: f64) -> Self {
        let shape = shape.into();
        let n = shape.numel();
        Tensor { shape, data: vec![value; n] }
    }

    /// A tensor of zeros.
    pub fn zeros(shape: impl Into<Shape>) -> Self {
        Self::full(shape, 0.0)
    }

    /// A rank-0 tensor.
    pub fn scalar(value: f64) -> Self {
        Tensor { shape: Shape::scalar(), data: vec![value] }
    }

    /// The tensor with `f` applied to every element.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Tensor {
        Tensor { shape: self.shape.clone(), data: self.data.iter().map(|&x| f(x)).collect() }
    }

    /// The element at a multi-index.
    pub fn at(&self, index: &[usize]) -> f64 {
        self.data[self.offset(index)]
    }

    /// The row-major offset of a multi-index.
    pub fn offset(&self, index: &[usize]) -> usize {
        debug_assert_eq!(index.len(), self.shape.rank());
        index.iter().zip(self.shape.dims()).fold(0, |acc, (&i, &d)| {
            debug_assert!(i < d);
            acc * d + i
        })
    }
}

/// Calls `f` with every multi-index of `shape`, in row-major order.
pub fn for_each_index(shape: &Shape, mut f: impl FnMut(&[usize])) {
    let dims = shape.dims();
    if dims.contains(&0) {
        return;
    }
    let mut index = vec![0usize; dims.len()];
    loop {
        f(&index);
        let mut axis = dims.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < dims[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_iteration_is_row_major() {
        let mut seen = Vec::new();
        for_each_index(&Shape::new([2, 3]), |i| seen.push(i.to_vec()));
        assert_eq!(seen.len(), 6);
        assert_eq!(seen[1], vec![0, 1]);
        assert_eq!(seen[3], vec![1, 0]);
        let t = Tensor::new([2, 3], (0..6).map(f64::from).collect());
        assert_eq!(t.at(&[1, 2]), 5.0);
        let mut count = 0;
        for_each_index(&Shape::scalar(), |_| count += 1);
        assert_eq!(count, 1);
    }
}
