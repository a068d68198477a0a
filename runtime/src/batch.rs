//! Mini-batches over a [`Dataset`]: shuffled per epoch for training, in order for evaluation.
//!
//! Datasets keep their pixels as bytes; a batch is converted to `f32` ([`pixel_value`]) into
//! buffers its batcher reuses, so only one batch at a time exists as `f32`.
//!
//! The shuffle is a Fisher-Yates pass driven by `ChaCha8Rng` drawing `u64` values, so the
//! order for a given seed and epoch is the same on every machine.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dataset::{pixel_value, Dataset, ShapeError};

/// One batch handed to a backend: `x` is `len` examples, each `example_len` f32 values in
/// `[0, 1]`, row-major; `labels` holds `len` class ids as f32.
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
    buffers: Buffers,
}

/// The `f32` storage of one batch, refilled from a dataset's bytes for every batch.
#[derive(Debug)]
struct Buffers {
    x: Vec<f32>,
    labels: Vec<f32>,
}

impl Buffers {
    /// Room for batches of up to `batch_size` examples of `data`, allocated once.
    fn for_batches_of(data: &Dataset, batch_size: usize) -> Self {
        let cap = batch_size.min(data.len);
        Buffers {
            x: Vec::with_capacity(cap.saturating_mul(data.example_len())),
            labels: Vec::with_capacity(cap),
        }
    }

    /// Converts the examples `indices` of `data` (which must pass `check`) to a batch.
    fn fill(&mut self, data: &Dataset, indices: impl Iterator<Item = usize>) -> Batch<'_> {
        let n = data.example_len();
        self.x.clear();
        self.labels.clear();
        for i in indices {
            self.x.extend(data.pixels[i * n..(i + 1) * n].iter().map(|&b| pixel_value(b)));
            self.labels.push(f32::from(data.labels[i]));
        }
        Batch { x: &self.x, labels: &self.labels, len: self.labels.len() }
    }
}

impl<'d> Batcher<'d> {
    /// A batcher over `data` positioned at the start of epoch 0.
    pub fn new(data: &'d Dataset, batch_size: usize, seed: u64) -> Result<Self, BatchError> {
        if batch_size == 0 {
            return Err(BatchError::ZeroBatchSize);
        }
        data.check()?;
        Ok(Batcher {
            data,
            batch_size,
            seed,
            order: shuffled_order(data.len, seed, 0),
            pos: 0,
            buffers: Buffers::for_batches_of(data, batch_size),
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
        let end = self.order.len().min(self.pos.saturating_add(self.batch_size));
        let indices = self.order.get(self.pos..end).filter(|s| !s.is_empty())?;
        self.pos = end;
        Some(self.buffers.fill(self.data, indices.iter().copied()))
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

/// The batches of `data` in stored order (for evaluation), converted into one reused buffer.
///
/// Call [`InOrder::next_batch`] until it returns `None`. If `data.check()` fails or
/// `batch_size` is 0, there are no batches.
pub fn in_order(data: &Dataset, batch_size: usize) -> InOrder<'_> {
    let end = if batch_size > 0 && data.check().is_ok() { data.len } else { 0 };
    InOrder { data, batch_size, next: 0, end, buffers: Buffers::for_batches_of(data, batch_size) }
}

/// The batches of a dataset in stored order; made by [`in_order`].
#[derive(Debug)]
pub struct InOrder<'d> {
    data: &'d Dataset,
    batch_size: usize,
    /// The first example of the next batch.
    next: usize,
    /// One past the last example to hand out (0 for unusable data).
    end: usize,
    buffers: Buffers,
}

impl InOrder<'_> {
    /// The next batch, or `None` when every example has been handed out.
    ///
    /// The batch borrows this iterator's buffer, so it must be dropped before the next call.
    pub fn next_batch(&mut self) -> Option<Batch<'_>> {
        if self.next >= self.end {
            return None;
        }
        let start = self.next;
        self.next = self.end.min(start.saturating_add(self.batch_size));
        Some(self.buffers.fill(self.data, start..self.next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` (at most 256) 1x2 images whose pixel bytes are (i, 255 - i) and whose label is
    /// i % 3.
    fn data(len: usize) -> Dataset {
        let ids = 0..len as u8;
        let pixels = ids.clone().flat_map(|i| [i, 255 - i]).collect();
        Dataset::new(pixels, ids.map(|i| i % 3).collect(), 1, 2, 3).unwrap()
    }

    /// The example id of a converted batch example of `data`, checking its pixels and label.
    fn id_of(pair: &[f32], label: f32) -> usize {
        let i = (pair[0] * 255.0).round() as u8;
        assert_eq!(pair, [pixel_value(i), pixel_value(255 - i)], "pixels stay together");
        assert_eq!(label, f32::from(i % 3), "label follows its image");
        usize::from(i)
    }

    /// The example ids of a batch.
    fn ids(batch: &Batch<'_>) -> Vec<usize> {
        assert_eq!(batch.x.len(), batch.len * 2);
        assert_eq!(batch.labels.len(), batch.len);
        batch.x.chunks(2).zip(batch.labels).map(|(pair, &l)| id_of(pair, l)).collect()
    }

    /// Runs one epoch and returns (example ids seen, batch lengths).
    fn epoch(b: &mut Batcher<'_>) -> (Vec<usize>, Vec<usize>) {
        let (mut all, mut lens) = (vec![], vec![]);
        while let Some(batch) = b.next_batch() {
            all.extend(ids(&batch));
            lens.push(batch.len);
        }
        (all, lens)
    }

    /// Every batch of an in-order pass: (example ids, batch length).
    fn in_order_batches(d: &Dataset, batch_size: usize) -> Vec<(Vec<usize>, usize)> {
        let mut it = in_order(d, batch_size);
        let mut out = vec![];
        while let Some(batch) = it.next_batch() {
            out.push((ids(&batch), batch.len));
        }
        out
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
        assert!(in_order_batches(&d, 4).is_empty());
    }

    #[test]
    fn in_order_covers_the_data_in_order() {
        let d = data(7);
        let batches = in_order_batches(&d, 3);
        assert_eq!(batches, vec![(vec![0, 1, 2], 3), (vec![3, 4, 5], 3), (vec![6], 1)]);
        assert!(in_order_batches(&d, 0).is_empty());
        assert_eq!(in_order_batches(&d, usize::MAX), vec![((0..7).collect(), 7)]);
        let mut bad = data(7);
        bad.labels.pop();
        assert!(in_order_batches(&bad, 3).is_empty());
    }

    #[test]
    fn batches_hold_the_scaled_bytes() {
        let d = Dataset::new(vec![0, 51, 255, 102], vec![1, 0], 1, 2, 2).unwrap();
        let mut it = in_order(&d, 2);
        let batch = it.next_batch().unwrap();
        assert_eq!(batch.x, [0.0, 0.2, 1.0, 0.4]);
        assert_eq!(batch.labels, [1.0, 0.0]);
        let mut b = Batcher::new(&d, 2, 0).unwrap();
        let mut x = b.next_batch().unwrap().x.to_vec();
        x.sort_by(f32::total_cmp);
        assert_eq!(x, [0.0, 0.2, 0.4, 1.0]);
    }
}
