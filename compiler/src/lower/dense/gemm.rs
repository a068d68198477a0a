//! `C[M,N] = A[M,K] · B[K,N]` as register tiles, the copies that pack its operands, and the
//! epilogue (bias, ReLU) applied when the tiles are stored.
//!
//! Micro-kernel: a 4x8 block of `C` lives in 8 f32x4 accumulators (`acc[2r + c]`, rows `r`,
//! halves `c`). Each k-step loads the two vectors `B[k, j..j+8]` into registers `b4[0..2]`,
//! then `acc[2r + c] = fma(splat(A[i+r, k]), b4[c], acc[2r + c])`: every `splat(load)` has one
//! use, so it becomes one `vbroadcastss` from memory (keeping the splat in a register used by
//! two fmas costs a separate load, broadcast and register copy instead). The k loop steps by
//! [`KU`] with its k-steps unrolled inside, then the remaining k-steps are unrolled. The last
//! `N % 8` columns use a 4-wide tile (`acc4`) and scalar accumulators (`acc1`); the last `M % 4`
//! rows go to further kernels with the same tiles.
//!
//! Packing (`.pack_b`, `.pack_a` kernels, into the scratch, before the product):
//! - `B` becomes panels of 8 columns, `Bp[j/8][k][0..8]`, followed by its last `N % 8` columns
//!   as a row-major `[K, N % 8]` matrix, so the micro-kernel streams contiguous memory instead
//!   of rows `N` elements apart (power-of-two row strides map every row to the same few L1
//!   sets). `B` is packed when it is not contiguous along `N` (a transposed operand), or when
//!   it is large and reused by several row blocks ([`packs_b`]).
//! - A transposed `A` (consecutive rows adjacent in memory, e.g. the im2col matrix of a
//!   filter gradient) becomes panels of 4 rows, `Ap[i/4][k][0..4]`, for its first `M / 4 * 4`
//!   rows: each panel is one f32x4 copy per k, and the micro-kernel then reads 16 contiguous
//!   bytes per k-step instead of one line `M` elements away ([`packs_a`]).
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
//! The [`Epilogue`] is applied only by the store that follows an element's last k-step.

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
/// Columns of a full tile (and of a panel of the packed `B`).
const NR: usize = 8;
/// Target number of work items of a long-`K` product (row groups).
const ITEMS: usize = 8;
/// Number of `K` chunks of a split product.
pub(super) const SPLIT: usize = 8;
/// Long-`K` products with more elements of `B` than this group row blocks into work items.
const GROUP_B: usize = 32 * 1024;
/// A contiguous `B` with at least this many elements is packed (when several row blocks use
/// it); smaller ones stay in L1 anyway.
const PACK_B_MIN: usize = 8 * 1024;

/// What is done to each element of `C` when it is stored after its last k-step:
/// `C[i, j] = relu?(acc + bias[j])`.
///
/// The bias is broadcast along the rows: one value per output column (the units of a dense
/// layer, the output channels of an NHWC convolution). The addition and the ReLU are each
/// rounded as separate `bias_add` and `relu` ops would be, so a fused product gives the same
/// bits as the unfused graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Epilogue {
    /// `N` values added to the columns (`bias[j]` to column `j`), if any.
    pub bias: Option<Buffer>,
    /// Whether `max(x, 0)` is applied (after the bias).
    pub relu: bool,
}

impl Epilogue {
    /// No bias, no ReLU: `C` is the plain product.
    pub fn none() -> Self {
        Epilogue::default()
    }

    /// True when the epilogue changes nothing.
    pub fn is_none(&self) -> bool {
        self.bias.is_none() && !self.relu
    }
}

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

    /// True when consecutive columns are adjacent (row-major).
    fn contiguous(&self) -> bool {
        self.col == 1
    }
}

/// Whether a product packs `A` into panels of 4 rows (see the module documentation).
fn packs_a(m: usize, n: usize, k: usize, a_contiguous: bool) -> bool {
    !a_contiguous && m >= MR && n > NR && k >= KU
}

/// Whether a product packs `B` into panels of 8 columns (see the module documentation).
fn packs_b(m: usize, n: usize, k: usize, b_contiguous: bool) -> bool {
    !b_contiguous || (n >= NR && m > MR && k * n >= PACK_B_MIN)
}

/// The scratch of one product, in order: packed `A`, packed `B`, partial products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Scratch {
    packed_a: usize,
    packed_b: usize,
    partials: usize,
}

