//! In-memory image-classification datasets: loading from IDX files and the bundled MNIST subset.

mod bundled;
mod dir;

use std::path::Path;

use crate::error::DataError;
use crate::idx::IdxArray;

pub use bundled::{bundled, BUNDLED_TEST_LEN, BUNDLED_TRAIN_LEN};
pub use dir::{load_dir, FILE_NAMES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};

/// Number of classes in MNIST-style data (digits 0-9).
pub const MNIST_CLASSES: usize = 10;

/// A set of grey-scale images with one class label each, stored as the bytes of the files.
///
/// Pixels stay `u8` (a quarter of the memory of `f32`); batches convert them with
/// [`pixel_value`] as they are assembled.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Pixel bytes (0-255), row-major `len x height x width`.
    pub pixels: Vec<u8>,
    /// Class id of each image.
    pub labels: Vec<u8>,
    /// Number of images.
    pub len: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// Number of classes; every label is below this.
    pub classes: usize,
}

/// The value a model sees for a pixel byte: scaled to `[0, 1]` as `byte / 255`.
pub fn pixel_value(byte: u8) -> f32 {
    f32::from(byte) / 255.0
}

/// A training set and a test set, with a description of where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSplit {
    /// The examples to train on.
    pub train: Dataset,
    /// The held-out examples to evaluate on.
    pub test: Dataset,
    /// Human-readable origin, e.g. "bundled MNIST subset (5000 train / 1000 test)" or a directory.
    pub source: String,
}

/// A `Dataset` whose fields disagree with each other.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShapeError {
    /// `pixels.len()` is not `len * height * width`.
    #[error(
        "dataset has {found} pixel values but len x height x width = {len} x {height} x {width}"
    )]
    Images {
        /// Pixel values present.
        found: usize,
        /// Number of images claimed.
        len: usize,
        /// Rows per image.
        height: usize,
        /// Columns per image.
        width: usize,
    },
    /// `labels.len()` is not `len`.
    #[error("dataset has {found} labels for {len} images")]
    Labels {
        /// Labels present.
        found: usize,
        /// Number of images.
        len: usize,
    },
    /// A label is not below the number of classes.
    #[error("dataset label {label} at index {index} is not a class id below {classes}")]
    Label {
        /// Position of the bad label.
        index: usize,
        /// The bad label.
        label: u8,
        /// Number of classes.
        classes: usize,
    },
}

impl Dataset {
    /// A dataset of `labels.len()` images of `height x width` pixel bytes, checked with
    /// [`Dataset::check`].
    pub fn new(
        pixels: Vec<u8>,
        labels: Vec<u8>,
        height: usize,
        width: usize,
        classes: usize,
    ) -> Result<Self, ShapeError> {
        let data = Dataset { len: labels.len(), pixels, labels, height, width, classes };
        data.check()?;
        Ok(data)
    }

    /// Builds a dataset from a 3-D images array (`count x rows x columns`) and a 1-D labels array,
    /// taking over their storage (no copy).
    ///
    /// The paths only name the sources in errors. Fails if the ranks are wrong, the counts
    /// differ, or a label is not below `classes`.
    pub fn from_idx(
        images: IdxArray,
        images_path: &Path,
        labels: IdxArray,
        labels_path: &Path,
        classes: usize,
    ) -> Result<Self, DataError> {
        let &[len, height, width] = images.dims.as_slice() else {
            return Err(DataError::WrongRank {
                path: images_path.to_path_buf(),
                expected: "a 3-D images (count x rows x columns)",
                found: images.dims,
            });
        };
        let &[label_count] = labels.dims.as_slice() else {
            return Err(DataError::WrongRank {
                path: labels_path.to_path_buf(),
                expected: "a 1-D labels",
                found: labels.dims,
            });
        };
        if label_count != len {
            return Err(DataError::CountMismatch {
                images_path: images_path.to_path_buf(),
                labels_path: labels_path.to_path_buf(),
                images: len,
                labels: label_count,
            });
        }
        if let Some((index, &label)) =
            labels.data.iter().enumerate().find(|(_, &l)| usize::from(l) >= classes)
        {
            return Err(DataError::LabelOutOfRange {
                path: labels_path.to_path_buf(),
                index,
                label,
                classes,
            });
        }
        Ok(Dataset { pixels: images.data, labels: labels.data, len, height, width, classes })
    }

    /// Number of values in one example (`height * width`).
    pub fn example_len(&self) -> usize {
        self.height.saturating_mul(self.width)
    }

