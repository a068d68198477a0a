//! Max and average pooling over 'valid' windows of NHWC tensors, and their gradients.
//!
//! Every kernel is vectorised over channels (f32x4, then a scalar tail) and runs a parallel
//! loop over images (the forward ops over output rows instead when there are more of those).
//! The gradients zero the image's `dx` and then read-modify-write it window by window, serially
//! within the image, so overlapping windows accumulate.
//!
//! `max_pool2d_grad_relu_bias` also sums each image's `dx` over its rows into per-image
//! channel partials (in scratch) while the image is still in cache, then adds the partials
//! up over the images in a second, small kernel: the bias gradient without another pass over
//! `dx`. The order of every sum depends only on the shapes, never on the thread count.

use kiln_ir::Shape;

use super::{affine, looped, parallel_kernel, splat_if, vectorised, zero};
use crate::kernel::{Binary, BufId, Buffer, Cmp, Expr, Index, Kernel, LoopKind, Reg, Stmt};
use crate::lower::pointwise::column_sums;

/// The sizes of one pooling.
#[derive(Clone, Debug)]
pub(super) struct Geo {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    size: [usize; 2],
    stride: [usize; 2],
    oh: usize,
    ow: usize,
}

/// The register of `name` in `k`, declared on first use.
fn reg(k: &mut Kernel, name: &str, lanes: u8) -> Reg {
    match k.regs.iter().position(|r| r.name == name && r.lanes == lanes) {
        Some(i) => Reg(i as u32),
        None => k.reg(name, lanes, 1),
    }
}

/// A register's name for `lanes` lanes (`m` → `m4` / `m1`).
fn named(base: &str, lanes: u8) -> String {
    format!("{base}{lanes}")
}

impl Geo {
    /// Pooling an input of shape `x` with `size` windows every `stride`.
    pub fn new(x: &Shape, size: [usize; 2], stride: [usize; 2]) -> Self {
        let [n, h, w, c]: [usize; 4] = x.dims().try_into().expect("shape inference checked 4-D");
        let oh = (h - size[0]) / stride[0] + 1;
        let ow = (w - size[1]) / stride[1] + 1;
        Geo { n, h, w, c, size, stride, oh, ow }
    }

    /// Window loops: unrolled when small.
    fn window(
        &self,
        k: &mut Kernel,
        f: impl Fn(&mut Kernel, &Index, &Index) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        let kind =
            if self.size[0] * self.size[1] <= 16 { LoopKind::Unrolled } else { LoopKind::Serial };
        looped(k, self.size[0], 1, kind, |k, di| {
            looped(k, self.size[1], 1, kind, |k, dj| f(k, &di, &dj))
        })
    }

    /// The offset in `x` of window element `(di, dj)` of output `(n, oi, oj)`, channel `c`.
    fn x_at(&self, n: &Index, oi: &Index, oj: &Index, di: &Index, dj: &Index, c: &Index) -> Index {
        let row = self.w * self.c;
        let parts = [
            (n, self.h * row),
            (oi, self.stride[0] * row),
            (di, row),
            (oj, self.stride[1] * self.c),
            (dj, self.c),
            (c, 1),
        ];
        affine(&parts, 0)
    }

    /// The offset in `y` (and `g`) of output `(n, oi, oj)`, channel `c`.
    fn y_at(&self, n: &Index, oi: &Index, oj: &Index, c: &Index) -> Index {
        let row = self.ow * self.c;
        affine(&[(n, self.oh * row), (oi, row), (oj, self.c), (c, 1)], 0)
    }

