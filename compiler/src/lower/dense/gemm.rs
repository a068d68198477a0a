//! `C[M,N] = A[M,K] · B[K,N]` as register tiles, and the transposing copy that packs operands.
//!
//! Micro-kernel: a 4x8 block of `C` lives in 8 f32x4 accumulators (`acc[2r + c]`, rows `r`,
//! halves `c`). Each k-step loads the two vectors `B[k, j..j+8]` into registers `b4[0..2]`,
//! then `acc[2r + c] = fma(splat(A[i+r, k]), b4[c], acc[2r + c])`: every `splat(load)` has one
//! use, so it becomes one `vbroadcastss` from memory (keeping the splat in a register used by two
//! fmas costs a separate load, broadcast and register copy instead). The k loop steps by [`KU`]
//! with its k-steps unrolled inside, then the remaining k-steps are unrolled. The last `N % 8` columns use a 4-wide tile (`acc4`) and scalar
//! accumulators (`acc1`); the last `M % 4` rows go to further kernels with the same tiles.
//!
//! How `K` is run ([`Plan`]):
//! - short `K`: each tile runs all of it; the kernel is parallel over blocks of 4 rows;
//! - long `K`: tiles run blocks of at most [`KC_MAX`] k-steps; the first block starts the
//!   accumulators at zero, later ones reload them from `C` (an f32 store and reload is exact,
//!   so the result is bit-identical to one long chain). Work items are groups of row blocks
//!   (when `B` is large), so each block of `B` is read once per group rather than per 4 rows;
//! - long `K` and few rows: `K` is split into [`SPLIT`] chunks, computed in parallel into
//!   partial products in the scratch; the final tiles (`.sum` kernels) start from their sum
//!   (`P0 + P1 + ...`, in order) and run the k-steps left after the chunks.
//!
//! Each output element is thus summed in an order fixed at lowering time, whatever the threads.

use kiln_ir::ops::MatMul;
use kiln_ir::Shape;

use super::{affine, declare, looped, parallel_kernel, scale, splat_if, zero};
use crate::kernel::{Binary, BufId, Buffer, Expr, Index, Kernel, LoopKind, Stmt};

/// The largest block of `K` a tile runs at a time.
const KC_MAX: usize = 256;
/// k-steps unrolled in the k loop.
pub(super) const KU: usize = 4;
/// Rows of a tile.
const MR: usize = 4;
/// Target number of work items of a long-`K` product (row groups).
const ITEMS: usize = 8;
/// Number of `K` chunks of a split product.
pub(super) const SPLIT: usize = 8;
/// Long-`K` products with more elements of `B` than this group row blocks into work items.
const GROUP_B: usize = 32 * 1024;

/// A matrix in a buffer: element `(r, c)` is at `r * row + c * col`.
#[derive(Clone, Debug)]
pub(super) struct View {
    pub buf: Buffer,
    pub row: usize,
    pub col: usize,
}

impl View {
    /// A row-major matrix with `cols` columns.
    pub fn rows(buf: &Buffer, cols: usize) -> Self {
        View { buf: buf.clone(), row: cols, col: 1 }
    }

    /// The transpose of a row-major matrix with `cols` columns (a column-major view).
    pub fn transposed(buf: &Buffer, cols: usize) -> Self {
        View { buf: buf.clone(), row: 1, col: cols }
    }

    fn at(&self, r: &Index, c: &Index) -> Index {
        affine(&[(r, self.row), (c, self.col)], 0)
    }
}

/// One matrix product `C = A · B` with `B` and `C` contiguous along their rows.
pub(super) struct Gemm {
    /// Kernel name prefix.
    pub name: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: View,
    pub b: View,
    pub c: View,
    /// Scratch for the partial products of a split `K` ([`partials_len`] elements).
    pub partials: Option<Buffer>,
}

/// The buffers of a GEMM kernel (`p`: the partial products, when `K` is split).
#[derive(Clone, Copy)]
struct Ids {
    a: BufId,
    b: BufId,
    c: BufId,
    p: Option<BufId>,
}

/// How a tile's accumulators start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Init {
    /// At zero.
    Zero,
    /// From the tile's output (a later block of `K`).
    Load,
    /// As the sum of the [`SPLIT`] partial products, in order.
    Partials,
}

