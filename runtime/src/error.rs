//! Errors from reading, writing and checking data files.

use std::io;
use std::path::PathBuf;

/// Something wrong with a data file or data directory. Every variant names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file does not exist.
    #[error("{}: file not found", path.display())]
    NotFound {
        /// The missing file.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The unreadable file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The file starts like gzip (1f 8b) but does not decompress.
    #[error("{}: bad gzip data: {source}", path.display())]
    Gzip {
        /// The corrupt file.
        path: PathBuf,
        /// The decompressor's error.
        source: io::Error,
    },
    /// The first two bytes are not zero, so this is not an IDX file.
    #[error(
        "{}: not an IDX file: magic bytes are {:02x} {:02x} {:02x} {:02x}, expected 00 00 <type> <ndims>",
        path.display(), found[0], found[1], found[2], found[3]
    )]
    BadMagic {
        /// The offending file.
        path: PathBuf,
        /// The four magic bytes found.
        found: [u8; 4],
    },
    /// The IDX element type is not unsigned byte (0x08).
    #[error("{}: unsupported IDX element type 0x{code:02x} (only 0x08, unsigned byte, is supported)", path.display())]
    UnsupportedType {
        /// The offending file.
        path: PathBuf,
        /// The type code found.
        code: u8,
    },
    /// The file ends before the header or the data is complete.
    #[error("{}: truncated {part}: expected {expected} bytes, found {found}", path.display())]
    Truncated {
        /// The short file.
        path: PathBuf,
        /// Which part is short: "header" or "data".
        part: &'static str,
        /// Bytes the header says there should be.
        expected: usize,
        /// Bytes actually present.
        found: usize,
    },
    /// Bytes follow the end of the data.
    #[error("{}: {extra} bytes of trailing garbage after the {expected} data bytes", path.display())]
    TrailingData {
        /// The offending file.
        path: PathBuf,
        /// Data bytes the header asks for.
        expected: usize,
        /// Bytes beyond them.
        extra: usize,
    },
    /// The dimensions multiply to more than fits in memory addresses.
    #[error("{}: dimensions {dims:?} are too large", path.display())]
    TooLarge {
        /// The offending file.
        path: PathBuf,
        /// The dimensions from the header.
        dims: Vec<usize>,
    },
    /// An array cannot be written as IDX (wrong element count, dimension too big, ...).
    #[error("{}: cannot write IDX array: {reason}", path.display())]
    InvalidArray {
        /// The file that was to be written.
        path: PathBuf,
        /// What is wrong with the array.
        reason: String,
    },
    /// The data directory does not exist.
    #[error("{}: data directory not found", path.display())]
    DirNotFound {
        /// The missing directory.
        path: PathBuf,
    },
    /// A file expected in the data directory is absent.
    #[error(
        "{}: missing {name} (or {name}.gz); a data directory must hold: {}",
        dir.display(), expected.join(", ")
    )]
    MissingFile {
        /// The data directory.
        dir: PathBuf,
        /// The missing file's name (without `.gz`).
        name: String,
        /// Every file name a data directory must hold.
        expected: Vec<String>,
    },
    /// The array has the wrong number of dimensions (images must be 3-D, labels 1-D).
    #[error("{}: expected {expected} array, found dimensions {found:?}", path.display())]
    WrongRank {
        /// The offending file.
        path: PathBuf,
        /// What was expected, e.g. "a 3-D images (count x rows x columns)".
        expected: &'static str,
        /// The dimensions found.
        found: Vec<usize>,
    },
    /// The images file and the labels file hold different numbers of items.
    #[error(
        "{} holds {images} images but {} holds {labels} labels",
        images_path.display(), labels_path.display()
    )]
    CountMismatch {
        /// The images file.
        images_path: PathBuf,
        /// The labels file.
        labels_path: PathBuf,
        /// Number of images.
        images: usize,
        /// Number of labels.
        labels: usize,
    },
    /// A label is not a valid class id.
    #[error("{}: label {label} at index {index} is out of range (must be < {classes})", path.display())]
    LabelOutOfRange {
        /// The labels file.
        path: PathBuf,
        /// Position of the bad label.
        index: usize,
        /// The bad label.
        label: u8,
        /// Number of classes.
        classes: usize,
    },
}
