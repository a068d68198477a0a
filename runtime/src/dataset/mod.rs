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

/// A set of grey-scale images with one class label each.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Pixels scaled to `[0, 1]` (byte / 255), row-major `len x height x width`.
    pub images: Vec<f32>,
    /// Class id of each image, as `f32`.
    pub labels: Vec<f32>,
    /// Number of images.
    pub len: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// Number of classes; every label is below this.
    pub classes: usize,
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
    /// `images.len()` is not `len * height * width`.
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
    /// A label is not an integer in `0..classes`.
    #[error("dataset label {label} at index {index} is not a class id below {classes}")]
    Label {
        /// Position of the bad label.
        index: usize,
        /// The bad label.
        label: f32,
        /// Number of classes.
        classes: usize,
    },
}

impl Dataset {
    /// Builds a dataset from a 3-D images array (`count x rows x columns`) and a 1-D labels array.
    ///
    /// The paths only name the sources in errors. Fails if the ranks are wrong, the counts
    /// differ, or a label is not below `classes`.
    pub fn from_idx(
        images: &IdxArray,
        images_path: &Path,
        labels: &IdxArray,
        labels_path: &Path,
        classes: usize,
    ) -> Result<Self, DataError> {
        let &[len, height, width] = images.dims.as_slice() else {
            return Err(DataError::WrongRank {
                path: images_path.to_path_buf(),
                expected: "a 3-D images (count x rows x columns)",
                found: images.dims.clone(),
            });
        };
        let &[label_count] = labels.dims.as_slice() else {
            return Err(DataError::WrongRank {
                path: labels_path.to_path_buf(),
                expected: "a 1-D labels",
                found: labels.dims.clone(),
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
        Ok(Dataset {
            images: images.data.iter().map(|&b| f32::from(b) / 255.0).collect(),
            labels: labels.data.iter().map(|&l| f32::from(l)).collect(),
            len,
            height,
            width,
            classes,
        })
    }

    /// Number of `f32` values in one example (`height * width`).
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
        if expected != Some(self.images.len()) {
            return Err(ShapeError::Images {
                found: self.images.len(),
                len: self.len,
                height: self.height,
                width: self.width,
            });
        }
        if self.labels.len() != self.len {
            return Err(ShapeError::Labels { found: self.labels.len(), len: self.len });
        }
        let is_class = |l: f32| l >= 0.0 && l.fract() == 0.0 && (l as usize) < self.classes;
        match self.labels.iter().position(|&l| !is_class(l)) {
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
        Dataset::from_idx(images, Path::new("img"), labels, Path::new("lab"), 10)
    }

    #[test]
    fn scales_pixels_and_keeps_labels() {
        let (images, labels) = arrays();
        let d = build(&images, &labels).unwrap();
        assert_eq!(d.images, vec![0.0, 1.0, 0.2, 0.4]);
        assert_eq!(d.labels, vec![3.0, 9.0]);
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
        d.images.pop();
        assert!(matches!(d.check(), Err(ShapeError::Images { found: 3, .. })));

        let mut d = good.clone();
        d.labels.push(0.0);
        assert!(matches!(d.check(), Err(ShapeError::Labels { found: 3, len: 2 })));

        for bad in [-1.0, 0.5, 10.0, f32::NAN] {
            let mut d = good.clone();
            d.labels[0] = bad;
            assert!(
                matches!(d.check(), Err(ShapeError::Label { index: 0, .. })),
                "label {bad} accepted"
            );
        }
    }
}
