//! Loading a train/test split from a directory of MNIST-style IDX files.

use std::path::{Path, PathBuf};

use super::{DataSplit, Dataset, MNIST_CLASSES};
use crate::error::DataError;
use crate::idx::read_idx;

/// File name of the training images (optionally with `.gz`).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// File name of the training labels (optionally with `.gz`).
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// File name of the test images (optionally with `.gz`).
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// File name of the test labels (optionally with `.gz`).
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";
/// The four files a data directory must hold, each with or without `.gz`.
pub const FILE_NAMES: [&str; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

/// Loads the MNIST-style split in `dir` (the four [`FILE_NAMES`], each raw or gzipped).
///
/// When both `NAME.gz` and `NAME` exist, `NAME.gz` is read. Labels must be below 10.
pub fn load_dir(dir: &Path) -> Result<DataSplit, DataError> {
    if !dir.is_dir() {
        return Err(DataError::DirNotFound { path: dir.to_path_buf() });
    }
    let train = load_pair(dir, TRAIN_IMAGES, TRAIN_LABELS)?;
    let test = load_pair(dir, TEST_IMAGES, TEST_LABELS)?;
    Ok(DataSplit { train, test, source: dir.display().to_string() })
}

fn load_pair(dir: &Path, images_name: &str, labels_name: &str) -> Result<Dataset, DataError> {
    let images_path = find(dir, images_name)?;
    let labels_path = find(dir, labels_name)?;
    let images = read_idx(&images_path)?;
    let labels = read_idx(&labels_path)?;
    Dataset::from_idx(images, &images_path, labels, &labels_path, MNIST_CLASSES)
}

fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    [format!("{name}.gz"), name.to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::MissingFile {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            expected: FILE_NAMES.iter().map(|n| format!("{n}[.gz]")).collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::{encode_idx, write_idx_gz};

    /// Writes a tiny valid split: 3 train and 2 test images of 2x2; the test files uncompressed.
    fn write_split(dir: &Path) {
        let train_px: Vec<u8> = (0..12).map(|i| i * 20).collect();
        write_idx_gz(&dir.join("train-images-idx3-ubyte.gz"), &[3, 2, 2], &train_px).unwrap();
        write_idx_gz(&dir.join("train-labels-idx1-ubyte.gz"), &[3], &[0, 5, 9]).unwrap();
        let test_px = encode_idx(&[2, 2, 2], &[255; 8]).unwrap();
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), test_px).unwrap();
        let test_lab = encode_idx(&[2], &[1, 2]).unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), test_lab).unwrap();
    }

    #[test]
    fn loads_gz_and_raw_files() {
        let tmp = tempfile::tempdir().unwrap();
        write_split(tmp.path());
        let split = load_dir(tmp.path()).unwrap();
        assert_eq!(split.train.len, 3);
        assert_eq!((split.train.height, split.train.width), (2, 2));
        assert_eq!(split.train.labels, vec![0, 5, 9]);
        assert_eq!(split.train.pixels[1], 20);
        assert_eq!(split.test.len, 2);
        assert_eq!(split.test.pixels, vec![255; 8]);
        assert_eq!(split.test.labels, vec![1, 2]);
        assert_eq!(split.source, tmp.path().display().to_string());
        split.train.check().unwrap();
        split.test.check().unwrap();
    }

    #[test]
    fn missing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nope");
        let err = load_dir(&dir).unwrap_err();
        assert!(matches!(err, DataError::DirNotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("nope: data directory not found"), "{err}");
    }

    #[test]
    fn missing_file_is_named_with_the_expected_list() {
        let tmp = tempfile::tempdir().unwrap();
        write_split(tmp.path());
        std::fs::remove_file(tmp.path().join("t10k-labels-idx1-ubyte")).unwrap();
        let err = load_dir(tmp.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::MissingFile { .. }), "{err:?}");
        assert!(
            msg.contains("missing t10k-labels-idx1-ubyte (or t10k-labels-idx1-ubyte.gz)"),
            "{msg}"
        );
        for name in FILE_NAMES {
            assert!(msg.contains(&format!("{name}[.gz]")), "{msg}");
        }
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let tmp = tempfile::tempdir().unwrap();
        write_split(tmp.path());
        write_idx_gz(&tmp.path().join("train-labels-idx1-ubyte.gz"), &[2], &[0, 1]).unwrap();
        let err = load_dir(tmp.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("train-images-idx3-ubyte.gz holds 3 images"), "{msg}");
        assert!(msg.contains("train-labels-idx1-ubyte.gz holds 2 labels"), "{msg}");
    }

    #[test]
    fn label_out_of_range() {
        let tmp = tempfile::tempdir().unwrap();
        write_split(tmp.path());
        write_idx_gz(&tmp.path().join("train-labels-idx1-ubyte.gz"), &[3], &[0, 10, 1]).unwrap();
        let err = load_dir(tmp.path()).unwrap_err();
        assert!(
            matches!(err, DataError::LabelOutOfRange { index: 1, label: 10, classes: 10, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn images_must_be_3d() {
        let tmp = tempfile::tempdir().unwrap();
        write_split(tmp.path());
        write_idx_gz(&tmp.path().join("train-images-idx3-ubyte.gz"), &[3, 4], &[0; 12]).unwrap();
        let err = load_dir(tmp.path()).unwrap_err();
        assert!(matches!(err, DataError::WrongRank { .. }), "{err:?}");
        assert!(err.to_string().contains("train-images-idx3-ubyte.gz: expected a 3-D"), "{err}");
    }

    #[test]
    fn corrupt_file_error_propagates_with_path() {
        let tmp = tempfile::tempdir().unwrap();
        write_split(tmp.path());
        std::fs::write(tmp.path().join("t10k-images-idx3-ubyte"), [0, 0, 8, 3, 0]).unwrap();
        let err = load_dir(tmp.path()).unwrap_err();
        assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
        assert!(err.to_string().contains("t10k-images-idx3-ubyte: truncated header"), "{err}");
    }
}
