//! The kernel IR: the loop nests that every graph node is lowered to.
//!
//! A kernel is a small imperative program over one f32 **arena** (parameters, gradients,
//! optimizer state, activations and scratch all live in it at offsets fixed by the memory
//! planner). It has:
//! - loops with static trip counts (`for i in 0..extent step s`), each serial, unrolled
//!   (the variable becomes a constant in every copy) or parallel (the outermost loop only:
//!   its iterations are split into `[begin, end)` ranges that run on different threads);
//! - affine indices (`784*i + k + 3`) into named buffers, so every access can be bounds-checked
//!   statically ([`Kernel::check`]);
//! - values of 1 or 4 lanes (f32 or f32x4), and register arrays indexed by unrolled loop
//!   variables (a GEMM tile's accumulators).
//!
//! It is the level at which tiling and vectorisation are decided (by lowering) and tested (by
//! [`eval`], which runs a kernel in plain Rust with the same f32 semantics as generated code).
//! [`print`] gives its text form (`kiln dump --stage kernels`).

pub mod eval;
pub mod print;

use std::fmt;

/// A loop variable of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u32);

/// A register array of a kernel (most have one element).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reg(pub u32);

/// A buffer of a kernel: an index into [`Kernel::bufs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufId(pub u32);

/// A region of the arena that a kernel reads or writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// A readable name (the graph node it holds).
    pub name: String,
    /// First element, in f32 elements from the start of the arena.
    pub offset: usize,
    /// Number of f32 elements.
    pub len: usize,
}

impl Buffer {
    /// The arena range it occupies.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// A register array: `count` registers of `lanes` lanes each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegDecl {
    /// A readable name.
    pub name: String,
    /// 1 (f32) or 4 (f32x4).
    pub lanes: u8,
    /// Number of registers in the array.
    pub count: u32,
}

/// An affine index: `constant + Σ coefficient * variable`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Index {
    /// The constant term.
    pub constant: i64,
    /// `(variable, coefficient)` terms, at most one per variable.
    pub terms: Vec<(Var, i64)>,
}

impl Index {
    /// A constant index.
    pub fn constant(c: i64) -> Self {
        Index { constant: c, terms: Vec::new() }
    }

    /// `coefficient * var`.
    pub fn var(var: Var, coefficient: i64) -> Self {
        Index { constant: 0, terms: vec![(var, coefficient)] }
    }

    /// `self + coefficient * var` (terms of the same variable are merged).
    pub fn plus_var(mut self, var: Var, coefficient: i64) -> Self {
        match self.terms.iter_mut().find(|(v, _)| *v == var) {
            Some((_, c)) => *c += coefficient,
            None => self.terms.push((var, coefficient)),
        }
        self.terms.retain(|&(_, c)| c != 0);
        self
    }

    /// `self + c`.
    pub fn plus(mut self, c: i64) -> Self {
        self.constant += c;
        self
    }

    /// `self + other`.
    pub fn plus_index(self, other: &Index) -> Self {
        let mut out = self.plus(other.constant);
        for &(v, c) in &other.terms {
            out = out.plus_var(v, c);
        }
        out
    }

    /// The value for the given variable values.
    pub fn value(&self, env: &impl Fn(Var) -> i64) -> i64 {
        self.constant + self.terms.iter().map(|&(v, c)| c * env(v)).sum::<i64>()
    }
}

/// Lane-wise unary functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    /// `-x`.
    Neg,
    /// `e^x` (generated code: a polynomial, ~1 ulp).
    Exp,
    /// Natural logarithm.
    Log,
    /// Square root.
    Sqrt,
    /// Hyperbolic tangent.
    Tanh,
}

/// Lane-wise binary functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
    /// `a > b ? a : b`.
    Max,
    /// `a < b ? a : b`.
    Min,
}

/// Comparisons used by [`Expr::Select`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `a > b`.
    Gt,
    /// `a >= b`.
    Ge,
    /// `a < b`.
    Lt,
    /// `a == b`.
    Eq,
}

