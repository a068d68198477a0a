//! The loop-nest shapes every pointwise kernel is built from: maps over strided views,
//! contiguous runs vectorised by 4 with scalar tails, and fixed-order row sums.

use crate::kernel::{Binary, BufId, Buffer, Expr, Index, Kernel, LoopKind, Reg, Stmt, Var};

/// Outputs with fewer elements than this run as one work item (no parallel loop).
pub(super) const PAR_MIN: usize = 4096;

/// Elements per work item when a map is a single long run.
pub(super) const CHUNK: usize = 256;

/// Declares `b` in `k`.
pub(super) fn declare(k: &mut Kernel, b: &Buffer) -> BufId {
    k.buf(b.name.clone(), b.offset, b.len)
}

/// `v` in `lanes` lanes.
pub(super) fn splat_const(v: f32, lanes: u8) -> Expr {
    lanes_of(Expr::c(v), lanes)
}

/// A scalar value in `lanes` lanes.
pub(super) fn lanes_of(e: Expr, lanes: u8) -> Expr {
    if lanes == 4 {
        e.splat()
    } else {
        e
    }
}

/// `s * i`.
pub(super) fn scaled(i: &Index, s: i64) -> Index {
    Index {
        constant: i.constant * s,
        terms: if s == 0 { Vec::new() } else { i.terms.iter().map(|&(v, c)| (v, c * s)).collect() },
    }
}

/// `base + Σ strides[i] * vars[i]`.
pub(super) fn affine(base: i64, strides: &[i64], vars: &[Var]) -> Index {
    strides.iter().zip(vars).fold(Index::constant(base), |i, (&s, &v)| i.plus_var(v, s))
}

/// Row-major strides of `dims`.
pub(super) fn row_major(dims: &[usize]) -> Vec<i64> {
    let mut strides = vec![1i64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1] as i64;
    }
    strides
}

/// `for var in (0..extent).step_by(step) { body }`.
pub(super) fn for_loop(
    var: Var,
    extent: usize,
    step: usize,
    kind: LoopKind,
    body: Vec<Stmt>,
) -> Stmt {
    Stmt::For { var, extent, step, kind, body }
}

/// `reg[0] = value`.
pub(super) fn set(reg: Reg, value: Expr) -> Stmt {
    Stmt::Set { reg, index: Index::constant(0), value }
}

/// `reg[u] = value` for an unrolled `u`.
pub(super) fn set_at(reg: Reg, u: Var, value: Expr) -> Stmt {
    Stmt::Set { reg, index: Index::var(u, 1), value }
}

/// `buf[index..] = value`.
pub(super) fn store(buf: BufId, index: Index, value: Expr) -> Stmt {
    Stmt::Store { buf, index, value }
}

/// Loops over `dims` (outermost first, each from 0 with step 1) around `body(vars)`; the
/// outermost is the kernel's parallel loop when `parallel` is set.
pub(super) fn nest(
    k: &mut Kernel,
    dims: &[usize],
    parallel: bool,
    body: impl FnOnce(&mut Kernel, &[Var]) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let vars: Vec<Var> = dims.iter().map(|_| k.var()).collect();
    let mut stmts = body(k, &vars);
    for (i, (&d, &v)) in dims.iter().zip(&vars).enumerate().rev() {
        let kind = if i == 0 && parallel { LoopKind::Parallel } else { LoopKind::Serial };
        stmts = vec![for_loop(v, d, 1, kind, stmts)];
    }
    stmts
}

/// `body(offset + i)` for `i < extent` in a serial loop, or once with a constant index when
/// `extent` is 1.
pub(super) fn serial(
    k: &mut Kernel,
    extent: usize,
    offset: i64,
    body: impl FnOnce(&mut Kernel, &Index) -> Vec<Stmt>,
) -> Vec<Stmt> {
    if extent == 1 {
        return body(k, &Index::constant(offset));
    }
    let i = k.var();
    let stmts = body(k, &Index::var(i, 1).plus(offset));
    vec![for_loop(i, extent, 1, LoopKind::Serial, stmts)]
}