    /// `max_pool2d` (`max`) or `avg_pool2d`: parallel over images or output rows (whichever
    /// is more), serial over the rest, f32x4 over channels.
    pub fn forward(&self, name: &str, max: bool, x: &Buffer, y: &Buffer) -> Vec<Kernel> {
        let area = (self.size[0] * self.size[1]) as f32;
        let body = |k: &mut Kernel, ids: &[BufId], n: &Index, oi: &Index| {
            let (xb, yb) = (ids[0], ids[1]);
            looped(k, self.ow, 1, LoopKind::Serial, |k, oj| {
                vectorised(k, self.c, |k, c, lanes| {
                    let zero_i = Index::constant(0);
                    let at = |di: &Index, dj: &Index| self.x_at(n, oi, &oj, di, dj, &c);
                    let r = reg(k, &named(if max { "m" } else { "s" }, lanes), lanes);
                    let first =
                        if max { Expr::load(xb, at(&zero_i, &zero_i), lanes) } else { zero(lanes) };
                    let mut out = vec![Stmt::Set { reg: r, index: zero_i.clone(), value: first }];
                    out.extend(self.window(k, |_, di, dj| {
                        let v = Expr::load(xb, at(di, dj), lanes);
                        // max(v, m) = v > m ? v : m keeps the first maximum (as the reference).
                        let op = if max { Binary::Max } else { Binary::Add };
                        vec![Stmt::Set {
                            reg: r,
                            index: zero_i.clone(),
                            value: v.bin(op, Expr::reg(r)),
                        }]
                    }));
                    let value = if max {
                        Expr::reg(r)
                    } else {
                        Expr::reg(r).bin(Binary::Div, splat_if(Expr::c(area), lanes))
                    };
                    out.push(Stmt::Store { buf: yb, index: self.y_at(n, oi, &oj, &c), value });
                    out
                })
            })
        };
        let kernel = if self.n >= self.oh {
            parallel_kernel(name.to_string(), &[x, y], self.n, 1, |k, ids, n| {
                looped(k, self.oh, 1, LoopKind::Serial, |k, oi| body(k, ids, &n, &oi))
            })
        } else {
            parallel_kernel(name.to_string(), &[x, y], self.oh, 1, |k, ids, oi| {
                looped(k, self.n, 1, LoopKind::Serial, |k, n| body(k, ids, &n, &oi))
            })
        };
        vec![kernel]
    }

    /// A gradient kernel: parallel over images; zeroes the image's `dx`, then runs
    /// `window(k, n, oi, oj, c, lanes)` for every output element (f32x4 over channels). `dx`
    /// is the last buffer, or with `partials` the one before it: then the image's `dx` is
    /// summed over its rows into `partials[n, :]` at the end.
    fn grad_kernel(
        &self,
        name: &str,
        bufs: &[&Buffer],
        partials: bool,
        per_output: impl Fn(&mut Kernel, &[BufId], [&Index; 4], u8) -> Vec<Stmt>,
    ) -> Kernel {
        parallel_kernel(name.to_string(), bufs, self.n, 1, |k, ids, n| {
            let dx = ids[ids.len() - 1 - usize::from(partials)];
            let image = self.h * self.w * self.c;
            let base = affine(&[(&n, image)], 0);
            let mut out = vectorised(k, image, |_, e, lanes| {
                vec![Stmt::Store {
                    buf: dx,
                    index: base.clone().plus_index(&e),
                    value: zero(lanes),
                }]
            });
            out.extend(looped(k, self.oh, 1, LoopKind::Serial, |k, oi| {
                looped(k, self.ow, 1, LoopKind::Serial, |k, oj| {
                    vectorised(k, self.c, |k, c, lanes| {
                        per_output(k, ids, [&n, &oi, &oj, &c], lanes)
                    })
                })
            }));
            if partials {
                let sums = (ids[ids.len() - 1], affine(&[(&n, self.c)], 0));
                out.extend(column_sums(k, (dx, base), sums, self.h * self.w, self.c));
            }
            out
        })
    }

    /// Scratch of `max_pool2d_grad_relu_bias`: one row of channel partials per image.
    pub fn partials_len(&self) -> usize {
        self.n * self.c
    }

    /// `max_pool2d_grad_relu_bias(x, g) -> [dx…, db…]`: the `max_pool2d_grad_relu` kernel,
    /// which also sums each image's `dx` into `partials[n, :]`, then `db = Σ_n partials[n, :]`
    /// (`.bias`). `out` holds `dx` then `db`.
    pub fn max_grad_relu_bias(
        &self,
        name: &str,
        x: &Buffer,
        g: &Buffer,
        out: &Buffer,
        partials: &Buffer,
    ) -> Vec<Kernel> {
        let numel = self.n * self.h * self.w * self.c;
        let dx = Buffer { name: out.name.clone(), offset: out.offset, len: numel };
        let db =
            Buffer { name: format!("{}.db", out.name), offset: out.offset + numel, len: self.c };
        let grad = self.max_grad_kernel(name, true, &[x, g, &dx, partials]);
        let mut sum = Kernel::new(format!("{name}.bias"));
        let (p, d) = (
            sum.buf(partials.name.clone(), partials.offset, partials.len),
            sum.buf(db.name.clone(), db.offset, db.len),
        );
        let zero_i = Index::constant(0);
        sum.body = column_sums(&mut sum, (p, zero_i.clone()), (d, zero_i), self.n, self.c);
        vec![grad, sum]
    }