/// The k-steps `start..start + len` of a tile.
#[derive(Clone, Debug)]
struct KRange {
    start: Index,
    len: usize,
    init: Init,
}

/// Where a tile writes: element `(r, c)` at `offset + r * n + c` of `buf`.
#[derive(Clone, Debug)]
struct Out {
    buf: BufId,
    offset: Index,
}

/// The columns of a region of `C`.
#[derive(Clone, Debug)]
enum Cols {
    /// All of them.
    All,
    /// The 8 columns from `j`.
    Tile(Index),
    /// The last `N % 8`.
    Tail,
}

/// A region of `C`: `blocks` consecutive blocks of `rows` rows from row `i`, columns `cols`.
#[derive(Clone, Debug)]
struct Region {
    i: Index,
    rows: usize,
    blocks: usize,
    cols: Cols,
}

/// How a product is run (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Blocks of `kc` k-steps (all of `K` when `kc >= K`); work items of `group` row blocks.
    Blocked { kc: usize, group: usize },
    /// [`SPLIT`] chunks of `chunk` k-steps (each in blocks of `kc`), then the rest.
    Split { kc: usize, chunk: usize },
}

fn plan(m: usize, n: usize, k: usize) -> Plan {
    if k <= 2 * KC_MAX {
        return Plan::Blocked { kc: k.max(1), group: 1 };
    }
    // The fewest blocks of at most KC_MAX, rounded up to KU.
    let block_size = |len: usize| len.div_ceil(len.div_ceil(KC_MAX)).div_ceil(KU) * KU;
    let blocks = m / MR;
    if blocks >= ITEMS || k < SPLIT * KC_MAX {
        let group = if k * n > GROUP_B { blocks.div_ceil(ITEMS).max(1) } else { 1 };
        return Plan::Blocked { kc: block_size(k), group };
    }
    let chunk = k / SPLIT / KU * KU;
    Plan::Split { kc: block_size(chunk), chunk }
}

/// Scratch for the partial products of an `m x n x k` product (0 unless `K` is split).
pub(super) fn partials_len(m: usize, n: usize, k: usize) -> usize {
    match plan(m, n, k) {
        Plan::Split { .. } => SPLIT * m * n,
        Plan::Blocked { .. } => 0,
    }
}

/// Scratch of a matmul: the packed `B` when it is transposed, then the partial products.
pub(super) fn scratch_len(op: &MatMul, a: &Shape, b: &Shape) -> usize {
    let (m, k) = if op.transpose_a { (a.dim(1), a.dim(0)) } else { (a.dim(0), a.dim(1)) };
    let n = if op.transpose_b { b.dim(0) } else { b.dim(1) };
    let packed = if op.transpose_b { b.numel() } else { 0 };
    packed + partials_len(m, n, k)
}

/// The kernels of a matmul node.
pub(super) fn lower_matmul(
    name: &str,
    op: &MatMul,
    a: &Shape,
    b: &Shape,
    bufs: &[Buffer],
    out: &Buffer,
    part: impl Fn(&str, usize, usize) -> Buffer,
) -> Vec<Kernel> {
    let (m, k) = if op.transpose_a { (a.dim(1), a.dim(0)) } else { (a.dim(0), a.dim(1)) };
    let n = if op.transpose_b { b.dim(0) } else { b.dim(1) };
    let av = if op.transpose_a { View::transposed(&bufs[0], m) } else { View::rows(&bufs[0], k) };
    let mut kernels = Vec::new();
    let packed_len = if op.transpose_b { k * n } else { 0 };
    let bv = if op.transpose_b {
        let packed = part("packed_b", 0, packed_len);
        kernels.extend(transpose(format!("{name}.pack_b"), &bufs[1], n, k, &packed));
        View::rows(&packed, n)
    } else {
        View::rows(&bufs[1], n)
    };
    let plen = partials_len(m, n, k);
    let partials = (plen > 0).then(|| part("partials", packed_len, plen));
    let g = Gemm { name: name.to_string(), m, n, k, a: av, b: bv, c: View::rows(out, n), partials };
    kernels.extend(g.kernels());
    kernels
}