/// The statements for a contiguous run of `d` elements: `elem(k, offset, lanes)` gives the
/// statements for the `lanes` elements at `offset` (an index relative to the run's start).
///
/// With `vector`: f32x4 steps, 4 per iteration (an unrolled loop) while at least 32 elements
/// remain, then single f32x4 steps, then a scalar tail for `d % 4`. Each part is its own loop,
/// so every index is statically in bounds.
pub(super) fn run(
    k: &mut Kernel,
    d: usize,
    vector: bool,
    elem: &mut dyn FnMut(&mut Kernel, &Index, u8) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let mut out = Vec::new();
    let (n16, n4) = if vector && d >= 4 {
        let n16 = if d >= 32 { d / 16 * 16 } else { 0 };
        (n16, (d - n16) / 4 * 4)
    } else {
        (0, 0)
    };
    if n16 > 0 {
        let (i, u) = (k.var(), k.var());
        let body = elem(k, &Index::var(i, 1).plus_var(u, 4), 4);
        out.push(for_loop(
            i,
            n16,
            16,
            LoopKind::Serial,
            vec![for_loop(u, 4, 1, LoopKind::Unrolled, body)],
        ));
    }
    let tail = d - n16 - n4;
    for (offset, extent, lanes) in [(n16, n4, 4u8), (n16 + n4, tail, 1)] {
        if extent == 0 {
            continue;
        }
        if extent == lanes as usize {
            out.extend(elem(k, &Index::constant(offset as i64), lanes));
        } else {
            let i = k.var();
            let body = elem(k, &Index::var(i, 1).plus(offset as i64), lanes);
            out.push(for_loop(i, extent, lanes as usize, LoopKind::Serial, body));
        }
    }
    out
}

/// One term of a [`sum_run`]: `(statements to run first, value)` for the `lanes` elements at
/// an offset of the run.
pub(super) type TermFn<'f> = dyn FnMut(&mut Kernel, &Index, u8) -> (Vec<Stmt>, Expr) + 'f;

/// Statements leaving in the returned register the sum of `term(offset, lanes)` over a run of
/// `d` elements (`term` also gives statements to run before each term is added).
///
/// The order is fixed by `d` alone: four f32x4 accumulators over blocks of 16 elements,
/// single f32x4 steps into the first one, `hsum((a0 + a1) + (a2 + a3))`, then the scalar tail
/// in order.
pub(super) fn sum_run(k: &mut Kernel, d: usize, term: &mut TermFn<'_>) -> (Vec<Stmt>, Reg) {
    let sum = k.reg("sum", 1, 1);
    let mut out = Vec::new();
    let n16 = if d >= 32 { d / 16 * 16 } else { 0 };
    let n4 = (d - n16) / 4 * 4;
    if n16 + n4 > 0 {
        let acc = k.reg("acc", 4, 4);
        let u = k.var();
        out.push(for_loop(u, 4, 1, LoopKind::Unrolled, vec![set_at(acc, u, splat_const(0.0, 4))]));
        let acc_at = |u: Var| Expr::Reg(acc, Index::var(u, 1));
        if n16 > 0 {
            let (i, u) = (k.var(), k.var());
            let (mut body, e) = term(k, &Index::var(i, 1).plus_var(u, 4), 4);
            body.push(set_at(acc, u, acc_at(u).bin(Binary::Add, e)));
            let inner = for_loop(u, 4, 1, LoopKind::Unrolled, body);
            out.push(for_loop(i, n16, 16, LoopKind::Serial, vec![inner]));
        }
        if n4 > 0 {
            let i = k.var();
            let (mut body, e) = term(k, &Index::var(i, 1).plus(n16 as i64), 4);
            body.push(set(acc, Expr::reg(acc).bin(Binary::Add, e)));
            out.push(for_loop(i, n4, 4, LoopKind::Serial, body));
        }
        let a = |j: i64| Expr::Reg(acc, Index::constant(j));
        let total = a(0).bin(Binary::Add, a(1)).bin(Binary::Add, a(2).bin(Binary::Add, a(3)));
        out.push(set(sum, Expr::HorizontalSum(Box::new(total))));
    } else {
        out.push(set(sum, Expr::c(0.0)));
    }
    let tail = d - n16 - n4;
    if tail > 0 {
        out.extend(serial(k, tail, (n16 + n4) as i64, |k, i| {
            let (mut body, e) = term(k, i, 1);
            body.push(set(sum, Expr::reg(sum).bin(Binary::Add, e)));
            body
        }));
    }
    (out, sum)
}

/// Scalar registers holding intermediate values of one element's computation, so that an
/// expensive sub-expression (an `exp`) is computed once.
pub(super) struct Lets<'k> {
    k: &'k mut Kernel,
    stmts: Vec<Stmt>,
}