/// A value of 1 or 4 lanes.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A scalar constant.
    Const(f32),
    /// `lanes` consecutive elements of a buffer, starting at `index`.
    Load {
        /// The buffer.
        buf: BufId,
        /// The first element.
        index: Index,
        /// 1 or 4.
        lanes: u8,
    },
    /// The current value of a register (`index` must be constant once unrolled loops are
    /// expanded).
    Reg(Reg, Index),
    /// A scalar repeated in 4 lanes.
    Splat(Box<Expr>),
    /// A lane-wise unary function.
    Unary(Unary, Box<Expr>),
    /// A lane-wise binary function of values of equal lanes.
    Binary(Binary, Box<Expr>, Box<Expr>),
    /// `a * b + c`, fused (one rounding).
    Fma(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `a cmp b ? then : otherwise`, lane-wise.
    Select {
        /// The comparison.
        cmp: Cmp,
        /// Left side.
        a: Box<Expr>,
        /// Right side.
        b: Box<Expr>,
        /// Value where the comparison holds.
        then: Box<Expr>,
        /// Value where it does not.
        otherwise: Box<Expr>,
    },
    /// The sum of the 4 lanes, as `(l0 + l1) + (l2 + l3)`.
    HorizontalSum(Box<Expr>),
    /// The value of an index, as f32 (e.g. a class id compared with a label).
    IndexValue(Index),
    /// `kiln_ir::ops::counter_uniform(seed, step, index)` as f32: a uniform number in [0, 1).
    Uniform {
        /// The random op's seed.
        seed: u64,
        /// The element's index.
        index: Index,
    },
    /// A standard normal number for element `index`: Box–Muller on the uniforms of elements
    /// `2 index` and `2 index + 1`, as `kiln_ir::ops::GaussianNoise` draws them.
    Normal {
        /// The random op's seed.
        seed: u64,
        /// The element's index.
        index: Index,
    },
}

impl Expr {
    /// A scalar constant.
    pub fn c(v: f32) -> Expr {
        Expr::Const(v)
    }

    /// A load of `lanes` elements.
    pub fn load(buf: BufId, index: Index, lanes: u8) -> Expr {
        Expr::Load { buf, index, lanes }
    }

    /// A register read (element 0 of its array).
    pub fn reg(r: Reg) -> Expr {
        Expr::Reg(r, Index::constant(0))
    }

    /// `op(self, other)`.
    pub fn bin(self, op: Binary, other: Expr) -> Expr {
        Expr::Binary(op, Box::new(self), Box::new(other))
    }

    /// `op(self)`.
    pub fn un(self, op: Unary) -> Expr {
        Expr::Unary(op, Box::new(self))
    }

    /// `self` in 4 lanes.
    pub fn splat(self) -> Expr {
        Expr::Splat(Box::new(self))
    }

    /// `self * b + c`.
    pub fn fma(self, b: Expr, c: Expr) -> Expr {
        Expr::Fma(Box::new(self), Box::new(b), Box::new(c))
    }

    /// `a cmp b ? then : otherwise`.
    pub fn select(cmp: Cmp, a: Expr, b: Expr, then: Expr, otherwise: Expr) -> Expr {
        Expr::Select {
            cmp,
            a: Box::new(a),
            b: Box::new(b),
            then: Box::new(then),
            otherwise: Box::new(otherwise),
        }
    }
}

/// How a loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopKind {
    /// One iteration after another.
    Serial,
    /// Expanded at compile time: the variable is a constant in each copy.
    Unrolled,
    /// The kernel's outermost loop, split over threads by `[begin, end)` iteration ranges.
    Parallel,
}

/// A statement of a kernel.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `for var in (0..extent).step_by(step) { body }`.
    For {
        /// The loop variable.
        var: Var,
        /// Exclusive upper bound of the variable.
        extent: usize,
        /// Increment (≥ 1).
        step: usize,
        /// Serial, unrolled or parallel.
        kind: LoopKind,
        /// The loop body.
        body: Vec<Stmt>,
    },
    /// `reg[index] = value`.
    Set {
        /// The register array.
        reg: Reg,
        /// Which register (constant once unrolled).
        index: Index,
        /// The new value (lanes as declared).
        value: Expr,
    },
    /// Stores `value` (1 or 4 lanes) at `buf[index..]`.
    Store {
        /// The buffer.
        buf: BufId,
        /// The first element written.
        index: Index,
        /// The value stored.
        value: Expr,
    },
}