/// `dst = srcᵀ` for a row-major `src` of `rows x cols`: `dst[j, i] = src[i, j]`, parallel over
/// the rows of `dst` (each work item writes one contiguous row). None when empty.
pub(super) fn transpose(
    name: String,
    src: &Buffer,
    rows: usize,
    cols: usize,
    dst: &Buffer,
) -> Option<Kernel> {
    if rows == 0 || cols == 0 {
        return None;
    }
    Some(parallel_kernel(name, &[src, dst], cols, 1, |k, ids, j| {
        looped(k, rows, 1, LoopKind::Serial, |_, i| {
            let value = Expr::load(ids[0], affine(&[(&i, cols), (&j, 1)], 0), 1);
            vec![Stmt::Store { buf: ids[1], index: affine(&[(&j, rows), (&i, 1)], 0), value }]
        })
    }))
}

/// The k ranges of `len` k-steps from `start` in blocks of `kc`: `f` of the first block (which
/// starts at `init`), a serial loop of `f` over the next full blocks, then `f` of the last
/// partial block (these start from the output).
fn k_blocks(
    k: &mut Kernel,
    start: &Index,
    len: usize,
    kc: usize,
    init: Init,
    f: &dyn Fn(&mut Kernel, KRange) -> Vec<Stmt>,
) -> Vec<Stmt> {
    if len <= kc {
        return f(k, KRange { start: start.clone(), len, init });
    }
    let full = len / kc * kc;
    let mut out = f(k, KRange { start: start.clone(), len: kc, init });
    out.extend(looped(k, full - kc, kc, LoopKind::Serial, |k, kb| {
        let start = start.clone().plus_index(&kb).plus(kc as i64);
        f(k, KRange { start, len: kc, init: Init::Load })
    }));
    if len > full {
        let start = start.clone().plus(full as i64);
        out.extend(f(k, KRange { start, len: len - full, init: Init::Load }));
    }
    out
}

impl Gemm {
    /// The kernels computing `C` (all of it is written).
    pub fn kernels(&self) -> Vec<Kernel> {
        assert!(self.b.col == 1 && self.c.col == 1, "B and C must be contiguous along N");
        assert_eq!(self.c.row, self.n, "C is row-major");
        if self.m == 0 || self.n == 0 {
            return Vec::new();
        }
        let zero_at = Index::constant(0);
        match plan(self.m, self.n, self.k) {
            Plan::Blocked { kc, group } => self.cover_c(&self.name, group, &|k, ids, region| {
                let out = Out { buf: ids.c, offset: Index::constant(0) };
                k_blocks(k, &zero_at, self.k, kc, Init::Zero, &|k, kr| {
                    self.region(k, ids, region, &kr, &out)
                })
            }),
            Plan::Split { kc, chunk } => {
                let mut out = vec![self.split_kernel(kc, chunk)];
                let rest = KRange {
                    start: Index::constant((SPLIT * chunk) as i64),
                    len: self.k - SPLIT * chunk,
                    init: Init::Partials,
                };
                out.extend(self.cover_c(&format!("{}.sum", self.name), 1, &|k, ids, region| {
                    let out = Out { buf: ids.c, offset: Index::constant(0) };
                    self.region(k, ids, region, &rest, &out)
                }));
                out
            }
        }
    }

    fn kernel(&self, name: String, body: impl FnOnce(&mut Kernel, Ids) -> Vec<Stmt>) -> Kernel {
        let mut k = Kernel::new(name);
        let ids = Ids {
            a: declare(&mut k, &self.a.buf),
            b: declare(&mut k, &self.b.buf),
            c: declare(&mut k, &self.c.buf),
            p: self.partials.as_ref().map(|p| declare(&mut k, p)),
        };
        k.body = body(&mut k, ids);
        k
    }

