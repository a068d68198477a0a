//! Reading and writing IDX files (the MNIST format), raw or gzip-compressed.
//!
//! An IDX file is big-endian: two zero bytes, a type code (only 0x08, unsigned byte, is
//! supported here), the number of dimensions, one `u32` per dimension, then the data in
//! row-major order. Compression is detected by the gzip magic bytes `1f 8b`, not by name.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::error::DataError;

/// The IDX type code for unsigned bytes, the only element type supported.
pub const TYPE_U8: u8 = 0x08;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Deflate expands its input at most about 1032-fold: a bound on the decompressed size of a
/// gzip stream, so a lying header cannot make the reader reserve more than the data can fill.
const MAX_GZIP_RATIO: u64 = 1032;

/// An n-dimensional array of bytes read from an IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Size of each dimension, outermost first.
    pub dims: Vec<usize>,
    /// The elements in row-major order; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// Reads an IDX file, decompressing it first if it starts with the gzip magic bytes.
///
/// The file is streamed: only the decoded array is held in memory, never the whole
/// (compressed or raw) file besides it.
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let open_err = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => DataError::NotFound { path: path.to_path_buf() },
        _ => DataError::Read { path: path.to_path_buf(), source },
    };
    let file = fs::File::open(path).map_err(open_err)?;
    let size = file.metadata().map_err(open_err)?.len();
    decode(BufReader::new(file), size, path)
}

/// Parses IDX bytes (raw or gzip-compressed); `path` is only used to name the source in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    decode(bytes, bytes.len() as u64, path)
}

/// Writes `data` with dimensions `dims` as a gzip-compressed IDX file of unsigned bytes.
pub fn write_idx_gz(path: &Path, dims: &[usize], data: &[u8]) -> Result<(), DataError> {
    let raw = encode_idx(dims, data)
        .map_err(|reason| DataError::InvalidArray { path: path.to_path_buf(), reason })?;
    let write_err = |source| DataError::Write { path: path.to_path_buf(), source };
    let file = fs::File::create(path).map_err(write_err)?;
    let mut encoder = GzEncoder::new(io::BufWriter::new(file), Compression::best());
    encoder.write_all(&raw).map_err(write_err)?;
    encoder.finish().and_then(|mut w| w.flush()).map_err(write_err)
}

