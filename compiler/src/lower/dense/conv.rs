//! Convolutions (NHWC input, HWIO filter) as im2col + GEMM.
//!
//! The im2col matrix `cols[N*OH*OW, KH*KW*C]` holds, in row `(n, oh, ow)` and column
//! `(kh, kw, c)`, the input pixel `x[n, oh*sh + kh - top, ow*sw + kw - left, c]` (0 in the
//! padding). The filter `[KH,KW,C,F]` is the row-major `[KH*KW*C, F]` matrix and the output
//! `[N,OH,OW,F]` the row-major `[N*OH*OW, F]` matrix, so:
//! - `conv2d`: `y = cols · w`;
//! - `conv2d_grad_filter`: `dw = colsᵀ · g`;
//! - `conv2d_grad_input`: `dcols = g · wᵀ`, then col2im scatter-adds `dcols` into `dx`.
//!
//! For each tap `(kh, kw)` (expanded at lowering time) the rows whose pixel lies inside the
//! image form a rectangle of `(oh, ow)` computed statically, so no access needs a guard; the
//! im2col of that tap writes the rectangle with copies and its complement (up to four bands)
//! with zeros, so every element of `cols` is written exactly once.

use std::ops::Range;

use kiln_ir::ops::Padding;
use kiln_ir::Shape;

use super::gemm::{Epilogue, Gemm, Scratch, View};
use super::{affine, looped, parallel_kernel, vectorised, zero};
use crate::kernel::{BufId, Buffer, Expr, Index, Kernel, LoopKind, Stmt};

/// The sizes of one convolution.
#[derive(Clone, Debug)]
pub(super) struct Geo {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    kh: usize,
    kw: usize,
    f: usize,
    oh: usize,
    ow: usize,
    sh: usize,
    sw: usize,
    /// `[top, bottom, left, right]`.
    pad: [usize; 4],
}

/// The outputs `o` in `0..out` whose input `o*stride + tap - pad` is in `0..input`.
fn valid(out: usize, input: usize, stride: usize, tap: usize, pad: usize) -> Range<usize> {
    let lo = if tap >= pad { 0 } else { (pad - tap).div_ceil(stride) };
    let hi = if input + pad > tap { (input + pad - tap - 1) / stride + 1 } else { 0 };
    let lo = lo.min(out);
    lo..hi.min(out).max(lo)
}

/// `f(a, b)` over the rectangle `rows x cols`.
fn rect(
    k: &mut Kernel,
    rows: Range<usize>,
    cols: Range<usize>,
    f: impl Fn(&mut Kernel, &Index, &Index) -> Vec<Stmt>,
) -> Vec<Stmt> {
    if cols.is_empty() {
        return Vec::new();
    }
    looped(k, rows.len(), 1, LoopKind::Serial, |k, a| {
        let a = a.plus(rows.start as i64);
        looped(k, cols.len(), 1, LoopKind::Serial, |k, b| f(k, &a, &b.plus(cols.start as i64)))
    })
}

impl Geo {
    /// The convolution of an input of shape `x` with a filter of shape `w`.
    pub fn new(x: &Shape, w: &Shape, stride: [usize; 2], pad: Padding) -> Self {
        let ([n, h, wd, c], [kh, kw, _, f]) = (dims4(x), dims4(w));
        let pad = pad.resolve([h, wd], [kh, kw], stride);
        let oh = (h + pad[0] + pad[1] - kh) / stride[0] + 1;
        let ow = (wd + pad[2] + pad[3] - kw) / stride[1] + 1;
        Geo { n, h, w: wd, c, kh, kw, f, oh, ow, sh: stride[0], sw: stride[1], pad }
    }

    /// Rows of the im2col matrix.
    fn rows(&self) -> usize {
        self.n * self.oh * self.ow
    }

    /// Columns of the im2col matrix (taps times channels).
    fn taps(&self) -> usize {
        self.kh * self.kw * self.c
    }