    /// Kernels running `f` over regions covering `C`: parallel over groups of `group` blocks of
    /// 4 rows (then over the remaining blocks of 4 rows); the last `M % 4` rows parallel over
    /// column tiles when there are several, else in one work item.
    fn cover_c(
        &self,
        name: &str,
        group: usize,
        f: &dyn Fn(&mut Kernel, Ids, &Region) -> Vec<Stmt>,
    ) -> Vec<Kernel> {
        let (m4, n8) = (self.m / MR * MR, self.n / 8 * 8);
        let main = m4 / (MR * group) * (MR * group);
        let rest = self.m - m4;
        let mut out = Vec::new();
        if main > 0 {
            out.push(self.kernel(name.to_string(), |k, ids| {
                looped(k, main, MR * group, LoopKind::Parallel, |k, i| {
                    f(k, ids, &Region { i, rows: MR, blocks: group, cols: Cols::All })
                })
            }));
        }
        if m4 > main {
            out.push(self.kernel(format!("{name}.blocks"), |k, ids| {
                looped(k, m4 - main, MR, LoopKind::Parallel, |k, i| {
                    let i = i.plus(main as i64);
                    f(k, ids, &Region { i, rows: MR, blocks: 1, cols: Cols::All })
                })
            }));
        }
        if rest == 0 {
            return out;
        }
        let i = Index::constant(m4 as i64);
        if n8 >= 16 {
            // Few rows but several column tiles: parallel over the column tiles.
            out.push(self.kernel(format!("{name}.rows"), |k, ids| {
                looped(k, n8, 8, LoopKind::Parallel, |k, j| {
                    f(k, ids, &Region { i: i.clone(), rows: rest, blocks: 1, cols: Cols::Tile(j) })
                })
            }));
            if self.n > n8 {
                out.push(self.kernel(format!("{name}.rows_tail"), |k, ids| {
                    f(k, ids, &Region { i: i.clone(), rows: rest, blocks: 1, cols: Cols::Tail })
                }));
            }
        } else {
            out.push(self.kernel(format!("{name}.rows"), |k, ids| {
                f(k, ids, &Region { i: i.clone(), rows: rest, blocks: 1, cols: Cols::All })
            }));
        }
        out
    }

    /// The split-`K` kernel: parallel over the [`SPLIT`] chunks, each computing its partial
    /// product of all of `C` in blocks of `kc`.
    fn split_kernel(&self, kc: usize, chunk: usize) -> Kernel {
        let m4 = self.m / MR * MR;
        let mn = (self.m * self.n) as i64;
        self.kernel(format!("{}.split", self.name), |k, ids| {
            looped(k, SPLIT, 1, LoopKind::Parallel, |k, s| {
                let p = ids.p.expect("a split product has partials");
                let out = Out { buf: p, offset: scale(&s, mn) };
                let start = scale(&s, chunk as i64);
                let mut regions = Vec::new();
                if m4 > 0 {
                    let i = Index::constant(0);
                    regions.push(Region { i, rows: MR, blocks: m4 / MR, cols: Cols::All });
                }
                if self.m > m4 {
                    let i = Index::constant(m4 as i64);
                    regions.push(Region { i, rows: self.m - m4, blocks: 1, cols: Cols::All });
                }
                k_blocks(k, &start, chunk, kc, Init::Zero, &|k, kr| {
                    regions.iter().flat_map(|r| self.region(k, ids, r, &kr, &out)).collect()
                })
            })
        })
    }

    /// The tiles of a region for k-steps `kr`.
    fn region(
        &self,
        k: &mut Kernel,
        ids: Ids,
        region: &Region,
        kr: &KRange,
        out: &Out,
    ) -> Vec<Stmt> {
        let rows = region.rows;
        looped(k, region.blocks * rows, rows, LoopKind::Serial, |k, ii| {
            let i = region.i.clone().plus_index(&ii);
            match &region.cols {
                Cols::All => {
                    let n8 = self.n / 8 * 8;
                    let mut v = looped(k, n8, 8, LoopKind::Serial, |k, j| {
                        self.tile(k, ids, &i, rows, &j, (4, 2), kr, out)
                    });
                    v.extend(self.column_tail(k, ids, &i, rows, kr, out));
                    v
                }
                Cols::Tile(j) => self.tile(k, ids, &i, rows, j, (4, 2), kr, out),
                Cols::Tail => self.column_tail(k, ids, &i, rows, kr, out),
            }
        })
    }

    /// The last `N % 8` columns of `rows` rows starting at row `i`: a 4-wide tile, then one
    /// tile of up to 3 scalar columns.
    fn column_tail(
        &self,
        k: &mut Kernel,
        ids: Ids,
        i: &Index,
        rows: usize,
        kr: &KRange,
        out: &Out,
    ) -> Vec<Stmt> {
        let (n8, n4) = (self.n / 8 * 8, self.n / 4 * 4);
        let mut v = Vec::new();
        if n4 > n8 {
            let j = Index::constant(n8 as i64);
            v.extend(self.tile(k, ids, i, rows, &j, (4, 1), kr, out));
        }
        if self.n > n4 {
            let j = Index::constant(n4 as i64);
            v.extend(self.tile(k, ids, i, rows, &j, (1, self.n - n4), kr, out));
        }
        v
    }

