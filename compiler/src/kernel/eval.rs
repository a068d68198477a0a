//! Runs a kernel in plain Rust with the f32 semantics of generated code: the oracle that lowering
//! is tested against, and that generated code is compared with.

use kiln_ir::ops::counter_uniform;

use super::{Binary, Cmp, Expr, Index, Kernel, LoopKind, Stmt, Unary, Var};

/// A value of 1 or 4 lanes.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Value {
    lanes: u8,
    v: [f32; 4],
}

impl Value {
    fn scalar(x: f32) -> Self {
        Value { lanes: 1, v: [x, 0.0, 0.0, 0.0] }
    }

    fn map(self, f: impl Fn(f32) -> f32) -> Self {
        let mut out = self;
        for l in 0..self.lanes as usize {
            out.v[l] = f(self.v[l]);
        }
        out
    }

    fn zip(self, other: Value, f: impl Fn(f32, f32) -> f32) -> Self {
        let mut out = self;
        for l in 0..self.lanes as usize {
            out.v[l] = f(self.v[l], other.v[l]);
        }
        out
    }
}

struct Machine<'a> {
    kernel: &'a Kernel,
    arena: &'a mut [f32],
    regs: Vec<Vec<Value>>,
    vars: Vec<i64>,
    step: u64,
}

/// Runs the whole kernel (every parallel iteration) on `arena` at training step `step`.
///
/// # Panics
/// If the kernel does not pass [`Kernel::check`] or its buffers lie outside `arena`.
pub fn run(kernel: &Kernel, arena: &mut [f32], step: u64) {
    run_range(kernel, arena, 0, kernel.work_items(), step);
}

/// Runs parallel iterations `[begin, end)` of the kernel (the whole kernel if it has no parallel
/// loop and the range is `[0, 1)`).
pub fn run_range(kernel: &Kernel, arena: &mut [f32], begin: usize, end: usize, step: u64) {
    let regs = kernel
        .regs
        .iter()
        .map(|r| vec![Value { lanes: r.lanes, v: [0.0; 4] }; r.count as usize])
        .collect();
    let mut m = Machine { kernel, arena, regs, vars: vec![0; kernel.vars as usize], step };
    match kernel.body.as_slice() {
        [Stmt::For { var, step, kind: LoopKind::Parallel, body, .. }] => {
            for i in begin..end {
                m.vars[var.0 as usize] = (i * step) as i64;
                m.stmts(body);
            }
        }
        body => {
            if begin < end {
                m.stmts(body);
            }
        }
    }
}

