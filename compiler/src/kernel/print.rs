//! The text form of kernels (`kiln dump --stage kernels`).

use std::fmt::Write;

use super::{Binary, Cmp, Expr, Index, Kernel, LoopKind, Stmt, Unary};

/// Prints a kernel: its buffers (arena ranges), registers and loop nest.
pub fn print(k: &Kernel) -> String {
    let mut out = format!("kernel {} {{\n", k.name);
    for b in &k.bufs {
        let _ = writeln!(out, "  buf %{} = arena[{}..{}]", b.name, b.offset, b.offset + b.len);
    }
    for r in &k.regs {
        let ty = if r.lanes == 4 { "f32x4" } else { "f32" };
        if r.count == 1 {
            let _ = writeln!(out, "  reg {}: {ty}", r.name);
        } else {
            let _ = writeln!(out, "  reg {}: {ty} x {}", r.name, r.count);
        }
    }
    stmts(k, &k.body, 1, &mut out);
    out.push_str("}\n");
    out
}

fn stmts(k: &Kernel, body: &[Stmt], depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    for s in body {
        match s {
            Stmt::For { var, extent, step, kind, body } => {
                let kind = match kind {
                    LoopKind::Serial => "",
                    LoopKind::Unrolled => "unrolled ",
                    LoopKind::Parallel => "parallel ",
                };
                let step = if *step == 1 { String::new() } else { format!(" step {step}") };
                let _ = writeln!(out, "{pad}{kind}for v{} in 0..{extent}{step} {{", var.0);
                stmts(k, body, depth + 1, out);
                let _ = writeln!(out, "{pad}}}");
            }
            Stmt::Set { reg, index, value } => {
                let _ = writeln!(out, "{pad}{} = {}", reg_text(k, reg.0, index), expr(k, value));
            }
            Stmt::Store { buf, index, value } => {
                let _ = writeln!(
                    out,
                    "{pad}store %{}[{}] = {}",
                    k.bufs[buf.0 as usize].name,
                    index_text(index),
                    expr(k, value)
                );
            }
        }
    }
}

fn reg_text(k: &Kernel, reg: u32, index: &Index) -> String {
    let decl = &k.regs[reg as usize];
    if decl.count == 1 {
        decl.name.clone()
    } else {
        format!("{}[{}]", decl.name, index_text(index))
    }
}

/// Prints an affine index, e.g. `784*v0 + v2 + 3`.
pub fn index_text(i: &Index) -> String {
    let mut parts: Vec<String> = i
        .terms
        .iter()
        .map(|&(v, c)| if c == 1 { format!("v{}", v.0) } else { format!("{c}*v{}", v.0) })
        .collect();
    if i.constant != 0 || parts.is_empty() {
        parts.push(i.constant.to_string());
    }
    parts.join(" + ").replace("+ -", "- ")
}

fn expr(k: &Kernel, e: &Expr) -> String {
    match e {
        Expr::Const(v) => format!("{v:?}"),
        Expr::Load { buf, index, lanes } => {
            let name = &k.bufs[buf.0 as usize].name;
            if *lanes == 1 {
                format!("%{name}[{}]", index_text(index))
            } else {
                format!("%{name}[{}..+{lanes}]", index_text(index))
            }
        }
        Expr::Reg(r, index) => reg_text(k, r.0, index),
        Expr::Splat(x) => format!("splat({})", expr(k, x)),
        Expr::Unary(op, x) => {
            let name = match op {
                Unary::Neg => "neg",
                Unary::Exp => "exp",
                Unary::Log => "log",
                Unary::Sqrt => "sqrt",
                Unary::Tanh => "tanh",
            };
            format!("{name}({})", expr(k, x))
        }
        Expr::Binary(op, a, b) => {
            let name = match op {
                Binary::Add => "add",
                Binary::Sub => "sub",
                Binary::Mul => "mul",
                Binary::Div => "div",
                Binary::Max => "max",
                Binary::Min => "min",
            };
            format!("{name}({}, {})", expr(k, a), expr(k, b))
        }
        Expr::Fma(a, b, c) => format!("fma({}, {}, {})", expr(k, a), expr(k, b), expr(k, c)),
        Expr::Select { cmp, a, b, then, otherwise } => {
            let op = match cmp {
                Cmp::Gt => ">",
                Cmp::Ge => ">=",
                Cmp::Lt => "<",
                Cmp::Eq => "==",
            };
            format!(
                "select({} {op} {}, {}, {})",
                expr(k, a),
                expr(k, b),
                expr(k, then),
                expr(k, otherwise)
            )
        }
        Expr::HorizontalSum(x) => format!("hsum({})", expr(k, x)),
        Expr::IndexValue(i) => format!("f32({})", index_text(i)),
        Expr::Uniform { seed, index } => format!("uniform(seed={seed}, {})", index_text(index)),
        Expr::Normal { seed, index } => format!("normal(seed={seed}, {})", index_text(index)),
    }
}