    /// The block `C[i..i+rows, j..j+lanes*per_row]` in `rows * per_row` accumulators of
    /// `lanes` lanes, over k-steps `kr`.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        k: &mut Kernel,
        ids: Ids,
        i: &Index,
        rows: usize,
        j: &Index,
        (lanes, per_row): (u8, usize),
        kr: &KRange,
        out: &Out,
    ) -> Vec<Stmt> {
        let name = match (lanes, per_row) {
            (4, 2) => "acc",
            (4, _) => "acc4",
            _ => "acc1",
        };
        let acc = k.reg(name, lanes, (rows * per_row) as u32);
        let breg = k.reg(if lanes == 4 { "b4" } else { "b1" }, lanes, per_row as u32);
        let n = self.n;
        let mn = self.m * self.n;
        // For each accumulator (row r, part q): its register index, row and column of C.
        let each = |k: &mut Kernel, f: &dyn Fn(Index, Index, Index) -> Stmt| {
            looped(k, rows, 1, LoopKind::Unrolled, |k, r| {
                looped(k, per_row, 1, LoopKind::Unrolled, |_, q| {
                    let slot = affine(&[(&r, per_row), (&q, 1)], 0);
                    let col = j.clone().plus_index(&scale(&q, lanes as i64));
                    vec![f(slot, i.clone().plus_index(&r), col)]
                })
            })
        };
        let out_at =
            |row: &Index, col: &Index| affine(&[(row, n), (col, 1)], 0).plus_index(&out.offset);
        let mut v = each(k, &|slot, row, col| {
            let value = match kr.init {
                Init::Zero => zero(lanes),
                Init::Load => Expr::load(out.buf, out_at(&row, &col), lanes),
                Init::Partials => {
                    let p = ids.p.expect("partials");
                    let at = |s: usize| affine(&[(&row, n), (&col, 1)], (s * mn) as i64);
                    (1..SPLIT).fold(Expr::load(p, at(0), lanes), |sum, s| {
                        sum.bin(Binary::Add, Expr::load(p, at(s), lanes))
                    })
                }
            };
            Stmt::Set { reg: acc, index: slot, value }
        });
        // One k-step at `p`.
        let step = |k: &mut Kernel, p: Index| {
            let mut s = looped(k, per_row, 1, LoopKind::Unrolled, |_, q| {
                let col = j.clone().plus_index(&scale(&q, lanes as i64));
                let value = Expr::load(ids.b, self.b.at(&p, &col), lanes);
                vec![Stmt::Set { reg: breg, index: q, value }]
            });
            s.extend(looped(k, rows, 1, LoopKind::Unrolled, |k, r| {
                let row = i.clone().plus_index(&r);
                let a = splat_if(Expr::load(ids.a, self.a.at(&row, &p), 1), lanes);
                looped(k, per_row, 1, LoopKind::Unrolled, |_, q| {
                    let slot = affine(&[(&r, per_row), (&q, 1)], 0);
                    let value = a.clone().fma(Expr::Reg(breg, q), Expr::Reg(acc, slot.clone()));
                    vec![Stmt::Set { reg: acc, index: slot, value }]
                })
            }));
            s
        };
        let main = kr.len / KU * KU;
        v.extend(looped(k, main, KU, LoopKind::Serial, |k, p| {
            looped(k, KU, 1, LoopKind::Unrolled, |k, u| {
                step(k, kr.start.clone().plus_index(&p).plus_index(&u))
            })
        }));
        v.extend(looped(k, kr.len - main, 1, LoopKind::Unrolled, |k, t| {
            step(k, kr.start.clone().plus(main as i64).plus_index(&t))
        }));
        v.extend(each(k, &|slot, row, col| Stmt::Store {
            buf: out.buf,
            index: out_at(&row, &col),
            value: Expr::Reg(acc, slot),
        }));
        v
    }
}