/// One kernel: a loop nest over arena buffers, compiled to one function
/// `extern "C" fn(arena: *mut f32, begin: u64, end: u64, step: u64)`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Kernel {
    /// A readable name (the graph node it computes).
    pub name: String,
    /// The buffers it reads and writes.
    pub bufs: Vec<Buffer>,
    /// Its register arrays.
    pub regs: Vec<RegDecl>,
    /// Number of loop variables used (`Var(0)..Var(vars)`).
    pub vars: u32,
    /// The statements.
    pub body: Vec<Stmt>,
}

/// A problem found by [`Kernel::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelError {
    /// The kernel's name.
    pub kernel: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel `{}`: {}", self.kernel, self.message)
    }
}

impl std::error::Error for KernelError {}

impl Kernel {
    /// A new, empty kernel.
    pub fn new(name: impl Into<String>) -> Self {
        Kernel { name: name.into(), ..Default::default() }
    }

    /// Declares a buffer.
    pub fn buf(&mut self, name: impl Into<String>, offset: usize, len: usize) -> BufId {
        self.bufs.push(Buffer { name: name.into(), offset, len });
        BufId(self.bufs.len() as u32 - 1)
    }

    /// Declares a register array.
    pub fn reg(&mut self, name: impl Into<String>, lanes: u8, count: u32) -> Reg {
        self.regs.push(RegDecl { name: name.into(), lanes, count });
        Reg(self.regs.len() as u32 - 1)
    }

    /// A fresh loop variable.
    pub fn var(&mut self) -> Var {
        self.vars += 1;
        Var(self.vars - 1)
    }

    /// The number of `[begin, end)` units of work: the iteration count of the outermost
    /// parallel loop, or 1 when the kernel has none.
    pub fn work_items(&self) -> usize {
        match self.body.as_slice() {
            [Stmt::For { kind: LoopKind::Parallel, extent, step, .. }] => extent.div_ceil(*step),
            _ => 1,
        }
    }

    /// Checks lanes, register use, loop kinds and that every load and store stays inside its
    /// buffer for every value of the loop variables: generated code never reads or writes
    /// outside the arena.
    pub fn check(&self) -> Result<(), KernelError> {
        let err = |message: String| KernelError { kernel: self.name.clone(), message };
        for (i, s) in self.body.iter().enumerate() {
            if let Stmt::For { kind: LoopKind::Parallel, .. } = s {
                if self.body.len() != 1 || i != 0 {
                    return Err(err("a parallel loop must be the kernel's only statement".into()));
                }
            }
        }
        let mut ranges: Vec<Option<(i64, i64, bool)>> = vec![None; self.vars as usize];
        self.check_stmts(&self.body, &mut ranges, true).map_err(err)
    }

    fn check_stmts(
        &self,
        stmts: &[Stmt],
        ranges: &mut Vec<Option<(i64, i64, bool)>>,
        top: bool,
    ) -> Result<(), String> {
        for s in stmts {
            match s {
                Stmt::For { var, extent, step, kind, body } => {
                    if *step == 0 || *extent == 0 {
                        return Err(format!(
                            "loop over v{} has extent {extent} step {step}",
                            var.0
                        ));
                    }
                    if *kind == LoopKind::Parallel && !top {
                        return Err("a parallel loop must be outermost".into());
                    }
                    let slot = ranges
                        .get_mut(var.0 as usize)
                        .ok_or_else(|| format!("v{} is not declared", var.0))?;
                    if slot.is_some() {
                        return Err(format!("v{} is bound twice", var.0));
                    }
                    let last = ((extent - 1) / step * step) as i64;
                    *slot = Some((0, last, *kind == LoopKind::Unrolled));
                    self.check_stmts(body, ranges, false)?;
                    ranges[var.0 as usize] = None;
                }
                Stmt::Set { reg, index, value } => {
                    let decl = self.reg_decl(*reg)?;
                    self.check_reg_index(*reg, index, ranges)?;
                    let lanes = self.lanes(value, ranges)?;
                    if lanes != decl.lanes {
                        return Err(format!(
                            "{} has {} lane(s) but is set to a {lanes}-lane value",
                            decl.name, decl.lanes
                        ));
                    }
                }
                Stmt::Store { buf, index, value } => {
                    let lanes = self.lanes(value, ranges)?;
                    self.check_access(*buf, index, lanes, ranges)?;
                }
            }
        }
        Ok(())
    }

    fn reg_decl(&self, reg: Reg) -> Result<&RegDecl, String> {
        self.regs.get(reg.0 as usize).ok_or_else(|| format!("register r{} is not declared", reg.0))
    }