/// Encodes an uncompressed IDX file of unsigned bytes; the error says what is wrong.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Result<Vec<u8>, String> {
    let ndims = u8::try_from(dims.len())
        .map_err(|_| format!("{} dimensions (at most 255 allowed)", dims.len()))?;
    let count = element_count(dims).ok_or_else(|| format!("dimensions {dims:?} are too large"))?;
    if count != data.len() {
        return Err(format!(
            "dimensions {dims:?} need {count} elements but {} were given",
            data.len()
        ));
    }
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, TYPE_U8, ndims]);
    for &d in dims {
        let d = u32::try_from(d).map_err(|_| format!("dimension {d} does not fit in a u32"))?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

fn element_count(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Decodes an IDX stream of `size` bytes, gunzipping it if it starts with the gzip magic.
fn decode(mut input: impl BufRead, size: u64, path: &Path) -> Result<IdxArray, DataError> {
    let read_err = |source| DataError::Read { path: path.to_path_buf(), source };
    let mut head = [0u8; 2];
    let n = read_up_to(&mut input, &mut head).map_err(read_err)?;
    let input = (&head[..n]).chain(input);
    if head[..n] == GZIP_MAGIC {
        let gzip_err = |source| DataError::Gzip { path: path.to_path_buf(), source };
        let bound = size.saturating_mul(MAX_GZIP_RATIO);
        parse_stream(MultiGzDecoder::new(input), bound, path, gzip_err)
    } else {
        parse_stream(input, size, path, read_err)
    }
}

/// Parses an uncompressed IDX stream. `size_bound` caps the memory reserved up front (a
/// header may claim any size); `io_err` wraps the stream's read errors.
fn parse_stream(
    mut input: impl Read,
    size_bound: u64,
    path: &Path,
    io_err: impl Fn(io::Error) -> DataError,
) -> Result<IdxArray, DataError> {
    let truncated = |part, expected, found| DataError::Truncated {
        path: path.to_path_buf(),
        part,
        expected,
        found,
    };
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut input, &mut magic).map_err(&io_err)?;
    if n < magic.len() {
        return Err(truncated("header", magic.len(), n));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(DataError::BadMagic { path: path.to_path_buf(), found: magic });
    }
    if magic[2] != TYPE_U8 {
        return Err(DataError::UnsupportedType { path: path.to_path_buf(), code: magic[2] });
    }
    let mut header = vec![0u8; 4 * usize::from(magic[3])];
    let n = read_up_to(&mut input, &mut header).map_err(&io_err)?;
    if n < header.len() {
        return Err(truncated("header", 4 + header.len(), 4 + n));
    }
    let dims: Vec<usize> = header
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = element_count(&dims)
        .ok_or_else(|| DataError::TooLarge { path: path.to_path_buf(), dims: dims.clone() })?;

    let reserve = usize::try_from(size_bound).map_or(count, |bound| count.min(bound));
    let mut data = Vec::with_capacity(reserve);
    (&mut input).take(count as u64).read_to_end(&mut data).map_err(&io_err)?;
    if data.len() < count {
        return Err(truncated("data", count, data.len()));
    }
    // Read to the end: counts trailing bytes and lets the gzip decoder verify its checksum.
    let extra = io::copy(&mut input, &mut io::sink()).map_err(&io_err)?;
    if extra > 0 {
        return Err(DataError::TrailingData {
            path: path.to_path_buf(),
            expected: count,
            extra: usize::try_from(extra).unwrap_or(usize::MAX),
        });
    }
    Ok(IdxArray { dims, data })
}

/// Reads until `buf` is full or the stream ends; returns the number of bytes read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IdxArray {
        IdxArray { dims: vec![2, 3, 4], data: (0..24).collect() }
    }

    fn raw(a: &IdxArray) -> Vec<u8> {
        encode_idx(&a.dims, &a.data).unwrap()
    }

    fn p() -> &'static Path {
        Path::new("test.idx")
    }

    #[test]
    fn gz_roundtrip_through_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.gz");
        let a = sample();
        write_idx_gz(&path, &a.dims, &a.data).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[..2], &GZIP_MAGIC, "writer must gzip");
        assert_eq!(read_idx(&path).unwrap(), a);
    }

    #[test]
    fn reads_raw_file_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("misleading.gz");
        fs::write(&path, raw(&sample())).unwrap();
        assert_eq!(read_idx(&path).unwrap(), sample());
    }

    #[test]
    fn header_layout_is_big_endian() {
        let bytes = encode_idx(&[258, 1], &[7; 258]).unwrap();
        assert_eq!(&bytes[..12], &[0, 0, 8, 2, 0, 0, 1, 2, 0, 0, 0, 1]);
        let a = parse_idx(&bytes, p()).unwrap();
        assert_eq!(a.dims, vec![258, 1]);
    }

    #[test]
    fn missing_file_is_not_found_and_named() {
        let err = read_idx(Path::new("/no/such/dir/x-idx1-ubyte")).unwrap_err();
        assert!(matches!(err, DataError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("/no/such/dir/x-idx1-ubyte"));
    }

    #[test]
    fn bad_gzip_is_reported() {
        let err = parse_idx(&[0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9], p()).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
        assert!(err.to_string().contains("test.idx: bad gzip"), "{err}");
    }

    #[test]
    fn truncated_gzip_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.gz");
        let a = sample();
        write_idx_gz(&path, &a.dims, &a.data).unwrap();
        let bytes = fs::read(&path).unwrap();
        let err = parse_idx(&bytes[..bytes.len() - 10], p()).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
    }

    #[test]
    fn bad_magic() {
        let mut bytes = raw(&sample());
        bytes[0] = 0x50;
        let err = parse_idx(&bytes, p()).unwrap_err();
        assert!(matches!(err, DataError::BadMagic { .. }), "{err:?}");
        assert!(err.to_string().contains("50 00 08 03"), "{err}");
    }

    #[test]
    fn unsupported_type() {
        let mut bytes = raw(&sample());
        bytes[2] = 0x0d; // float
        let err = parse_idx(&bytes, p()).unwrap_err();
        assert!(matches!(err, DataError::UnsupportedType { code: 0x0d, .. }), "{err:?}");
        assert!(err.to_string().contains("0x0d"), "{err}");
    }

    #[test]
    fn truncated_data() {
        let bytes = raw(&sample());
        let err = parse_idx(&bytes[..bytes.len() - 5], p()).unwrap_err();
        assert!(
            matches!(err, DataError::Truncated { part: "data", expected: 24, found: 19, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("expected 24 bytes, found 19"), "{err}");
    }

    #[test]
    fn truncated_header() {
        let bytes = raw(&sample());
        for len in [0, 3, 4, 9, 15] {
            let err = parse_idx(&bytes[..len], p()).unwrap_err();
            assert!(matches!(err, DataError::Truncated { part: "header", .. }), "{len}: {err:?}");
        }
    }

    #[test]
    fn trailing_garbage() {
        let mut bytes = raw(&sample());
        bytes.extend_from_slice(&[1, 2, 3]);
        let err = parse_idx(&bytes, p()).unwrap_err();
        assert!(matches!(err, DataError::TrailingData { expected: 24, extra: 3, .. }), "{err:?}");
    }

    #[test]
    fn huge_dims_are_an_error_not_an_allocation() {
        let bytes =
            [0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1];
        let err = parse_idx(&bytes, p()).unwrap_err();
        assert!(matches!(err, DataError::TooLarge { .. } | DataError::Truncated { .. }), "{err:?}");
    }

    /// Gzips `bytes` in memory.
    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_errors_match_the_raw_ones() {
        let mut bytes = raw(&sample());
        bytes.extend_from_slice(&[1, 2, 3]);
        let err = parse_idx(&gz(&bytes), p()).unwrap_err();
        assert!(matches!(err, DataError::TrailingData { expected: 24, extra: 3, .. }), "{err:?}");
        let err = parse_idx(&gz(&bytes[..20]), p()).unwrap_err();
        assert!(matches!(err, DataError::Truncated { part: "data", found: 4, .. }), "{err:?}");
        let err = parse_idx(&gz(&bytes[..6]), p()).unwrap_err();
        assert!(matches!(err, DataError::Truncated { part: "header", found: 6, .. }), "{err:?}");
    }

    #[test]
    fn huge_dims_in_a_small_gzip_are_truncated_not_allocated() {
        let bytes = [0, 0, 8, 2, 0x7f, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 1, 2];
        let err = parse_idx(&gz(&bytes), p()).unwrap_err();
        assert!(matches!(err, DataError::Truncated { part: "data", found: 2, .. }), "{err:?}");
    }

    #[test]
    fn multi_member_gzip_is_read_whole() {
        let bytes = raw(&sample());
        let (a, b) = bytes.split_at(10);
        let joined = [gz(a), gz(b)].concat();
        assert_eq!(parse_idx(&joined, p()).unwrap(), sample());
    }

    #[test]
    fn writer_rejects_mismatched_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.gz");
        let err = write_idx_gz(&path, &[2, 2], &[1, 2, 3]).unwrap_err();
        assert!(matches!(err, DataError::InvalidArray { .. }), "{err:?}");
        assert!(err.to_string().contains("need 4 elements but 3"), "{err}");
    }

    #[test]
    fn writer_reports_unwritable_path() {
        let err = write_idx_gz(Path::new("/no/such/dir/out.gz"), &[1], &[0]).unwrap_err();
        assert!(matches!(err, DataError::Write { .. }), "{err:?}");
    }
}