impl Scratch {
    /// The scratch of an `m x n x k` product whose `A` and `B` are (or not) contiguous along
    /// their rows.
    pub fn of(m: usize, n: usize, k: usize, a_contiguous: bool, b_contiguous: bool) -> Self {
        let packed_a = if packs_a(m, n, k, a_contiguous) { m / MR * MR * k } else { 0 };
        let packed_b = if packs_b(m, n, k, b_contiguous) { k * n } else { 0 };
        let partials = match plan(m, n, k) {
            Plan::Split { .. } => SPLIT * m * n,
            Plan::Blocked { .. } => 0,
        };
        Scratch { packed_a, packed_b, partials }
    }

    /// The total, in f32 elements.
    pub fn len(&self) -> usize {
        self.packed_a + self.packed_b + self.partials
    }
}

/// One matrix product `C = A · B` (`C` row-major), then its epilogue.
pub(super) struct Gemm {
    /// Kernel name prefix.
    pub name: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: View,
    pub b: View,
    pub c: Buffer,
    /// At least [`Scratch::len`] elements when that is not 0.
    pub scratch: Option<Buffer>,
    pub epilogue: Epilogue,
}

/// The buffers of a GEMM kernel: the operands (`a`, `b` as read by the tiles: packed or not),
/// the partial products of a split `K`, the packed panels of `A` and the bias.
#[derive(Clone, Copy)]
struct Ids {
    a: BufId,
    b: BufId,
    c: BufId,
    p: Option<BufId>,
    ap: Option<BufId>,
    bias: Option<BufId>,
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

/// The k-steps `start..start + len` of a tile; `last` when they end the reduction.
#[derive(Clone, Debug)]
struct KRange {
    start: Index,
    len: usize,
    init: Init,
    last: bool,
}

/// Where a tile writes: element `(r, c)` at `offset + r * n + c` of `buf`; `final_c` when
/// that is `C` itself (not a partial product), where the epilogue applies.
#[derive(Clone, Debug)]
struct Out {
    buf: BufId,
    offset: Index,
    final_c: bool,
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

/// `m, k, n` of a matmul node.
fn matmul_dims(op: &MatMul, a: &Shape, b: &Shape) -> (usize, usize, usize) {
    let (m, k) = if op.transpose_a { (a.dim(1), a.dim(0)) } else { (a.dim(0), a.dim(1)) };
    let n = if op.transpose_b { b.dim(0) } else { b.dim(1) };
    (m, k, n)
}

/// Scratch of a matmul (with or without an epilogue).
pub(super) fn scratch_len(op: &MatMul, a: &Shape, b: &Shape) -> usize {
    let (m, k, n) = matmul_dims(op, a, b);
    Scratch::of(m, n, k, !op.transpose_a, !op.transpose_b).len()
}

/// The kernels of a matmul node `out = op(a) · op(b)`, then `epilogue` on each element.
#[allow(clippy::too_many_arguments)]
pub(super) fn lower_matmul(
    name: &str,
    op: &MatMul,
    a: &Shape,
    b: &Shape,
    bufs: &[Buffer],
    out: &Buffer,
    part: impl Fn(&str, usize, usize) -> Buffer,
    epilogue: &Epilogue,
) -> Vec<Kernel> {
    let (m, k, n) = matmul_dims(op, a, b);
    let av = if op.transpose_a { View::transposed(&bufs[0], m) } else { View::rows(&bufs[0], k) };
    let bv = if op.transpose_b { View::transposed(&bufs[1], k) } else { View::rows(&bufs[1], n) };
    let len = scratch_len(op, a, b);
    let g = Gemm {
        name: name.to_string(),
        m,
        n,
        k,
        a: av,
        b: bv,
        c: out.clone(),
        scratch: (len > 0).then(|| part("gemm", 0, len)),
        epilogue: epilogue.clone(),
    };
    g.kernels()
}

/// `count` elements from `src` (`stride` apart) to consecutive elements from `dst`: f32x4
/// copies when `stride` is 1, unrolled when short.
fn copy(
    k: &mut Kernel,
    count: usize,
    (src, from, stride): (BufId, &Index, usize),
    (dst, to): (BufId, &Index),
) -> Vec<Stmt> {
    let kind = |steps: usize| if steps <= 4 { LoopKind::Unrolled } else { LoopKind::Serial };
    let one = |lanes: u8, c: &Index| Stmt::Store {
        buf: dst,
        index: to.clone().plus_index(c),
        value: Expr::load(src, from.clone().plus_index(&scale(c, stride as i64)), lanes),
    };
    let main = if stride == 1 { count / 4 * 4 } else { 0 };
    let mut out = looped(k, main, 4, kind(main / 4), |_, c| vec![one(4, &c)]);
    out.extend(looped(k, count - main, 1, kind(count - main), |_, c| {
        vec![one(1, &c.plus(main as i64))]
    }));
    out
}

/// The k ranges of `len` k-steps from `start` in blocks of `kc`: `f` of the first block (which
/// starts at `init`), a serial loop of `f` over the next full blocks, then `f` of the last
/// partial block (these start from the output). With `peel`, the last block is always a
/// separate `f` (so that it alone is marked `last`, for the epilogue).
fn k_blocks(
    k: &mut Kernel,
    start: &Index,
    len: usize,
    kc: usize,
    init: Init,
    peel: bool,
    f: &dyn Fn(&mut Kernel, KRange) -> Vec<Stmt>,
) -> Vec<Stmt> {
    if len <= kc {
        return f(k, KRange { start: start.clone(), len, init, last: true });
    }
    let full = len / kc * kc;
    // Where the k-steps after the loop start: the partial block, or the last full block.
    let after = if len > full || !peel { full } else { full - kc };
    let mut out = f(k, KRange { start: start.clone(), len: kc, init, last: false });
    out.extend(looped(k, after - kc, kc, LoopKind::Serial, |k, kb| {
        let start = start.clone().plus_index(&kb).plus(kc as i64);
        f(k, KRange { start, len: kc, init: Init::Load, last: false })
    }));
    if len > after {
        let start = start.clone().plus(after as i64);
        out.extend(f(k, KRange { start, len: len - after, init: Init::Load, last: true }));
    }
    out
}

impl Gemm {
    /// The kernels computing `C` (all of it is written): packing, then the product.
    pub fn kernels(&self) -> Vec<Kernel> {
        if self.m == 0 || self.n == 0 {
            return Vec::new();
        }
        let scratch = Scratch::of(self.m, self.n, self.k, self.a.contiguous(), self.b.contiguous());
        let part = |name: &str, at: usize, len: usize| {
            let s = self.scratch.as_ref().expect("the product's scratch");
            assert!(s.len >= scratch.len(), "the product's scratch is too short");
            Buffer { name: format!("{}.{name}", s.name), offset: s.offset + at, len }
        };
        let mut out = Vec::new();
        let packed_a = (scratch.packed_a > 0).then(|| part("packed_a", 0, scratch.packed_a));
        let packed_b =
            (scratch.packed_b > 0).then(|| part("packed_b", scratch.packed_a, scratch.packed_b));
        let partials = (scratch.partials > 0)
            .then(|| part("partials", scratch.packed_a + scratch.packed_b, scratch.partials));
        if let Some(ap) = &packed_a {
            out.extend(self.pack_a(ap));
        }
        if let Some(bp) = &packed_b {
            out.extend(self.pack_b(bp));
        }
        let t = Tiles {
            g: self,
            b: packed_b.as_ref().map_or(BSource::View(&self.b), BSource::Panels),
            packed_a: packed_a.as_ref(),
            partials: partials.as_ref(),
        };
        out.extend(t.kernels());
        out
    }