impl Lets<'_> {
    /// A register set to `e` (of `lanes` lanes) before the element's store.
    pub(super) fn bind(&mut self, e: Expr, lanes: u8) -> Expr {
        let r = self.k.reg(format!("t{}", self.k.regs.len()), lanes, 1);
        self.stmts.push(set(r, e));
        Expr::reg(r)
    }
}

/// The value of one output element of a map: `f(lets, operands, output index, lanes)`, the
/// operands in the order they were added, each of `lanes` lanes. The output index is relative
/// to the output buffer (the element's flat index for a contiguous output).
pub(super) type ElemFn<'f> = dyn Fn(&mut Lets<'_>, &[Expr], &Index, u8) -> Expr + 'f;

/// A strided view of a buffer: element `i` (a multi-index over the map's loops) is at
/// `base + Σ strides · i`.
#[derive(Clone, Debug)]
struct Access {
    buf: BufId,
    base: i64,
    strides: Vec<i64>,
}

/// An operand of a map.
#[derive(Clone, Debug)]
enum Src {
    Mem(Access),
    Const(f32),
}

/// An operand as seen by one kernel's innermost loop.
enum Operand {
    Const(f32),
    /// Loop-invariant in the innermost loop: loaded once into a register, splat when needed.
    Reg(Reg),
    /// `buf[outer + stride * inner]`.
    Mem(BufId, Index, i64),
}

impl Operand {
    fn expr(&self, inner: &Index, lanes: u8) -> Expr {
        match self {
            Operand::Const(v) => splat_const(*v, lanes),
            Operand::Reg(r) => lanes_of(Expr::reg(*r), lanes),
            Operand::Mem(buf, outer, s) => {
                Expr::load(*buf, outer.clone().plus_index(&scaled(inner, *s)), lanes)
            }
        }
    }
}

/// A map: one output element per point of a loop nest, from operands read through strided
/// views (see the module docs of [`super`]).
#[derive(Clone, Debug)]
pub(super) struct Map {
    name: String,
    bufs: Vec<Buffer>,
    dims: Vec<usize>,
    out: Access,
    srcs: Vec<Src>,
    vector: bool,
}

impl Map {
    /// A map over `dims` writing `out[base + Σ strides · i]`.
    pub(super) fn new(name: &str, out: Buffer, base: i64, dims: &[usize], strides: &[i64]) -> Map {
        let mut m = Map {
            name: name.to_string(),
            bufs: Vec::new(),
            dims: dims.to_vec(),
            out: Access { buf: BufId(0), base, strides: strides.to_vec() },
            srcs: Vec::new(),
            vector: true,
        };
        m.out.buf = m.declare(out);
        m
    }

    /// A map over a whole contiguous output of `dims`.
    pub(super) fn dense(name: &str, out: Buffer, dims: &[usize]) -> Map {
        Map::new(name, out, 0, dims, &row_major(dims))
    }

    fn declare(&mut self, b: Buffer) -> BufId {
        match self.bufs.iter().position(|x| *x == b) {
            Some(i) => BufId(i as u32),
            None => {
                self.bufs.push(b);
                BufId(self.bufs.len() as u32 - 1)
            }
        }
    }

    /// Adds an operand read at `buf[base + Σ strides · i]`.
    pub(super) fn read(&mut self, buf: Buffer, base: i64, strides: &[i64]) -> &mut Map {
        let buf = self.declare(buf);
        self.srcs.push(Src::Mem(Access { buf, base, strides: strides.to_vec() }));
        self
    }

    /// Adds a constant operand.
    pub(super) fn constant(&mut self, v: f32) -> &mut Map {
        self.srcs.push(Src::Const(v));
        self
    }

    /// Adds operand `i` of the node: inlined when it is a constant, else read through
    /// `strides` (use 0 strides for a broadcast scalar).
    pub(super) fn operand(&mut self, cx: &super::Cx<'_>, i: usize, strides: &[i64]) -> &mut Map {
        match cx.constant(i) {
            Some(v) => self.constant(v),
            None => self.read(cx.input(i), 0, strides),
        }
    }

    /// Only 1-lane values (for expressions that have no 4-lane form, e.g. random numbers).
    pub(super) fn scalar(&mut self) -> &mut Map {
        self.vector = false;
        self
    }

    fn accesses_mut(&mut self) -> impl Iterator<Item = &mut Access> {
        std::iter::once(&mut self.out).chain(self.srcs.iter_mut().filter_map(|s| match s {
            Src::Mem(a) => Some(a),
            Src::Const(_) => None,
        }))
    }