    /// The smallest and largest value of an index over the current loop ranges.
    fn bounds(index: &Index, ranges: &[Option<(i64, i64, bool)>]) -> Result<(i64, i64), String> {
        let (mut lo, mut hi) = (index.constant, index.constant);
        for &(v, c) in &index.terms {
            let (a, b, _) = ranges
                .get(v.0 as usize)
                .copied()
                .flatten()
                .ok_or_else(|| format!("v{} is used outside its loop", v.0))?;
            let (x, y) = (c * a, c * b);
            lo += x.min(y);
            hi += x.max(y);
        }
        Ok((lo, hi))
    }

    fn check_reg_index(
        &self,
        reg: Reg,
        index: &Index,
        ranges: &[Option<(i64, i64, bool)>],
    ) -> Result<(), String> {
        let decl = self.reg_decl(reg)?;
        for &(v, _) in &index.terms {
            if !matches!(ranges.get(v.0 as usize), Some(Some((_, _, true)))) {
                return Err(format!("{} is indexed by v{}, which is not unrolled", decl.name, v.0));
            }
        }
        let (lo, hi) = Self::bounds(index, ranges)?;
        if lo < 0 || hi >= decl.count as i64 {
            return Err(format!(
                "{}[{lo}..={hi}] is outside its {} registers",
                decl.name, decl.count
            ));
        }
        Ok(())
    }

    fn check_access(
        &self,
        buf: BufId,
        index: &Index,
        lanes: u8,
        ranges: &[Option<(i64, i64, bool)>],
    ) -> Result<(), String> {
        let b = self
            .bufs
            .get(buf.0 as usize)
            .ok_or_else(|| format!("buffer b{} is not declared", buf.0))?;
        let (lo, hi) = Self::bounds(index, ranges)?;
        if lo < 0 || hi + lanes as i64 > b.len as i64 {
            return Err(format!(
                "access {}[{lo}..{}] is outside the buffer of {} elements",
                b.name,
                hi + lanes as i64,
                b.len
            ));
        }
        Ok(())
    }

    /// The lanes of a value, checking its parts.
    fn lanes(&self, e: &Expr, ranges: &[Option<(i64, i64, bool)>]) -> Result<u8, String> {
        let same = |a: u8, b: u8, what: &str| {
            if a == b {
                Ok(a)
            } else {
                Err(format!("{what} of {a}-lane and {b}-lane values"))
            }
        };
        match e {
            Expr::Const(_) | Expr::IndexValue(_) | Expr::Uniform { .. } | Expr::Normal { .. } => {
                if let Expr::IndexValue(i)
                | Expr::Uniform { index: i, .. }
                | Expr::Normal { index: i, .. } = e
                {
                    Self::bounds(i, ranges)?;
                }
                Ok(1)
            }
            Expr::Load { buf, index, lanes } => {
                if *lanes != 1 && *lanes != 4 {
                    return Err(format!("a load of {lanes} lanes"));
                }
                self.check_access(*buf, index, *lanes, ranges)?;
                Ok(*lanes)
            }
            Expr::Reg(r, index) => {
                self.check_reg_index(*r, index, ranges)?;
                Ok(self.reg_decl(*r)?.lanes)
            }
            Expr::Splat(x) => match self.lanes(x, ranges)? {
                1 => Ok(4),
                n => Err(format!("splat of a {n}-lane value")),
            },
            Expr::Unary(_, x) => self.lanes(x, ranges),
            Expr::Binary(_, a, b) => {
                same(self.lanes(a, ranges)?, self.lanes(b, ranges)?, "binary op")
            }
            Expr::Fma(a, b, c) => {
                let ab = same(self.lanes(a, ranges)?, self.lanes(b, ranges)?, "fma")?;
                same(ab, self.lanes(c, ranges)?, "fma")
            }
            Expr::Select { a, b, then, otherwise, .. } => {
                let cmp = same(self.lanes(a, ranges)?, self.lanes(b, ranges)?, "comparison")?;
                let val =
                    same(self.lanes(then, ranges)?, self.lanes(otherwise, ranges)?, "select")?;
                same(cmp, val, "select")
            }
            Expr::HorizontalSum(x) => match self.lanes(x, ranges)? {
                4 => Ok(1),
                n => Err(format!("horizontal sum of a {n}-lane value")),
            },
        }
    }
}