impl Machine<'_> {
    fn index(&self, i: &Index) -> i64 {
        i.value(&|v: Var| self.vars[v.0 as usize])
    }

    fn addr(&self, buf: super::BufId, index: &Index) -> usize {
        let b = &self.kernel.bufs[buf.0 as usize];
        b.offset + self.index(index) as usize
    }

    fn stmts(&mut self, body: &[Stmt]) {
        for s in body {
            match s {
                Stmt::For { var, extent, step, body, .. } => {
                    let mut i = 0;
                    while i < *extent {
                        self.vars[var.0 as usize] = i as i64;
                        self.stmts(body);
                        i += step;
                    }
                }
                Stmt::Set { reg, index, value } => {
                    let v = self.expr(value);
                    let slot = self.index(index) as usize;
                    self.regs[reg.0 as usize][slot] = v;
                }
                Stmt::Store { buf, index, value } => {
                    let v = self.expr(value);
                    let a = self.addr(*buf, index);
                    self.arena[a..a + v.lanes as usize].copy_from_slice(&v.v[..v.lanes as usize]);
                }
            }
        }
    }

    fn expr(&self, e: &Expr) -> Value {
        match e {
            Expr::Const(x) => Value::scalar(*x),
            Expr::Load { buf, index, lanes } => {
                let a = self.addr(*buf, index);
                let mut v = [0.0; 4];
                v[..*lanes as usize].copy_from_slice(&self.arena[a..a + *lanes as usize]);
                Value { lanes: *lanes, v }
            }
            Expr::Reg(r, index) => self.regs[r.0 as usize][self.index(index) as usize],
            Expr::Splat(x) => {
                let s = self.expr(x).v[0];
                Value { lanes: 4, v: [s; 4] }
            }
            Expr::Unary(op, x) => {
                let x = self.expr(x);
                match op {
                    Unary::Neg => x.map(|a| -a),
                    Unary::Exp => x.map(f32::exp),
                    Unary::Log => x.map(f32::ln),
                    Unary::Sqrt => x.map(f32::sqrt),
                    Unary::Tanh => x.map(f32::tanh),
                }
            }
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.expr(a), self.expr(b));
                match op {
                    Binary::Add => a.zip(b, |x, y| x + y),
                    Binary::Sub => a.zip(b, |x, y| x - y),
                    Binary::Mul => a.zip(b, |x, y| x * y),
                    Binary::Div => a.zip(b, |x, y| x / y),
                    Binary::Max => a.zip(b, |x, y| if x > y { x } else { y }),
                    Binary::Min => a.zip(b, |x, y| if x < y { x } else { y }),
                }
            }
            Expr::Fma(a, b, c) => {
                let (a, b, c) = (self.expr(a), self.expr(b), self.expr(c));
                let mut out = a;
                for l in 0..a.lanes as usize {
                    out.v[l] = a.v[l].mul_add(b.v[l], c.v[l]);
                }
                out
            }
            Expr::Select { cmp, a, b, then, otherwise } => {
                let (a, b) = (self.expr(a), self.expr(b));
                let (t, o) = (self.expr(then), self.expr(otherwise));
                let mut out = t;
                for l in 0..t.lanes as usize {
                    let holds = match cmp {
                        Cmp::Gt => a.v[l] > b.v[l],
                        Cmp::Ge => a.v[l] >= b.v[l],
                        Cmp::Lt => a.v[l] < b.v[l],
                        Cmp::Eq => a.v[l] == b.v[l],
                    };
                    out.v[l] = if holds { t.v[l] } else { o.v[l] };
                }
                out
            }
            Expr::HorizontalSum(x) => {
                let v = self.expr(x).v;
                Value::scalar((v[0] + v[1]) + (v[2] + v[3]))
            }
            Expr::IndexValue(i) => Value::scalar(self.index(i) as f32),
            Expr::Uniform { seed, index } => {
                Value::scalar(counter_uniform(*seed, self.step, self.index(index) as u64) as f32)
            }
            Expr::Normal { seed, index } => {
                let i = self.index(index) as u64;
                let u1 = 1.0 - counter_uniform(*seed, self.step, 2 * i) as f32;
                let u2 = counter_uniform(*seed, self.step, 2 * i + 1) as f32;
                Value::scalar((-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::print::print;
    use crate::kernel::{Binary, Expr, Index, Kernel, LoopKind, Stmt};

    /// c[i] = a[i] * 2 + b[i] over 8 elements, 4 lanes at a time, split into 2 work items.
    fn axpy() -> Kernel {
        let mut k = Kernel::new("axpy");
        let a = k.buf("a", 0, 8);
        let b = k.buf("b", 8, 8);
        let c = k.buf("c", 16, 8);
        let i = k.var();
        let value = Expr::load(a, Index::var(i, 1), 4)
            .bin(Binary::Mul, Expr::c(2.0).splat())
            .bin(Binary::Add, Expr::load(b, Index::var(i, 1), 4));
        k.body = vec![Stmt::For {
            var: i,
            extent: 8,
            step: 4,
            kind: LoopKind::Parallel,
            body: vec![Stmt::Store { buf: c, index: Index::var(i, 1), value }],
        }];
        k
    }

    #[test]
    fn runs_vector_loops_and_ranges() {
        let k = axpy();
        k.check().unwrap();
        assert_eq!(k.work_items(), 2);
        let mut arena: Vec<f32> = (0..24).map(|x| x as f32).collect();
        run_range(&k, &mut arena, 1, 2, 0);
        assert_eq!(&arena[16..20], &[16.0, 17.0, 18.0, 19.0], "first half untouched");
        assert_eq!(
            &arena[20..24],
            &[2.0 * 4.0 + 12.0, 2.0 * 5.0 + 13.0, 2.0 * 6.0 + 14.0, 2.0 * 7.0 + 15.0]
        );
        run(&k, &mut arena, 0);
        assert_eq!(arena[16], 8.0);
    }

    #[test]
    fn check_rejects_out_of_bounds_and_lane_mismatch() {
        let mut k = axpy();
        k.bufs[2].len = 7;
        let e = k.check().unwrap_err().to_string();
        assert!(e.contains("outside the buffer of 7 elements"), "{e}");

        let mut k = axpy();
        if let Stmt::For { body, .. } = &mut k.body[0] {
            body[0] = Stmt::Store {
                buf: crate::kernel::BufId(2),
                index: Index::constant(0),
                value: Expr::c(1.0).splat().bin(Binary::Add, Expr::c(1.0)),
            };
        }
        let e = k.check().unwrap_err().to_string();
        assert!(e.contains("binary op of 4-lane and 1-lane values"), "{e}");
    }

    #[test]
    fn prints_readably() {
        let text = print(&axpy());
        assert!(text.contains("parallel for v0 in 0..8 step 4 {"), "{text}");
        assert!(
            text.contains("store %c[v0] = add(mul(%a[v0..+4], splat(2.0)), %b[v0..+4])"),
            "{text}"
        );
    }
}
