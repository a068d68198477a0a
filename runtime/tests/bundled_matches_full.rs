//! The bundled subset must be exactly the first items of the full MNIST set.

use std::path::Path;

use kiln_runtime::dataset::{BUNDLED_TEST_LEN, BUNDLED_TRAIN_LEN};
use kiln_runtime::{bundled, load_dir};

const FULL_MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/mnist");

#[test]
fn bundled_is_the_first_items_of_full_mnist() {
    let dir = Path::new(FULL_MNIST);
    if !dir.is_dir() {
        println!("note: {FULL_MNIST} not present, skipping the comparison with full MNIST");
        return;
    }
    let full = load_dir(dir).unwrap();
    let small = bundled().unwrap();
    assert_eq!(full.train.len, 60_000);
    assert_eq!(full.test.len, 10_000);

    assert_eq!(small.train.labels, full.train.labels[..BUNDLED_TRAIN_LEN]);
    assert_eq!(small.test.labels, full.test.labels[..BUNDLED_TEST_LEN]);
    let px = 28 * 28;
    assert!(small.train.pixels == full.train.pixels[..BUNDLED_TRAIN_LEN * px]);
    assert!(small.test.pixels == full.test.pixels[..BUNDLED_TEST_LEN * px]);
}
