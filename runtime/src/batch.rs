//! Mini-batches over a [`Dataset`]: shuffled per epoch for training, in order for evaluation.
//!
//! The shuffle is a Fisher-Yates pass driven by `ChaCha8Rng` drawing `u64` values, so the
//! order for a given seed and epoch is the same on every machine.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dataset::{Dataset, ShapeError};

/// One batch handed to a backend: `x` is `len` examples, each `example_len` f32 values, row-major;
/// `labels` holds `len` class ids as f32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batch<'a> {
    /// The examples, `len * example_len` values.
    pub x: &'a [f32],
    /// The class id of each example.
    pub labels: &'a [f32],
    /// Number of examples; the last batch of an epoch may be smaller than the batch size.
    pub len: usize,
}

/// Why a [`Batcher`] could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// A batch size of zero was asked for.
    #[error("batch size must be at least 1")]
    ZeroBatchSize,
    /// The dataset's fields disagree.
    #[error(transparent)]
    Shape(#[from] ShapeError),
}

/// Yields the batches of a dataset in an order reshuffled every epoch, reusing one buffer.
#[derive(Debug)]
pub struct Batcher<'d> {
    data: &'d Dataset,
    batch_size: usize,
    seed: u64,
    order: Vec<usize>,
    pos: usize,
    x: Vec<f32>,
    labels: Vec<f32>,
}

impl<'d> Batcher<'d> {
    /// A batcher over `data` positioned at the start of epoch 0.
    pub fn new(data: &'d Dataset, batch_size: usize, seed: u64) -> Result<Self, BatchError> {
        if batch_size == 0 {
            return Err(BatchError::ZeroBatchSize);
        }
        data.check()?;
        let cap = batch_size.min(data.len);
        Ok(Batcher {
            data,
            batch_size,
            seed,
            order: shuffled_order(data.len, seed, 0),
            pos: 0,
            x: Vec::with_capacity(cap * data.example_len()),
            labels: Vec::with_capacity(cap),
        })
    }

    /// Starts epoch `epoch` (0-based): reshuffles and rewinds.
    pub fn start_epoch(&mut self, epoch: u64) {
        self.order = shuffled_order(self.data.len, self.seed, epoch);
        self.pos = 0;
    }

    /// The next batch of the current epoch, or `None` when the epoch is done.
    ///
    /// The batch borrows the batcher's buffer, so it must be dropped before the next call.
    pub fn next_batch(&mut self) -> Option<Batch<'_>> {
        let end = self.order.len().min(self.pos + self.batch_size);
        let indices = self.order.get(self.pos..end).filter(|s| !s.is_empty())?;
        self.pos = end;
        let n = self.data.example_len();
        self.x.clear();
        self.labels.clear();
        for &i in indices {
            self.x.extend_from_slice(&self.data.images[i * n..(i + 1) * n]);
            self.labels.push(self.data.labels[i]);
        }
        Some(Batch { x: &self.x, labels: &self.labels, len: indices.len() })
    }

    /// The example order of the current epoch.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// The batch size asked for.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Number of batches in one epoch, counting the last partial one.
    pub fn batches_per_epoch(&self) -> usize {
        self.data.len.div_ceil(self.batch_size)
    }
}

/// The permutation of `0..len` used for `epoch` (0-based) with `seed`.
pub fn shuffled_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(epoch_seed(seed, epoch));
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        // Draw a u64 rather than a usize so the result does not depend on the pointer width.
        let j = rng.random_range(0..=i as u64) as usize;
        order.swap(i, j);
    }
    order
}

