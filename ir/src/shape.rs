//! Tensor shapes. Every value in the IR is an f32 tensor with a static shape; images are NHWC.

use std::fmt;

/// The static shape of an f32 tensor: its dimensions, outermost first. Rank 0 is a scalar.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    /// A shape from its dimensions.
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }

    /// The rank-0 (scalar) shape.
    pub fn scalar() -> Self {
        Shape(Vec::new())
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// Dimension `i`, counting from the end when negative (`-1` is the last).
    pub fn dim(&self, i: isize) -> usize {
        let idx = if i < 0 { self.0.len() as isize + i } else { i };
        self.0[idx as usize]
    }

    /// The shape as Keras prints it, with the leading batch dimension left open:
    /// `f32[64,26,26,32]` is `(None, 26, 26, 32)`. Used in messages about model files, which
    /// do not depend on the batch size.
    pub fn per_example(&self) -> String {
        let mut parts = vec![String::from("None")];
        parts.extend(self.0.iter().skip(1).map(|d| d.to_string()));
        format!("({})", parts.join(", "))
    }

    /// Row-major strides, in elements.
    pub fn strides(&self) -> Vec<usize> {
        let mut strides = vec![1; self.0.len()];
        for i in (0..self.0.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.0[i + 1];
        }
        strides
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}

impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}

/// Prints as the IR's type annotation, e.g. `f32[64,28,28,1]`; a scalar is `f32[]`.
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "f32[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_and_display() {
        let s = Shape::new([2, 3, 4]);
        assert_eq!(s.strides(), vec![12, 4, 1]);
        assert_eq!(s.numel(), 24);
        assert_eq!(s.dim(-1), 4);
        assert_eq!(s.to_string(), "f32[2,3,4]");
        assert_eq!(Shape::scalar().to_string(), "f32[]");
        assert_eq!(Shape::scalar().numel(), 1);
        assert_eq!(s.per_example(), "(None, 3, 4)");
    }
}
