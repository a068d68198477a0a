//! Translation of one kernel into one Cranelift function, independent of the module that
//! compiles it (JIT or object file).
//!
//! Code shape:
//! - signature `(arena: i64, begin: i64, end: i64, step: i64)`, no result;
//! - serial loops are top-tested (`header(v)`: `brif v < extent, body, exit`; the body ends
//!   with `jump header(v + step)`); unrolled loops are expanded with their variable as a
//!   compile-time constant; the parallel loop runs `v` from `begin * step` to `end * step`;
//! - registers are `Variable`s (one per element), zero at entry: the SSA builder turns those
//!   live around a loop into block parameters of its header;
//! - `buf[idx]` is at `arena + 4 (offset + idx)`: the constant part goes into the memory
//!   access's immediate; the variable part `arena + Σ 4 c v` is built in order of loop depth
//!   with each prefix cached while it dominates the code, and the prefix over the variables of
//!   enclosing loops is computed before a loop starts (loop-invariant code motion by hand,
//!   since kernels compile at `opt_level = "none"`).

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, BlockArg, Function, InstBuilder, MemFlagsData, Signature, Type, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::Module;

use super::{math, random};
use crate::kernel::{Binary, Cmp, Expr, Index, Kernel, LoopKind, Stmt, Unary, Var};

/// The signature of every kernel: `(arena: *mut f32, begin: u64, end: u64, step: u64)`.
pub fn kernel_signature(module: &dyn Module) -> Signature {
    let mut sig = module.make_signature();
    sig.params.extend([AbiParam::new(types::I64); 4]);
    sig
}