    /// The same map with loops of extent 1 removed and adjacent loops merged where every view
    /// is contiguous across them; at least one loop.
    fn simplified(&self) -> Map {
        let mut m = self.clone();
        let old = m.dims.clone();
        m.dims.clear();
        for a in m.accesses_mut() {
            a.strides.clear();
        }
        let all: Vec<Vec<i64>> = {
            let mut s = vec![self.out.strides.clone()];
            s.extend(self.srcs.iter().filter_map(|s| match s {
                Src::Mem(a) => Some(a.strides.clone()),
                Src::Const(_) => None,
            }));
            s
        };
        for (i, &d) in old.iter().enumerate() {
            if d == 1 {
                continue;
            }
            let merge = !m.dims.is_empty()
                && m.accesses_mut()
                    .zip(&all)
                    .all(|(a, s)| a.strides.last() == Some(&(s[i] * d as i64)));
            if merge {
                *m.dims.last_mut().expect("not empty") *= d;
                for (a, s) in m.accesses_mut().zip(&all) {
                    *a.strides.last_mut().expect("not empty") = s[i];
                }
            } else {
                m.dims.push(d);
                for (a, s) in m.accesses_mut().zip(&all) {
                    a.strides.push(s[i]);
                }
            }
        }
        if m.dims.is_empty() {
            m.dims.push(1);
            for a in m.accesses_mut() {
                a.strides.push(0);
            }
        }
        m
    }

    /// The kernels: one, its outermost loop parallel when the output has at least [`PAR_MIN`]
    /// elements; a single long run is cut into work items of [`CHUNK`] elements and its
    /// remainder goes to a second, serial kernel.
    pub(super) fn emit(&self, f: &ElemFn<'_>) -> Vec<Kernel> {
        if self.dims.contains(&0) {
            return Vec::new();
        }
        let m = self.simplified();
        let total: usize = m.dims.iter().product();
        if total < PAR_MIN {
            return vec![m.kernel(false, f)];
        }
        if m.dims.len() >= 2 {
            return vec![m.kernel(true, f)];
        }
        let n = m.dims[0];
        let full = n / CHUNK * CHUNK;
        let mut main = m.clone();
        main.dims = vec![n / CHUNK, CHUNK];
        for a in main.accesses_mut() {
            let s = a.strides[0];
            a.strides = vec![s * CHUNK as i64, s];
        }
        let mut kernels = vec![main.kernel(true, f)];
        if full < n {
            let mut rest = m.clone();
            rest.dims = vec![n - full];
            for a in rest.accesses_mut() {
                a.base += a.strides[0] * full as i64;
            }
            kernels.push(rest.kernel(false, f));
        }
        kernels
    }

    fn kernel(&self, parallel: bool, f: &ElemFn<'_>) -> Kernel {
        let mut k = Kernel::new(self.name.clone());
        k.bufs = self.bufs.clone();
        let m = self.dims.len();
        let d = self.dims[m - 1];
        let body = nest(&mut k, &self.dims[..m - 1], parallel, |k, vars| {
            let mut pre = Vec::new();
            let operands: Vec<Operand> = self
                .srcs
                .iter()
                .enumerate()
                .map(|(j, s)| match s {
                    Src::Const(v) => Operand::Const(*v),
                    Src::Mem(a) => {
                        let outer = affine(a.base, &a.strides[..m - 1], vars);
                        let s = a.strides[m - 1];
                        if s == 0 && d > 1 {
                            let r = k.reg(format!("x{j}"), 1, 1);
                            pre.push(set(r, Expr::load(a.buf, outer, 1)));
                            Operand::Reg(r)
                        } else {
                            Operand::Mem(a.buf, outer, s)
                        }
                    }
                })
                .collect();
            let out_outer = affine(self.out.base, &self.out.strides[..m - 1], vars);
            let so = self.out.strides[m - 1];
            let vector = self.vector
                && so == 1
                && operands.iter().all(|o| !matches!(o, Operand::Mem(_, _, s) if *s != 1));
            pre.extend(run(k, d, vector, &mut |k, inner, lanes| {
                let values: Vec<Expr> = operands.iter().map(|o| o.expr(inner, lanes)).collect();
                let index = out_outer.clone().plus_index(&scaled(inner, so));
                let mut lets = Lets { k, stmts: Vec::new() };
                let value = f(&mut lets, &values, &index, lanes);
                let mut stmts = lets.stmts;
                stmts.push(store(self.out.buf, index, value));
                stmts
            }));
            pre
        });
        k.body = body;
        k
    }
}