    /// True when the dataset holds no examples.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks that the fields agree: pixel and label counts match `len`, labels are class ids.
    pub fn check(&self) -> Result<(), ShapeError> {
        let expected = self.len.checked_mul(self.height).and_then(|n| n.checked_mul(self.width));
        if expected != Some(self.pixels.len()) {
            return Err(ShapeError::Images {
                found: self.pixels.len(),
                len: self.len,
                height: self.height,
                width: self.width,
            });
        }
        if self.labels.len() != self.len {
            return Err(ShapeError::Labels { found: self.labels.len(), len: self.len });
        }
        match self.labels.iter().position(|&l| usize::from(l) >= self.classes) {
            Some(index) => {
                Err(ShapeError::Label { index, label: self.labels[index], classes: self.classes })
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrays() -> (IdxArray, IdxArray) {
        let images = IdxArray { dims: vec![2, 1, 2], data: vec![0, 255, 51, 102] };
        let labels = IdxArray { dims: vec![2], data: vec![3, 9] };
        (images, labels)
    }

    fn build(images: &IdxArray, labels: &IdxArray) -> Result<Dataset, DataError> {
        Dataset::from_idx(images.clone(), Path::new("img"), labels.clone(), Path::new("lab"), 10)
    }

    #[test]
    fn keeps_pixel_bytes_and_labels() {
        let (images, labels) = arrays();
        let d = build(&images, &labels).unwrap();
        assert_eq!(d.pixels, images.data);
        assert_eq!(d.labels, vec![3, 9]);
        assert_eq!((d.len, d.height, d.width, d.classes), (2, 1, 2, 10));
        assert_eq!(d.example_len(), 2);
        d.check().unwrap();
    }

    #[test]
    fn rejects_label_ten() {
        let (images, mut labels) = arrays();
        labels.data[1] = 10;
        let err = build(&images, &labels).unwrap_err();
        assert!(matches!(err, DataError::LabelOutOfRange { index: 1, label: 10, .. }), "{err:?}");
        assert!(err.to_string().starts_with("lab: label 10 at index 1"), "{err}");
    }

    #[test]
    fn rejects_2d_images_and_2d_labels() {
        let (mut images, labels) = arrays();
        images.dims = vec![2, 2];
        let err = build(&images, &labels).unwrap_err();
        assert!(matches!(err, DataError::WrongRank { .. }), "{err:?}");
        assert!(err.to_string().contains("img: expected a 3-D images"), "{err}");

        let (images, mut labels) = arrays();
        labels.dims = vec![2, 1];
        let err = build(&images, &labels).unwrap_err();
        assert!(err.to_string().contains("lab: expected a 1-D labels"), "{err}");
    }

    #[test]
    fn rejects_count_mismatch() {
        let (images, mut labels) = arrays();
        labels.dims = vec![3];
        labels.data.push(1);
        let err = build(&images, &labels).unwrap_err();
        assert!(matches!(err, DataError::CountMismatch { images: 2, labels: 3, .. }), "{err:?}");
    }

    #[test]
    fn check_finds_inconsistencies() {
        let (images, labels) = arrays();
        let good = build(&images, &labels).unwrap();

        let mut d = good.clone();
        d.pixels.pop();
        assert!(matches!(d.check(), Err(ShapeError::Images { found: 3, .. })));

        let mut d = good.clone();
        d.labels.push(0);
        assert!(matches!(d.check(), Err(ShapeError::Labels { found: 3, len: 2 })));

        for bad in [10, 255] {
            let mut d = good.clone();
            d.labels[0] = bad;
            assert!(
                matches!(d.check(), Err(ShapeError::Label { index: 0, .. })),
                "label {bad} accepted"
            );
        }
    }

    #[test]
    fn pixel_values_are_bytes_over_255() {
        assert_eq!([0, 51, 102, 255].map(pixel_value), [0.0, 0.2, 0.4, 1.0]);
        assert!((0..=255).map(pixel_value).all(|v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn new_counts_the_labels_and_checks() {
        let d = Dataset::new(vec![1, 2, 3, 4, 5, 6], vec![0, 2], 1, 3, 3).unwrap();
        assert_eq!((d.len, d.example_len()), (2, 3));
        let err = Dataset::new(vec![1, 2, 3], vec![0, 2], 1, 3, 3).unwrap_err();
        assert!(matches!(err, ShapeError::Images { found: 3, len: 2, .. }), "{err:?}");
        let err = Dataset::new(vec![1, 2, 3], vec![3], 1, 3, 3).unwrap_err();
        assert!(matches!(err, ShapeError::Label { index: 0, label: 3, classes: 3 }), "{err:?}");
    }
}