    /// `Ap[i/4][k][0..4] = A[i..i+4, k]` for the first `M / 4 * 4` rows, parallel over `k`.
    fn pack_a(&self, ap: &Buffer) -> Option<Kernel> {
        let (m4, kd) = (self.m / MR * MR, self.k);
        if m4 == 0 || kd == 0 {
            return None;
        }
        let src = &self.a;
        Some(parallel_kernel(
            format!("{}.pack_a", self.name),
            &[&src.buf, ap],
            kd,
            1,
            |k, ids, p| {
                looped(k, m4, MR, LoopKind::Serial, |k, i| {
                    let to = affine(&[(&i, kd), (&p, MR)], 0);
                    copy(k, MR, (ids[0], &src.at(&i, &p), src.row), (ids[1], &to))
                })
            },
        ))
    }

    /// `Bp`: panels of 8 columns `[N/8][K][8]`, then the last `N % 8` columns as a row-major
    /// `[K, N % 8]` matrix; parallel over `k`.
    fn pack_b(&self, bp: &Buffer) -> Option<Kernel> {
        let (n8, kd) = (self.n / NR * NR, self.k);
        if kd == 0 {
            return None;
        }
        let (src, tail) = (&self.b, self.n - n8);
        Some(parallel_kernel(
            format!("{}.pack_b", self.name),
            &[&src.buf, bp],
            kd,
            1,
            |k, ids, p| {
                let mut v = looped(k, n8, NR, LoopKind::Serial, |k, j| {
                    let to = affine(&[(&j, kd), (&p, NR)], 0);
                    copy(k, NR, (ids[0], &src.at(&p, &j), src.col), (ids[1], &to))
                });
                let (from, to) =
                    (src.at(&p, &Index::constant(n8 as i64)), affine(&[(&p, tail)], 0));
                v.extend(copy(
                    k,
                    tail,
                    (ids[0], &from, src.col),
                    (ids[1], &to.plus((n8 * kd) as i64)),
                ));
                v
            },
        ))
    }
}

/// Where the tiles read `B`.
#[derive(Clone, Copy)]
enum BSource<'a> {
    /// A row-major view.
    View(&'a View),
    /// The packed panels ([`Gemm::pack_b`]).
    Panels(&'a Buffer),
}

/// The product's tiles, reading the packed operands.
struct Tiles<'a> {
    g: &'a Gemm,
    b: BSource<'a>,
    packed_a: Option<&'a Buffer>,
    partials: Option<&'a Buffer>,
}

impl Tiles<'_> {
    fn kernels(&self) -> Vec<Kernel> {
        let g = self.g;
        let peel = !g.epilogue.is_none();
        let zero_at = Index::constant(0);
        match plan(g.m, g.n, g.k) {
            Plan::Blocked { kc, group } => self.cover_c(&g.name, group, &|k, ids, region| {
                let out = Out { buf: ids.c, offset: Index::constant(0), final_c: true };
                k_blocks(k, &zero_at, g.k, kc, Init::Zero, peel, &|k, kr| {
                    self.region(k, ids, region, &kr, &out)
                })
            }),
            Plan::Split { kc, chunk } => {
                let mut out = vec![self.split_kernel(kc, chunk)];
                let rest = KRange {
                    start: Index::constant((SPLIT * chunk) as i64),
                    len: g.k - SPLIT * chunk,
                    init: Init::Partials,
                    last: true,
                };
                out.extend(self.cover_c(&format!("{}.sum", g.name), 1, &|k, ids, region| {
                    let out = Out { buf: ids.c, offset: Index::constant(0), final_c: true };
                    self.region(k, ids, region, &rest, &out)
                }));
                out
            }
        }
    }