/// Builds the body of `func` (which must have [`kernel_signature`]) from `kernel`, which must
/// pass [`Kernel::check`]. Imports (`logf`, `cosf` for normal numbers) are declared in `module`.
pub fn translate(
    module: &mut dyn Module,
    kernel: &Kernel,
    func: &mut Function,
    fctx: &mut FunctionBuilderContext,
) -> Result<(), String> {
    let mut b = FunctionBuilder::new(func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let params = b.block_params(entry).to_vec();
    let mut t = Translator {
        b,
        kernel,
        arena: params[0],
        vars: vec![Binding::Unbound; kernel.vars as usize],
        depth: 0,
        regs: Vec::new(),
        keys: HashMap::new(),
        libm: None,
        addresses: vec![HashMap::new()],
    };
    t.function(module, params[1], params[2], params[3])?;
    let frontend_config = module.target_config();
    t.b.finalize(frontend_config);
    Ok(())
}

/// What a loop variable is at the current point of the translation.
#[derive(Clone, Copy, Debug)]
enum Binding {
    /// Outside its loop.
    Unbound,
    /// In an unrolled copy.
    Const(i64),
    /// A value of a serial or parallel loop at the given loop depth (1 = outermost).
    Runtime(Value, usize),
}

/// Key of a cached address: `(variable's value, byte coefficient)` terms in order of loop
/// depth.
type AddressKey = Vec<(Value, i64)>;

struct Translator<'a, 'f> {
    b: FunctionBuilder<'f>,
    kernel: &'a Kernel,
    /// The arena pointer.
    arena: Value,
    vars: Vec<Binding>,
    /// Number of runtime loops around the current point.
    depth: usize,
    /// One variable per register element.
    regs: Vec<Vec<Variable>>,
    /// The stream key of each random seed (computed in the entry block).
    keys: HashMap<u64, Value>,
    libm: Option<random::Libm>,
    /// `arena + Σ 4 c v` already computed, one map per enclosing loop body (innermost last):
    /// values of an outer map dominate the current point.
    addresses: Vec<HashMap<AddressKey, Value>>,
}

/// A runtime term of an index: `(variable, coefficient, value, loop depth)`.
type Term = (Var, i64, Value, usize);

fn err(message: impl Into<String>) -> String {
    message.into()
}

impl Translator<'_, '_> {
    /// From the entry block on: registers, random keys, then the body.
    fn function(
        &mut self,
        module: &mut dyn Module,
        begin: Value,
        end: Value,
        step: Value,
    ) -> Result<(), String> {
        let (mut zero1, mut zero4) = (None, None);
        for decl in &self.kernel.regs {
            let (ty, zero) = match decl.lanes {
                1 => (types::F32, *zero1.get_or_insert_with(|| self.b.ins().f32const(0.0))),
                4 => (types::F32X4, *zero4.get_or_insert_with(|| math::f32x4(&mut self.b, 0.0))),
                n => return Err(format!("register {} has {n} lanes", decl.name)),
            };
            let vars = (0..decl.count)
                .map(|_| {
                    let v = self.b.declare_var(ty);
                    self.b.def_var(v, zero);
                    v
                })
                .collect();
            self.regs.push(vars);
        }

        let mut seeds = Vec::new();
        let mut normal = false;
        visit_exprs(&self.kernel.body, &mut |e| match e {
            Expr::Uniform { seed, .. } => seeds.push(*seed),
            Expr::Normal { seed, .. } => {
                seeds.push(*seed);
                normal = true;
            }
            _ => {}
        });
        for seed in seeds {
            if !self.keys.contains_key(&seed) {
                let key = random::stream_key(&mut self.b, seed, step);
                self.keys.insert(seed, key);
            }
        }
        if normal {
            self.libm = Some(random::declare_libm(module, self.b.func)?);
        }

        let exit = self.b.create_block();
        match self.kernel.body.as_slice() {
            [Stmt::For { var, step: s, kind: LoopKind::Parallel, body, .. }] => {
                let s = *s as i64;
                let start = self.scale(begin, s);
                let limit = self.scale(end, s);
                self.emit_loop(*var, start, s, body, |b, v| {
                    b.ins().icmp(IntCC::UnsignedLessThan, v, limit)
                })?;
            }
            body => {
                let run = self.b.create_block();
                let go = self.b.ins().icmp(IntCC::UnsignedLessThan, begin, end);
                self.b.ins().brif(go, run, &[], exit, &[]);
                self.b.seal_block(run);
                self.b.switch_to_block(run);
                self.stmts(body)?;
            }
        }
        self.b.ins().jump(exit, &[]);
        self.b.seal_block(exit);
        self.b.switch_to_block(exit);
        self.b.ins().return_(&[]);
        Ok(())
    }

    fn stmts(&mut self, body: &[Stmt]) -> Result<(), String> {
        for s in body {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), String> {
        match s {
            Stmt::For { var, extent, step, kind, body } => match kind {
                LoopKind::Unrolled => {
                    for v in (0..*extent).step_by(*step) {
                        self.bind(*var, Binding::Const(v as i64))?;
                        self.stmts(body)?;
                    }
                    self.vars[var.0 as usize] = Binding::Unbound;
                }
                LoopKind::Serial => {
                    let start = self.b.ins().iconst(types::I64, 0);
                    let extent = *extent as i64;
                    self.emit_loop(*var, start, *step as i64, body, |b, v| {
                        b.ins().icmp_imm_s(IntCC::SignedLessThan, v, extent)
                    })?;
                }
                LoopKind::Parallel => return Err(err("a parallel loop that is not outermost")),
            },
            Stmt::Set { reg, index, value } => {
                let v = self.expr(value)?;
                let var = self.reg_var(reg.0, index)?;
                self.b.def_var(var, v);
            }
            Stmt::Store { buf, index, value } => {
                let v = self.expr(value)?;
                let (base, offset) = self.address(buf.0, index)?;
                self.b.ins().store(mem_flags(), v, base, offset);
            }
        }
        Ok(())
    }

    fn bind(&mut self, var: Var, binding: Binding) -> Result<(), String> {
        let slot = self
            .vars
            .get_mut(var.0 as usize)
            .ok_or_else(|| format!("v{} is not declared", var.0))?;
        *slot = binding;
        Ok(())
    }

    /// A top-tested loop: `header(v)` branches to the body while `cond(v)`, the body ends with
    /// `jump header(v + step)`.
    fn emit_loop(
        &mut self,
        var: Var,
        start: Value,
        step: i64,
        body: &[Stmt],
        cond: impl FnOnce(&mut FunctionBuilder, Value) -> Value,
    ) -> Result<(), String> {
        self.hoist_addresses(body);
        let header = self.b.create_block();
        let v = self.b.append_block_param(header, types::I64);
        let block = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[BlockArg::Value(start)]);

        self.b.switch_to_block(header);
        let go = cond(&mut self.b, v);
        self.b.ins().brif(go, block, &[], exit, &[]);
        self.b.seal_block(block);
        self.b.seal_block(exit);

        self.b.switch_to_block(block);
        self.depth += 1;
        self.bind(var, Binding::Runtime(v, self.depth))?;
        self.addresses.push(HashMap::new());
        self.stmts(body)?;
        self.addresses.pop();
        self.vars[var.0 as usize] = Binding::Unbound;
        self.depth -= 1;
        let next = self.b.ins().iadd_imm_s(v, step);
        self.b.ins().jump(header, &[BlockArg::Value(next)]);
        self.b.seal_block(header);

        self.b.switch_to_block(exit);
        Ok(())
    }

    /// Before a loop: computes `arena + Σ 4 c v` over the variables of the enclosing loops for
    /// every access in `body`, so the loop only adds its own terms.
    fn hoist_addresses(&mut self, body: &[Stmt]) {
        let mut indices = Vec::new();
        visit_accesses(body, &mut |index| indices.push(index));
        for index in indices {
            let mut terms = Vec::new();
            for &(var, c) in &index.terms {
                if let Some(Binding::Runtime(v, d)) = self.vars.get(var.0 as usize) {
                    if c != 0 {
                        terms.push((var, c, *v, *d));
                    }
                }
            }
            if !terms.is_empty() {
                self.base(&mut terms);
            }
        }
    }

    /// Splits an index into its constant value and its runtime terms.
    fn split(&self, index: &Index) -> Result<(i64, Vec<Term>), String> {
        let mut constant = index.constant;
        let mut terms = Vec::new();
        for &(var, c) in &index.terms {
            match self.vars.get(var.0 as usize) {
                Some(Binding::Const(x)) => constant += c * x,
                Some(Binding::Runtime(v, d)) => {
                    if c != 0 {
                        terms.push((var, c, *v, *d));
                    }
                }
                _ => return Err(format!("v{} is used outside its loop", var.0)),
            }
        }
        Ok((constant, terms))
    }

    /// `arena + Σ 4 c v` over runtime terms, cached by prefix in order of loop depth.
    fn base(&mut self, terms: &mut [Term]) -> Value {
        terms.sort_by_key(|&(var, _, _, depth)| (depth, var));
        self.base_sorted(terms)
    }

    fn base_sorted(&mut self, terms: &[Term]) -> Value {
        let Some((&(_, c, v, _), rest)) = terms.split_last() else {
            return self.arena;
        };
        let key: AddressKey = terms.iter().map(|&(_, c, v, _)| (v, 4 * c)).collect();
        if let Some(&found) = self.addresses.iter().rev().find_map(|m| m.get(&key)) {
            return found;
        }
        let prefix = self.base_sorted(rest);
        let scaled = self.scale(v, 4 * c);
        let value = self.b.ins().iadd(prefix, scaled);
        self.addresses.last_mut().expect("a scope").insert(key, value);
        value
    }

    /// `v * c` for a constant `c` (a shift for powers of two).
    fn scale(&mut self, v: Value, c: i64) -> Value {
        if c == 1 {
            v
        } else if c > 0 && (c as u64).is_power_of_two() {
            self.b.ins().ishl_imm_u(v, c.trailing_zeros() as i64)
        } else {
            self.b.ins().imul_imm_s(v, c)
        }
    }

    /// The address of `buf[index]`: a base value and a constant byte offset.
    fn address(&mut self, buf: u32, index: &Index) -> Result<(Value, i32), String> {
        let b = self.kernel.bufs.get(buf as usize).ok_or_else(|| format!("buffer b{buf}"))?;
        let (constant, mut terms) = self.split(index)?;
        let base = self.base(&mut terms);
        let bytes = 4 * (b.offset as i64 + constant);
        match i32::try_from(bytes) {
            Ok(offset) => Ok((base, offset)),
            Err(_) => Ok((self.b.ins().iadd_imm_s(base, bytes), 0)),
        }
    }

    /// The value of an index as i64.
    fn index_value(&mut self, index: &Index) -> Result<Value, String> {
        let (constant, terms) = self.split(index)?;
        let mut acc: Option<Value> = None;
        for (_, c, v, _) in terms {
            let term = self.scale(v, c);
            acc = Some(match acc {
                Some(a) => self.b.ins().iadd(a, term),
                None => term,
            });
        }
        Ok(match acc {
            None => self.b.ins().iconst(types::I64, constant),
            Some(a) if constant == 0 => a,
            Some(a) => self.b.ins().iadd_imm_s(a, constant),
        })
    }

    /// The i32 value of an index (its low 32 bits, as the random generators hash them).
    fn index_value_i32(&mut self, index: &Index) -> Result<Value, String> {
        let (constant, terms) = self.split(index)?;
        if terms.is_empty() {
            return Ok(self.b.ins().iconst(types::I32, constant as u32 as i64));
        }
        let v = self.index_value(index)?;
        Ok(self.b.ins().ireduce(types::I32, v))
    }

    /// The variable of `reg[index]` (the index is constant once unrolled loops are expanded).
    fn reg_var(&self, reg: u32, index: &Index) -> Result<Variable, String> {
        let (constant, terms) = self.split(index)?;
        if !terms.is_empty() {
            return Err(format!(
                "register r{reg} is indexed by a serial or parallel loop variable"
            ));
        }
        self.regs
            .get(reg as usize)
            .and_then(|r| usize::try_from(constant).ok().and_then(|i| r.get(i)))
            .copied()
            .ok_or_else(|| format!("register r{reg}[{constant}] does not exist"))
    }

    fn is_vector(&self, v: Value) -> bool {
        self.b.func.dfg.value_type(v).is_vector()
    }

    fn expr(&mut self, e: &Expr) -> Result<Value, String> {
        Ok(match e {
            Expr::Const(x) => self.b.ins().f32const(*x),
            Expr::Load { buf, index, lanes } => {
                let ty = lanes_type(*lanes)?;
                let (base, offset) = self.address(buf.0, index)?;
                self.b.ins().load(ty, mem_flags(), base, offset)
            }
            Expr::Reg(r, index) => {
                let var = self.reg_var(r.0, index)?;
                self.b.use_var(var)
            }
            Expr::Splat(x) => match **x {
                Expr::Const(c) => math::f32x4(&mut self.b, c),
                _ => {
                    let x = self.expr(x)?;
                    self.b.ins().splat(types::F32X4, x)
                }
            },
            Expr::Unary(op, x) => {
                let x = self.expr(x)?;
                match op {
                    Unary::Neg => self.b.ins().fneg(x),
                    Unary::Sqrt => self.b.ins().sqrt(x),
                    Unary::Exp => self.vector_fn(x, math::exp),
                    Unary::Log => self.vector_fn(x, math::log),
                    Unary::Tanh => self.vector_fn(x, math::tanh),
                }
            }
            Expr::Binary(op, a, bb) => {
                let (a, bb) = (self.expr(a)?, self.expr(bb)?);
                match op {
                    Binary::Add => self.b.ins().fadd(a, bb),
                    Binary::Sub => self.b.ins().fsub(a, bb),
                    Binary::Mul => self.b.ins().fmul(a, bb),
                    Binary::Div => self.b.ins().fdiv(a, bb),
                    Binary::Max => self.select(FloatCC::GreaterThan, a, bb, a, bb),
                    Binary::Min => self.select(FloatCC::LessThan, a, bb, a, bb),
                }
            }
            Expr::Fma(a, bb, c) => {
                let (a, bb, c) = (self.expr(a)?, self.expr(bb)?, self.expr(c)?);
                self.b.ins().fma(a, bb, c)
            }
            Expr::Select { cmp, a, b: bb, then, otherwise } => {
                let (a, bb) = (self.expr(a)?, self.expr(bb)?);
                let (t, o) = (self.expr(then)?, self.expr(otherwise)?);
                let cc = match cmp {
                    Cmp::Gt => FloatCC::GreaterThan,
                    Cmp::Ge => FloatCC::GreaterThanOrEqual,
                    Cmp::Lt => FloatCC::LessThan,
                    Cmp::Eq => FloatCC::Equal,
                };
                self.select(cc, a, bb, t, o)
            }
            Expr::HorizontalSum(x) => {
                let x = self.expr(x)?;
                let l: Vec<Value> = (0..4).map(|i| self.b.ins().extractlane(x, i)).collect();
                let s01 = self.b.ins().fadd(l[0], l[1]);
                let s23 = self.b.ins().fadd(l[2], l[3]);
                self.b.ins().fadd(s01, s23)
            }
            Expr::IndexValue(index) => {
                let (constant, terms) = self.split(index)?;
                if terms.is_empty() {
                    self.b.ins().f32const(constant as f32)
                } else {
                    let v = self.index_value(index)?;
                    self.b.ins().fcvt_from_sint(types::F32, v)
                }
            }
            Expr::Uniform { seed, index } => {
                let key = self.keys[seed];
                let i = self.index_value_i32(index)?;
                random::uniform(&mut self.b, key, i)
            }
            Expr::Normal { seed, index } => {
                let key = self.keys[seed];
                let libm = self.libm.ok_or_else(|| err("libm imports were not declared"))?;
                let i = self.index_value_i32(index)?;
                random::normal(&mut self.b, libm, key, i)
            }
        })
    }

    /// `a cc b ? then : otherwise`: a compare and a blend for vectors, a `select` for scalars.
    fn select(&mut self, cc: FloatCC, a: Value, b: Value, then: Value, otherwise: Value) -> Value {
        if self.is_vector(then) {
            math::select(&mut self.b, cc, a, b, then, otherwise)
        } else {
            let c = self.b.ins().fcmp(cc, a, b);
            self.b.ins().select(c, then, otherwise)
        }
    }

    /// Applies an f32x4 function to a value of 1 or 4 lanes (lane 0 of a splat for scalars).
    fn vector_fn(&mut self, x: Value, f: fn(&mut FunctionBuilder, Value) -> Value) -> Value {
        if self.is_vector(x) {
            f(&mut self.b, x)
        } else {
            let v = self.b.ins().splat(types::F32X4, x);
            let y = f(&mut self.b, v);
            self.b.ins().extractlane(y, 0)
        }
    }
}

/// Flags of every arena access: in bounds (checked statically) but not necessarily aligned.
fn mem_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

fn lanes_type(lanes: u8) -> Result<Type, String> {
    match lanes {
        1 => Ok(types::F32),
        4 => Ok(types::F32X4),
        n => Err(format!("a load of {n} lanes")),
    }
}

/// Calls `f` on `e` and its sub-expressions.
fn visit_expr<'a>(e: &'a Expr, f: &mut impl FnMut(&'a Expr)) {
    f(e);
    match e {
        Expr::Splat(x) | Expr::Unary(_, x) | Expr::HorizontalSum(x) => visit_expr(x, f),
        Expr::Binary(_, a, b) => {
            visit_expr(a, f);
            visit_expr(b, f);
        }
        Expr::Fma(a, b, c) => {
            for x in [a, b, c] {
                visit_expr(x, f);
            }
        }
        Expr::Select { a, b, then, otherwise, .. } => {
            for x in [a, b, then, otherwise] {
                visit_expr(x, f);
            }
        }
        Expr::Const(_)
        | Expr::Load { .. }
        | Expr::Reg(..)
        | Expr::IndexValue(_)
        | Expr::Uniform { .. }
        | Expr::Normal { .. } => {}
    }
}

/// Calls `f` on every expression (and sub-expression) of `body`.
fn visit_exprs<'a>(body: &'a [Stmt], f: &mut impl FnMut(&'a Expr)) {
    for s in body {
        match s {
            Stmt::For { body, .. } => visit_exprs(body, f),
            Stmt::Set { value, .. } | Stmt::Store { value, .. } => visit_expr(value, f),
        }
    }
}

/// Calls `f` on the index of every load and store of `body`.
fn visit_accesses<'a>(body: &'a [Stmt], f: &mut impl FnMut(&'a Index)) {
    for s in body {
        match s {
            Stmt::For { body, .. } => visit_accesses(body, f),
            Stmt::Set { value, .. } => visit_expr(value, &mut |e| {
                if let Expr::Load { index, .. } = e {
                    f(index);
                }
            }),
            Stmt::Store { index, value, .. } => {
                f(index);
                visit_expr(value, &mut |e| {
                    if let Expr::Load { index, .. } = e {
                        f(index);
                    }
                });
            }
        }
    }
}
