//! Short batches on programs compiled for a fixed batch size.
//!
//! A compiled program handles exactly `capacity` examples. A shorter batch (the last of an
//! epoch) is padded: its examples fill the first rows, the remaining rows are zeros, and the
//! loss's example weights are `1/len` for the real rows and `0` for the padding, so the loss is
//! the mean over the real examples and padding rows get no gradient. One program per batch size
//! thus serves every batch, with no recompilation and no masking inside kernels.

use crate::batch::Batch;
use crate::train::BackendError;

/// Destination buffers of one program's inputs, each sized for `capacity` examples.
pub struct PaddedInputs<'a> {
    /// The data input, `capacity * example_len` values.
    pub x: &'a mut [f32],
    /// The labels, `capacity` values, when the program reads labels.
    pub labels: Option<&'a mut [f32]>,
    /// The example weights of the loss, `capacity` values.
    pub weights: &'a mut [f32],
}

/// Writes `batch` into `dst`, padding it up to `dst.weights.len()` examples.
///
/// Errors when the batch is empty, larger than the program's batch size, or its examples have
/// a different size than the program's input.
pub fn write_padded(batch: &Batch<'_>, dst: PaddedInputs<'_>) -> Result<(), BackendError> {
    let capacity = dst.weights.len();
    if batch.len == 0 || batch.len > capacity {
        return Err(BackendError::new(format!(
            "a batch of {} examples does not fit a program compiled for batches of {capacity}",
            batch.len
        )));
    }
    let example_len = dst.x.len() / capacity;
    if batch.x.len() != batch.len * example_len || batch.labels.len() < batch.len {
        return Err(BackendError::new(format!(
            "the model's input holds {example_len} values per example, but the batch holds {} values for {} examples",
            batch.x.len(),
            batch.len
        )));
    }
    let (x, padding) = dst.x.split_at_mut(batch.x.len());
    x.copy_from_slice(batch.x);
    padding.fill(0.0);
    if let Some(labels) = dst.labels {
        labels[..batch.len].copy_from_slice(&batch.labels[..batch.len]);
        labels[batch.len..].fill(0.0);
    }
    let w = 1.0 / batch.len as f32;
    for (i, slot) in dst.weights.iter_mut().enumerate() {
        *slot = if i < batch.len { w } else { 0.0 };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_batch_is_padded_with_zero_weights() {
        let (x, labels) = ([1.0, 2.0, 3.0, 4.0], [7.0, 8.0]);
        let batch = Batch { x: &x, labels: &labels, len: 2 };
        let (mut dx, mut dl, mut dw) = ([9.0; 8], [9.0; 4], [9.0; 4]);
        let dst = PaddedInputs { x: &mut dx, labels: Some(&mut dl), weights: &mut dw };
        write_padded(&batch, dst).unwrap();
        assert_eq!(dx, [1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(dl, [7.0, 8.0, 0.0, 0.0]);
        assert_eq!(dw, [0.5, 0.5, 0.0, 0.0]);
    }

    #[test]
    fn a_full_batch_fills_every_row() {
        let (x, labels) = ([1.0, 2.0, 3.0], [0.0, 1.0, 2.0]);
        let batch = Batch { x: &x, labels: &labels, len: 3 };
        let (mut dx, mut dw) = ([0.0; 3], [0.0; 3]);
        write_padded(&batch, PaddedInputs { x: &mut dx, labels: None, weights: &mut dw }).unwrap();
        assert_eq!(dx, x);
        assert_eq!(dw, [1.0 / 3.0; 3]);
    }

    #[test]
    fn oversized_empty_and_misshapen_batches_are_errors() {
        let x = [0.0; 6];
        let (mut dx, mut dw) = ([0.0; 4], [0.0; 2]);
        let too_big = Batch { x: &x, labels: &[0.0; 3], len: 3 };
        let dst = PaddedInputs { x: &mut dx, labels: None, weights: &mut dw };
        assert!(write_padded(&too_big, dst).unwrap_err().message.contains("does not fit"));
        let empty = Batch { x: &[], labels: &[], len: 0 };
        let dst = PaddedInputs { x: &mut dx, labels: None, weights: &mut dw };
        assert!(write_padded(&empty, dst).is_err());
        let misshapen = Batch { x: &x[..3], labels: &[0.0], len: 1 };
        let dst = PaddedInputs { x: &mut dx, labels: None, weights: &mut dw };
        assert!(write_padded(&misshapen, dst).unwrap_err().message.contains("per example"));
    }
}