    /// `max_pool2d_grad(x, g) -> dx`: per window, the maximum `m` again, then in row-major
    /// window order `dx[p] += x[p] == m && found == 0 ? g : 0` and `found |= x[p] == m`, so the
    /// gradient goes to the first maximum only.
    ///
    /// With `relu` (`max_pool2d_grad_relu`), `dx` is also masked by `x > 0`: a window's
    /// gradient lands only where `x[p] == m`, so the mask is `m > 0` and is applied once per
    /// window, to `g` (`gm = m > 0 ? g : 0`).
    pub fn max_grad(
        &self,
        name: &str,
        relu: bool,
        x: &Buffer,
        g: &Buffer,
        dx: &Buffer,
    ) -> Vec<Kernel> {
        vec![self.max_grad_kernel(name, relu, &[x, g, dx])]
    }

    /// The kernel of [`Geo::max_grad`] over `bufs` = `[x, g, dx]`, or `[x, g, dx, partials]`
    /// to also sum each image's `dx` into its channel partials.
    fn max_grad_kernel(&self, name: &str, relu: bool, bufs: &[&Buffer]) -> Kernel {
        let partials = bufs.len() == 4;
        self.grad_kernel(name, bufs, partials, |k, ids, [n, oi, oj, c], lanes| {
            let (xb, gb, db) = (ids[0], ids[1], ids[2]);
            let z = Index::constant(0);
            let at = |di: &Index, dj: &Index| self.x_at(n, oi, oj, di, dj, c);
            let m = reg(k, &named("m", lanes), lanes);
            let found = reg(k, &named("found", lanes), lanes);
            let mut out = vec![Stmt::Set {
                reg: m,
                index: z.clone(),
                value: Expr::load(xb, at(&z, &z), lanes),
            }];
            out.extend(self.window(k, |_, di, dj| {
                let v = Expr::load(xb, at(di, dj), lanes);
                vec![Stmt::Set {
                    reg: m,
                    index: z.clone(),
                    value: v.bin(Binary::Max, Expr::reg(m)),
                }]
            }));
            out.push(Stmt::Set { reg: found, index: z.clone(), value: zero(lanes) });
            let mut gv = Expr::load(gb, self.y_at(n, oi, oj, c), lanes);
            if relu {
                let gm = reg(k, &named("gm", lanes), lanes);
                let masked = Expr::select(Cmp::Gt, Expr::reg(m), zero(lanes), gv, zero(lanes));
                out.push(Stmt::Set { reg: gm, index: z.clone(), value: masked });
                gv = Expr::reg(gm);
            }
            out.extend(self.window(k, |_, di, dj| {
                let p = at(di, dj);
                let is_max = |then: Expr| {
                    Expr::select(
                        Cmp::Eq,
                        Expr::load(xb, p.clone(), lanes),
                        Expr::reg(m),
                        then,
                        zero(lanes),
                    )
                };
                let first =
                    Expr::select(Cmp::Eq, Expr::reg(found), zero(lanes), gv.clone(), zero(lanes));
                let add = Expr::load(db, p.clone(), lanes).bin(Binary::Add, is_max(first));
                let seen = Expr::reg(found).bin(Binary::Max, is_max(splat_if(Expr::c(1.0), lanes)));
                vec![
                    Stmt::Store { buf: db, index: p.clone(), value: add },
                    Stmt::Set { reg: found, index: z.clone(), value: seen },
                ]
            }));
            out
        })
    }

    /// `avg_pool2d_grad(g) -> dx`: `dx[p] += g / (size_h * size_w)` over each window.
    pub fn avg_grad(&self, name: &str, g: &Buffer, dx: &Buffer) -> Vec<Kernel> {
        let area = (self.size[0] * self.size[1]) as f32;
        vec![self.grad_kernel(name, &[g, dx], false, |k, ids, [n, oi, oj, c], lanes| {
            let (gb, db) = (ids[0], ids[1]);
            let z = Index::constant(0);
            let share = reg(k, &named("share", lanes), lanes);
            let value = Expr::load(gb, self.y_at(n, oi, oj, c), lanes)
                .bin(Binary::Div, splat_if(Expr::c(area), lanes));
            let mut out = vec![Stmt::Set { reg: share, index: z.clone(), value }];
            out.extend(self.window(k, |_, di, dj| {
                let p = self.x_at(n, oi, oj, di, dj, c);
                let value = Expr::load(db, p.clone(), lanes).bin(Binary::Add, Expr::reg(share));
                vec![Stmt::Store { buf: db, index: p, value }]
            }));
            out
        })]
    }
}