    fn kernel(&self, name: String, body: impl FnOnce(&mut Kernel, Ids) -> Vec<Stmt>) -> Kernel {
        let g = self.g;
        let mut k = Kernel::new(name);
        let b = match self.b {
            BSource::View(v) => &v.buf,
            BSource::Panels(p) => p,
        };
        let ids = Ids {
            a: declare(&mut k, &g.a.buf),
            b: declare(&mut k, b),
            c: declare(&mut k, &g.c),
            p: self.partials.map(|p| declare(&mut k, p)),
            ap: self.packed_a.map(|p| declare(&mut k, p)),
            bias: g.epilogue.bias.as_ref().map(|b| declare(&mut k, b)),
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
        let g = self.g;
        let (m4, n8) = (g.m / MR * MR, g.n / NR * NR);
        let main = m4 / (MR * group) * (MR * group);
        let rest = g.m - m4;
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
        if n8 >= 2 * NR {
            // Few rows but several column tiles: parallel over the column tiles.
            out.push(self.kernel(format!("{name}.rows"), |k, ids| {
                looped(k, n8, NR, LoopKind::Parallel, |k, j| {
                    f(k, ids, &Region { i: i.clone(), rows: rest, blocks: 1, cols: Cols::Tile(j) })
                })
            }));
            if g.n > n8 {
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
        let g = self.g;
        let m4 = g.m / MR * MR;
        let mn = (g.m * g.n) as i64;
        self.kernel(format!("{}.split", g.name), |k, ids| {
            looped(k, SPLIT, 1, LoopKind::Parallel, |k, s| {
                let p = ids.p.expect("a split product has partials");
                let out = Out { buf: p, offset: scale(&s, mn), final_c: false };
                let start = scale(&s, chunk as i64);
                let mut regions = Vec::new();
                if m4 > 0 {
                    let i = Index::constant(0);
                    regions.push(Region { i, rows: MR, blocks: m4 / MR, cols: Cols::All });
                }
                if g.m > m4 {
                    let i = Index::constant(m4 as i64);
                    regions.push(Region { i, rows: g.m - m4, blocks: 1, cols: Cols::All });
                }
                k_blocks(k, &start, chunk, kc, Init::Zero, false, &|k, kr| {
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
                    let n8 = self.g.n / NR * NR;
                    let mut v = looped(k, n8, NR, LoopKind::Serial, |k, j| {
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
        let n = self.g.n;
        let (n8, n4) = (n / NR * NR, n / 4 * 4);
        let mut v = Vec::new();
        if n4 > n8 {
            let j = Index::constant(n8 as i64);
            v.extend(self.tile(k, ids, i, rows, &j, (4, 1), kr, out));
        }
        if n > n4 {
            let j = Index::constant(n4 as i64);
            v.extend(self.tile(k, ids, i, rows, &j, (1, n - n4), kr, out));
        }
        v
    }

    /// The index of `A[i + r, p]` for a tile of `rows` rows from row `i`: in the 4-row panels
    /// of the packed `A` for full tiles, else in `A` itself.
    fn a_at(&self, ids: Ids, i: &Index, r: &Index, rows: usize, p: &Index) -> (BufId, Index) {
        match ids.ap {
            Some(ap) if rows == MR => (ap, affine(&[(i, self.g.k), (p, MR), (r, 1)], 0)),
            _ => (ids.a, self.g.a.at(&i.clone().plus_index(r), p)),
        }
    }

    /// The index of `B[p, j + off]` for a tile from column `j`: in a panel for full 8-column
    /// tiles (`j` is then a multiple of 8, its panel starts at `j * K`), in the row-major tail
    /// of the panels for the last `N % 8` columns, or in `B` itself.
    fn b_at(&self, p: &Index, j: &Index, off: &Index, panel: bool) -> Index {
        let (n, kd) = (self.g.n, self.g.k);
        let n8 = n / NR * NR;
        match self.b {
            BSource::View(v) => v.at(p, &j.clone().plus_index(off)),
            BSource::Panels(_) if panel => affine(&[(j, kd), (p, NR), (off, 1)], 0),
            BSource::Panels(_) => {
                affine(&[(p, n - n8), (j, 1), (off, 1)], (n8 * kd) as i64 - n8 as i64)
            }
        }
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
        let panel = (lanes, per_row) == (4, 2);
        let acc = k.reg(name, lanes, (rows * per_row) as u32);
        let breg = k.reg(if lanes == 4 { "b4" } else { "b1" }, lanes, per_row as u32);
        let (m, n) = (self.g.m, self.g.n);
        let mn = m * n;
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
                let off = scale(&q, lanes as i64);
                let value = Expr::load(ids.b, self.b_at(&p, j, &off, panel), lanes);
                vec![Stmt::Set { reg: breg, index: q, value }]
            });
            s.extend(looped(k, rows, 1, LoopKind::Unrolled, |k, r| {
                let (abuf, at) = self.a_at(ids, i, &r, rows, &p);
                let a = splat_if(Expr::load(abuf, at, 1), lanes);
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
        let epilogue = (kr.last && out.final_c).then_some(&self.g.epilogue);
        v.extend(each(k, &|slot, row, col| Stmt::Store {
            buf: out.buf,
            index: out_at(&row, &col),
            value: finish(Expr::Reg(acc, slot), epilogue, ids.bias, &col, lanes),
        }));
        v
    }
}

/// `value` (the accumulators of columns `col..col+lanes`) after the epilogue, if any.
fn finish(
    value: Expr,
    epilogue: Option<&Epilogue>,
    bias: Option<BufId>,
    col: &Index,
    lanes: u8,
) -> Expr {
    let Some(e) = epilogue else { return value };
    let mut v = value;
    if let Some(b) = bias.filter(|_| e.bias.is_some()) {
        v = v.bin(Binary::Add, Expr::load(b, col.clone(), lanes));
    }
    if e.relu {
        v = v.bin(Binary::Max, zero(lanes));
    }
    v
}