    /// A 1x1 convolution with stride 1 and no padding: the input is its own im2col matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.pad == [0; 4]
    }

    fn cols_len(&self) -> usize {
        if self.pointwise() {
            0
        } else {
            self.rows() * self.taps()
        }
    }

    /// The GEMM of `conv2d`: `[rows, taps] · [taps, F]`, both row-major.
    fn gemm_fwd(&self) -> Scratch {
        Scratch::of(self.rows(), self.f, self.taps(), true, true)
    }

    /// The GEMM of `conv2d_grad_filter`: `colsᵀ · g`, `[taps, rows] · [rows, F]`.
    fn gemm_grad_filter(&self) -> Scratch {
        Scratch::of(self.taps(), self.f, self.rows(), false, true)
    }

    /// The GEMM of `conv2d_grad_input`: `g · wᵀ`, `[rows, F] · [F, taps]`.
    fn gemm_grad_input(&self) -> Scratch {
        Scratch::of(self.rows(), self.taps(), self.f, true, false)
    }

    /// Scratch of `conv2d` (with or without an epilogue): the im2col matrix, then the GEMM's.
    pub fn scratch_fwd(&self) -> usize {
        self.cols_len() + self.gemm_fwd().len()
    }

    /// Scratch of `conv2d_grad_filter`: the im2col matrix, then the GEMM's.
    pub fn scratch_grad_filter(&self) -> usize {
        self.cols_len() + self.gemm_grad_filter().len()
    }

    /// Scratch of `conv2d_grad_input`: `dcols`, then the GEMM's (the packed `wᵀ`, ...).
    pub fn scratch_grad_input(&self) -> usize {
        self.cols_len() + self.gemm_grad_input().len()
    }

    /// The taps `(kh, kw)` with the valid rectangle of `(oh, ow)` of each.
    fn each_tap(&self) -> impl Iterator<Item = (usize, usize, Range<usize>, Range<usize>)> + '_ {
        (0..self.kh).flat_map(move |i| {
            (0..self.kw).map(move |j| {
                let rows = valid(self.oh, self.h, self.sh, i, self.pad[0]);
                let cols = valid(self.ow, self.w, self.sw, j, self.pad[2]);
                (i, j, rows, cols)
            })
        })
    }

    /// The im2col offset of row `(n, oh, ow)`, column `(tap, 0)`.
    fn col_at(&self, n: &Index, oh: &Index, ow: &Index, tap: usize) -> Index {
        let row = self.taps();
        affine(
            &[(n, self.oh * self.ow * row), (oh, self.ow * row), (ow, row)],
            (tap * self.c) as i64,
        )
    }

    /// The input offset of the pixel that tap `(i, j)` of output `(n, oh, ow)` reads, channel 0.
    fn x_at(&self, n: &Index, oh: &Index, ow: &Index, i: usize, j: usize) -> Index {
        let (row, px) = (self.w * self.c, self.c as i64);
        let constant =
            (i as i64 - self.pad[0] as i64) * row as i64 + (j as i64 - self.pad[2] as i64) * px;
        affine(&[(n, self.h * row), (oh, self.sh * row), (ow, self.sw * self.c)], constant)
    }

    /// The im2col kernel: parallel over images; per tap, copies of the valid rectangle
    /// (f32x4 over channels) and zeros in the rest.
    fn im2col(&self, name: &str, x: &Buffer, cols: &Buffer) -> Kernel {
        parallel_kernel(format!("{name}.im2col"), &[x, cols], self.n, 1, |k, ids, n| {
            let (xb, cb) = (ids[0], ids[1]);
            let mut out = Vec::new();
            for (i, j, rows, cs) in self.each_tap() {
                let tap = i * self.kw + j;
                let zeros = |k: &mut Kernel, oh: &Index, ow: &Index| {
                    let at = self.col_at(&n, oh, ow, tap);
                    vectorised(k, self.c, |_, c, lanes| {
                        vec![Stmt::Store {
                            buf: cb,
                            index: at.clone().plus_index(&c),
                            value: zero(lanes),
                        }]
                    })
                };
                let all = 0..self.ow;
                out.extend(rect(k, 0..rows.start, all.clone(), zeros));
                out.extend(rect(k, rows.end..self.oh, all, zeros));
                out.extend(rect(k, rows.clone(), 0..cs.start, zeros));
                out.extend(rect(k, rows.clone(), cs.end..self.ow, zeros));
                out.extend(rect(k, rows, cs, |k, oh, ow| {
                    let (dst, src) = (self.col_at(&n, oh, ow, tap), self.x_at(&n, oh, ow, i, j));
                    vectorised(k, self.c, |_, c, lanes| {
                        let value = Expr::load(xb, src.clone().plus_index(&c), lanes);
                        vec![Stmt::Store { buf: cb, index: dst.clone().plus_index(&c), value }]
                    })
                }));
            }
            out
        })
    }

    /// The col2im kernel: `dx = 0`, then `dx[pixel of (row, tap)] += dcols[row, tap]` over the
    /// valid rectangles, parallel over images (their `dx` are disjoint), serial inside.
    fn col2im(&self, name: &str, dcols: &Buffer, dx: &Buffer) -> Kernel {
        parallel_kernel(format!("{name}.col2im"), &[dcols, dx], self.n, 1, |k, ids, n| {
            let (cb, xb): (BufId, BufId) = (ids[0], ids[1]);
            let image = self.h * self.w * self.c;
            let base = affine(&[(&n, image)], 0);
            let mut out = vectorised(k, image, |_, e, lanes| {
                vec![Stmt::Store {
                    buf: xb,
                    index: base.clone().plus_index(&e),
                    value: zero(lanes),
                }]
            });
            for (i, j, rows, cs) in self.each_tap() {
                let tap = i * self.kw + j;
                out.extend(rect(k, rows, cs, |k, oh, ow| {
                    let (src, dst) = (self.col_at(&n, oh, ow, tap), self.x_at(&n, oh, ow, i, j));
                    vectorised(k, self.c, |_, c, lanes| {
                        let d = dst.clone().plus_index(&c);
                        let value = Expr::load(xb, d.clone(), lanes).bin(
                            crate::kernel::Binary::Add,
                            Expr::load(cb, src.clone().plus_index(&c), lanes),
                        );
                        vec![Stmt::Store { buf: xb, index: d, value }]
                    })
                }));
            }
            out
        })
    }

    /// The GEMM operand holding the input's columns: `x` itself for a pointwise convolution,
    /// otherwise the im2col scratch, whose kernel is appended to `out`.
    fn columns(
        &self,
        name: &str,
        x: &Buffer,
        part: &impl Fn(&str, usize, usize) -> Buffer,
        out: &mut Vec<Kernel>,
    ) -> Buffer {
        if self.pointwise() {
            return x.clone();
        }
        let cols = part("cols", 0, self.cols_len());
        out.push(self.im2col(name, x, &cols));
        cols
    }

    /// `conv2d(x, w) -> y`: im2col (unless pointwise), then `y = cols · w`, then `epilogue` on
    /// each element (its bias is per output channel).
    pub fn conv(
        &self,
        name: &str,
        (x, w, y): (&Buffer, &Buffer, &Buffer),
        part: impl Fn(&str, usize, usize) -> Buffer,
        epilogue: &Epilogue,
    ) -> Vec<Kernel> {
        let mut out = Vec::new();
        let a = self.columns(name, x, &part, &mut out);
        let len = self.gemm_fwd().len();
        let g = Gemm {
            name: format!("{name}.gemm"),
            m: self.rows(),
            n: self.f,
            k: self.taps(),
            a: View::rows(&a, self.taps()),
            b: View::rows(w, self.f),
            c: y.clone(),
            scratch: (len > 0).then(|| part("gemm", self.cols_len(), len)),
            epilogue: epilogue.clone(),
        };
        out.extend(g.kernels());
        out
    }

    /// `conv2d_grad_filter(x, g) -> dw`: im2col (unless pointwise), then `dw = colsᵀ · g`
    /// (the GEMM packs `colsᵀ` into panels of 4 taps, contiguous along the rows).
    pub fn grad_filter(
        &self,
        name: &str,
        x: &Buffer,
        g: &Buffer,
        dw: &Buffer,
        part: impl Fn(&str, usize, usize) -> Buffer,
    ) -> Vec<Kernel> {
        let mut out = Vec::new();
        let a = self.columns(name, x, &part, &mut out);
        let len = self.gemm_grad_filter().len();
        let gemm = Gemm {
            name: format!("{name}.gemm"),
            m: self.taps(),
            n: self.f,
            k: self.rows(),
            a: View::transposed(&a, self.taps()),
            b: View::rows(g, self.f),
            c: dw.clone(),
            scratch: (len > 0).then(|| part("gemm", self.cols_len(), len)),
            epilogue: Epilogue::none(),
        };
        out.extend(gemm.kernels());
        out
    }

    /// `conv2d_grad_input(g, w) -> dx`: `dcols = g · wᵀ` (the GEMM packs `wᵀ`), then col2im
    /// (when pointwise, `dx` is `dcols`).
    pub fn grad_input(
        &self,
        name: &str,
        g: &Buffer,
        w: &Buffer,
        dx: &Buffer,
        part: impl Fn(&str, usize, usize) -> Buffer,
    ) -> Vec<Kernel> {
        let taps = self.taps();
        let dcols = if self.pointwise() { dx.clone() } else { part("dcols", 0, self.cols_len()) };
        let len = self.gemm_grad_input().len();
        let gemm = Gemm {
            name: format!("{name}.gemm"),
            m: self.rows(),
            n: taps,
            k: self.f,
            a: View::rows(g, self.f),
            b: View::transposed(w, self.f),
            c: dcols.clone(),
            scratch: (len > 0).then(|| part("gemm", self.cols_len(), len)),
            epilogue: Epilogue::none(),
        };
        let mut out = gemm.kernels();
        if !self.pointwise() {
            out.push(self.col2im(name, &dcols, dx));
        }
        out
    }
}

fn dims4(s: &Shape) -> [usize; 4] {
    s.dims().try_into().expect("shape inference checked a 4-D shape")
}
