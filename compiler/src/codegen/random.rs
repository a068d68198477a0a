//! The counter-based generator of `kiln_ir::ops::counter_uniform` in CLIF: the same 32-bit
//! integer hash, so generated code draws bit-identical numbers, and the Box–Muller transform of
//! [`crate::kernel::Expr::Normal`].

use cranelift_codegen::ir::{types, AbiParam, FuncRef, Function, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{Linkage, Module};

/// `logf` for generated code: Rust's `f32::ln`, the function the evaluator calls.
extern "C" fn kiln_logf(x: f32) -> f32 {
    x.ln()
}

/// `cosf` for generated code: Rust's `f32::cos`.
extern "C" fn kiln_cosf(x: f32) -> f32 {
    x.cos()
}

/// The scalar libm functions that kernels may import (by these names), with the
/// implementations the JIT binds them to. Only [`crate::kernel::Expr::Normal`] calls them; an
/// object file leaves them to the system's libm.
pub const LIBM_SYMBOLS: &[(&str, extern "C" fn(f32) -> f32)] =
    &[("logf", kiln_logf), ("cosf", kiln_cosf)];

/// `mix32` of `kiln_ir::ops::random` at compile time.
pub fn mix32_const(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// `mix32` of an i32 value.
pub fn mix32(b: &mut FunctionBuilder, x: Value) -> Value {
    let t = b.ins().ushr_imm_u(x, 16);
    let x = b.ins().bxor(x, t);
    let x = b.ins().imul_imm_u(x, 0x7feb_352d_i64);
    let t = b.ins().ushr_imm_u(x, 15);
    let x = b.ins().bxor(x, t);
    let x = b.ins().imul_imm_u(x, 0x846c_a68b_i64);
    let t = b.ins().ushr_imm_u(x, 16);
    b.ins().bxor(x, t)
}

/// The key of the stream of `seed` at training step `step` (an i64 value), as an i32:
/// `mix32(seed_lo ^ mix32(step_lo ^ mix32(seed_hi ^ 0x9e3779b9)))`.
pub fn stream_key(b: &mut FunctionBuilder, seed: u64, step: Value) -> Value {
    let inner = mix32_const((seed >> 32) as u32 ^ 0x9e37_79b9);
    let step = b.ins().ireduce(types::I32, step);
    let x = b.ins().bxor_imm_u(step, inner as i64);
    let x = mix32(b, x);
    let x = b.ins().bxor_imm_u(x, seed as u32 as i64);
    mix32(b, x)
}

/// `counter_uniform` as f32 for a stream `key` and an i32 element index: exact, since the
/// number has 24 bits.
pub fn uniform(b: &mut FunctionBuilder, key: Value, index: Value) -> Value {
    let h = mix32(b, index);
    let x = b.ins().bxor(key, h);
    let bits = mix32(b, x);
    let bits = b.ins().ushr_imm_u(bits, 8);
    let f = b.ins().fcvt_from_sint(types::F32, bits);
    let scale = b.ins().f32const(1.0 / (1u32 << 24) as f32);
    b.ins().fmul(f, scale)
}

/// The imported libm functions of one function.
#[derive(Clone, Copy)]
pub struct Libm {
    logf: FuncRef,
    cosf: FuncRef,
}

/// Declares `logf` and `cosf` as imports of `module` and references them from `func`.
pub fn declare_libm(module: &mut dyn Module, func: &mut Function) -> Result<Libm, String> {
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(types::F32));
    sig.returns.push(AbiParam::new(types::F32));
    let mut import = |name: &str| -> Result<FuncRef, String> {
        let id = module
            .declare_function(name, Linkage::Import, &sig)
            .map_err(|e| format!("declaring `{name}`: {e}"))?;
        Ok(module.declare_func_in_func(id, func))
    };
    Ok(Libm { logf: import("logf")?, cosf: import("cosf")? })
}

/// A standard normal number for an i32 element index, exactly as the evaluator computes it:
/// `sqrt(-2 ln(1 - U(2i))) * cos(2π U(2i + 1))` in f32.
pub fn normal(b: &mut FunctionBuilder, libm: Libm, key: Value, index: Value) -> Value {
    let i0 = b.ins().ishl_imm_u(index, 1);
    let i1 = b.ins().iadd_imm_u(i0, 1);
    let u0 = uniform(b, key, i0);
    let one = b.ins().f32const(1.0);
    let u1 = b.ins().fsub(one, u0);
    let u2 = uniform(b, key, i1);
    let call = b.ins().call(libm.logf, &[u1]);
    let ln = b.inst_results(call)[0];
    let m2 = b.ins().f32const(-2.0);
    let r = b.ins().fmul(m2, ln);
    let r = b.ins().sqrt(r);
    let tau = b.ins().f32const(std::f32::consts::TAU);
    let angle = b.ins().fmul(tau, u2);
    let call = b.ins().call(libm.cosf, &[angle]);
    let c = b.inst_results(call)[0];
    b.ins().fmul(r, c)
}
