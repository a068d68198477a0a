//! The small MNIST subset compiled into the binary, so training works with no download.

use std::path::PathBuf;

use super::{DataSplit, Dataset, MNIST_CLASSES};
use crate::error::DataError;
use crate::idx::parse_idx;

/// Number of training examples in the bundled subset (the first of MNIST's training set).
pub const BUNDLED_TRAIN_LEN: usize = 5000;
/// Number of test examples in the bundled subset (the first of MNIST's test set).
pub const BUNDLED_TEST_LEN: usize = 1000;

macro_rules! data_file {
    ($name:literal) => {
        ($name, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist-small/", $name)))
    };
}

const TRAIN_IMAGES: (&str, &[u8]) = data_file!("train-images-idx3-ubyte.gz");
const TRAIN_LABELS: (&str, &[u8]) = data_file!("train-labels-idx1-ubyte.gz");
const TEST_IMAGES: (&str, &[u8]) = data_file!("t10k-images-idx3-ubyte.gz");
const TEST_LABELS: (&str, &[u8]) = data_file!("t10k-labels-idx1-ubyte.gz");

/// The bundled MNIST subset: the first 5,000 training and first 1,000 test images.
///
/// The files are embedded in the binary; errors are only possible if they were corrupted
/// at build time, and then name `<bundled>/FILE`.
pub fn bundled() -> Result<DataSplit, DataError> {
    let train = decode(TRAIN_IMAGES, TRAIN_LABELS)?;
    let test = decode(TEST_IMAGES, TEST_LABELS)?;
    let source = format!("bundled MNIST subset ({} train / {} test)", train.len, test.len);
    Ok(DataSplit { train, test, source })
}

fn decode(images: (&str, &[u8]), labels: (&str, &[u8])) -> Result<Dataset, DataError> {
    let images_path = bundled_path(images.0);
    let labels_path = bundled_path(labels.0);
    let image_array = parse_idx(images.1, &images_path)?;
    let label_array = parse_idx(labels.1, &labels_path)?;
    Dataset::from_idx(image_array, &images_path, label_array, &labels_path, MNIST_CLASSES)
}

fn bundled_path(name: &str) -> PathBuf {
    PathBuf::from("<bundled>").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_split_has_the_documented_shape() {
        let split = bundled().unwrap();
        assert_eq!(split.source, "bundled MNIST subset (5000 train / 1000 test)");
        for (d, n) in [(&split.train, BUNDLED_TRAIN_LEN), (&split.test, BUNDLED_TEST_LEN)] {
            assert_eq!(d.len, n);
            assert_eq!((d.height, d.width, d.classes), (28, 28, 10));
            d.check().unwrap();
            assert!(d.pixels.contains(&255), "full-intensity pixels survive");
            let mut seen = [false; 10];
            d.labels.iter().for_each(|&l| seen[usize::from(l)] = true);
            assert!(seen.iter().all(|&s| s), "every digit appears");
        }
    }

    #[test]
    fn bundled_starts_like_mnist() {
        // Well-known first labels of MNIST: train 5 0 4 1 9 2 1 3 1 4, test 7 2 1 0 4 1 4 9 5 9.
        let split = bundled().unwrap();
        assert_eq!(split.train.labels[..10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
        assert_eq!(split.test.labels[..10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    }
}