/// The RNG seed of one epoch: `seed` xor the epoch number spread over all 64 bits.
fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The batches of `data` in stored order, borrowing its storage directly (no copy).
///
/// The caller must ensure `data.check()` passes and `batch_size > 0`; otherwise the
/// iterator yields nothing.
pub fn in_order(data: &Dataset, batch_size: usize) -> impl Iterator<Item = Batch<'_>> {
    let usable = batch_size > 0 && data.check().is_ok();
    let n = data.example_len();
    let batches = if usable { data.len.div_ceil(batch_size) } else { 0 };
    (0..batches).map(move |b| {
        let start = b * batch_size;
        let end = data.len.min(start + batch_size);
        Batch {
            x: &data.images[start * n..end * n],
            labels: &data.labels[start..end],
            len: end - start,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` 1x2 images whose pixels are (i, -i) and whose label is i % 3.
    fn data(len: usize) -> Dataset {
        Dataset {
            images: (0..len).flat_map(|i| [i as f32, -(i as f32)]).collect(),
            labels: (0..len).map(|i| (i % 3) as f32).collect(),
            len,
            height: 1,
            width: 2,
            classes: 3,
        }
    }

    /// Runs one epoch and returns (example ids seen, batch lengths).
    fn epoch(b: &mut Batcher<'_>) -> (Vec<usize>, Vec<usize>) {
        let (mut ids, mut lens) = (vec![], vec![]);
        while let Some(batch) = b.next_batch() {
            assert_eq!(batch.x.len(), batch.len * 2);
            assert_eq!(batch.labels.len(), batch.len);
            for (k, pair) in batch.x.chunks(2).enumerate() {
                let i = pair[0] as usize;
                assert_eq!(pair[1], -(i as f32), "pixels of one example stay together");
                assert_eq!(batch.labels[k], (i % 3) as f32, "label follows its image");
                ids.push(i);
            }
            lens.push(batch.len);
        }
        (ids, lens)
    }

    #[test]
    fn every_index_once_per_epoch_with_partial_last_batch() {
        let d = data(23);
        let mut b = Batcher::new(&d, 5, 7).unwrap();
        assert_eq!(b.batches_per_epoch(), 5);
        for e in 0..3 {
            b.start_epoch(e);
            let (mut ids, lens) = epoch(&mut b);
            assert_eq!(lens, vec![5, 5, 5, 5, 3]);
            assert_eq!(ids, b.order(), "batches follow the epoch order");
            ids.sort_unstable();
            assert_eq!(ids, (0..23).collect::<Vec<_>>());
            assert!(b.next_batch().is_none(), "epoch stays finished");
        }
    }

    #[test]
    fn same_seed_same_order_different_epoch_or_seed_different_order() {
        let d = data(50);
        let mut a = Batcher::new(&d, 8, 42).unwrap();
        let mut b = Batcher::new(&d, 8, 42).unwrap();
        assert_eq!(epoch(&mut a).0, epoch(&mut b).0);
        a.start_epoch(1);
        b.start_epoch(1);
        let (a1, b1) = (epoch(&mut a).0, epoch(&mut b).0);
        assert_eq!(a1, b1);
        assert_ne!(shuffled_order(50, 42, 0), shuffled_order(50, 42, 1));
        assert_ne!(shuffled_order(50, 42, 0), shuffled_order(50, 43, 0));
        assert_ne!(shuffled_order(50, 42, 0), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn order_is_pinned_across_machines_and_versions() {
        // If this changes, runs with the same seed are no longer reproducible.
        assert_eq!(
            shuffled_order(10, 1234, 0),
            GOLDEN_1234_0,
            "update GOLDEN only for a deliberate change"
        );
    }
    const GOLDEN_1234_0: [usize; 10] = [9, 7, 5, 6, 1, 0, 2, 4, 8, 3];

    #[test]
    fn zero_batch_size_and_bad_dataset_are_errors() {
        let d = data(4);
        assert_eq!(Batcher::new(&d, 0, 0).unwrap_err(), BatchError::ZeroBatchSize);
        let mut bad = data(4);
        bad.labels.pop();
        assert!(matches!(
            Batcher::new(&bad, 2, 0).unwrap_err(),
            BatchError::Shape(ShapeError::Labels { .. })
        ));
    }

    #[test]
    fn empty_dataset_yields_no_batch() {
        let d = data(0);
        let mut b = Batcher::new(&d, 4, 0).unwrap();
        assert!(b.next_batch().is_none());
        assert_eq!(in_order(&d, 4).count(), 0);
    }

    #[test]
    fn in_order_covers_the_data_without_copying() {
        let d = data(7);
        let batches: Vec<_> = in_order(&d, 3).collect();
        assert_eq!(batches.iter().map(|b| b.len).collect::<Vec<_>>(), vec![3, 3, 1]);
        assert_eq!(batches[2].x, &[6.0, -6.0]);
        assert_eq!(batches[1].labels, &[0.0, 1.0, 2.0]);
        assert!(std::ptr::eq(batches[0].x.as_ptr(), d.images.as_ptr()));
        assert_eq!(in_order(&d, 0).count(), 0);
    }
}
