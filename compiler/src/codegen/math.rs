//! Vector (f32x4) polynomials for `exp`, `log` and `tanh` in CLIF: Cranelift has no such
//! instructions, and a libm call per element costs 5x more than these few dozen instructions.
//! Scalars go through the same code (splat, then lane 0), so 1- and 4-lane results agree.
//!
//! Constants are emitted at their use as `vconst` (a constant-pool load that folds into the
//! using instruction), never hoisted: a hoisted constant would hold one of the 16 xmm registers
//! across the loop.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, ConstantData, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;

/// A 16-byte vector constant.
fn vconst(b: &mut FunctionBuilder, ty: Type, bytes: Vec<u8>) -> Value {
    let c = b.func.dfg.constants.insert(ConstantData::from(bytes));
    b.ins().vconst(ty, c)
}

/// `x` in the four lanes of an f32x4 constant.
pub fn f32x4(b: &mut FunctionBuilder, x: f32) -> Value {
    vconst(b, types::F32X4, x.to_le_bytes().repeat(4))
}

/// `x` in the four lanes of an i32x4 constant.
fn i32x4(b: &mut FunctionBuilder, x: i32) -> Value {
    vconst(b, types::I32X4, x.to_le_bytes().repeat(4))
}

/// A reinterpretation between f32x4 and i32x4 (no instruction).
fn cast(b: &mut FunctionBuilder, ty: Type, x: Value) -> Value {
    b.ins().bitcast(ty, MemFlagsData::new(), x)
}

/// The lane mask of `x cc y` as f32x4 (all ones where it holds), for `bitselect`.
pub fn mask(b: &mut FunctionBuilder, cc: FloatCC, x: Value, y: Value) -> Value {
    let m = b.ins().fcmp(cc, x, y);
    cast(b, types::F32X4, m)
}

/// `x cc y ? then : otherwise`, lane-wise (one compare and one blend).
pub fn select(
    b: &mut FunctionBuilder,
    cc: FloatCC,
    x: Value,
    y: Value,
    then: Value,
    otherwise: Value,
) -> Value {
    let m = mask(b, cc, x, y);
    b.ins().bitselect(m, then, otherwise)
}

/// `x < lo ? lo : x`, then `> hi ? hi : x`: NaN stays NaN.
fn clamp(b: &mut FunctionBuilder, x: Value, lo: f32, hi: f32) -> Value {
    let l = f32x4(b, lo);
    let x = select(b, FloatCC::LessThan, x, l, l, x);
    let h = f32x4(b, hi);
    select(b, FloatCC::GreaterThan, x, h, h, x)
}

/// Horner's scheme with fused multiply-adds: `((c0 x + c1) x + c2) ...`.
fn horner(b: &mut FunctionBuilder, x: Value, coefficients: &[f32]) -> Value {
    let mut p = f32x4(b, coefficients[0]);
    for &c in &coefficients[1..] {
        let c = f32x4(b, c);
        p = b.ins().fma(p, x, c);
    }
    p
}

/// `1.5 * 2^23`: adding it rounds a float of magnitude < 2^22 to an integer, which then sits in
/// the low mantissa bits.
const ROUNDER: f32 = 12_582_912.0;
/// `ln 2` split into a part with few bits (`n * LN2_HI` is exact) and the rest.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` for f32x4 (Cephes `expf`): `n = round(x log2 e)`, `r = x - n ln 2` in two parts,
/// `e^r` by a degree-7 polynomial, scaled by `2^n` built in the exponent bits. The input is
/// clamped to [-104, 88.76], so the result underflows to (sub)normals and overflows to +inf as
/// `expf` does, with `2^n` applied as two factors to stay exact in the subnormal range.
/// Accuracy: within 1-2 ulp of `expf` on normal results.
pub fn exp(b: &mut FunctionBuilder, x: Value) -> Value {
    let x = clamp(b, x, -104.0, 88.76);
    let log2e = f32x4(b, std::f32::consts::LOG2_E);
    let rounder = f32x4(b, ROUNDER);
    let t = b.ins().fma(x, log2e, rounder);
    let rounder = f32x4(b, ROUNDER);
    let n = b.ins().fsub(t, rounder);
    let c = f32x4(b, -LN2_HI);
    let r = b.ins().fma(n, c, x);
    let c = f32x4(b, -LN2_LO);
    let r = b.ins().fma(n, c, r);
    let z = b.ins().fmul(r, r);
    let p = horner(
        b,
        r,
        &[1.987_569_2e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5],
    );
    let y = b.ins().fma(p, z, r);
    let one = f32x4(b, 1.0);
    let y = b.ins().fadd(y, one);
    // n as an integer: the low bits of t (t = 0x4b400000 + n as bits).
    let bits = cast(b, types::I32X4, t);
    let bias = i32x4(b, 0x4b40_0000);
    let n = b.ins().isub(bits, bias);
    let n1 = b.ins().sshr_imm_u(n, 1);
    let n2 = b.ins().isub(n, n1);
    let y = scale(b, y, n1);
    scale(b, y, n2)
}

/// `y * 2^n` for an i32x4 `n` in [-126, 127].
fn scale(b: &mut FunctionBuilder, y: Value, n: Value) -> Value {
    let bias = i32x4(b, 127);
    let e = b.ins().iadd(n, bias);
    let e = b.ins().ishl_imm_u(e, 23);
    let s = cast(b, types::F32X4, e);
    b.ins().fmul(y, s)
}

/// The natural logarithm for f32x4 (Cephes `logf`): `x = m 2^e` with `m` in [√½, √2), then
/// `ln(m)` by a degree-9 polynomial in `m - 1` and `e ln 2` in two parts. Subnormals are scaled
/// by 2^23 first; `ln 0 = -inf`, `ln(+inf) = +inf`, NaN for negative and NaN inputs.
/// Accuracy: within 1-2 ulp of `logf`.
pub fn log(b: &mut FunctionBuilder, x: Value) -> Value {
    let min_normal = f32x4(b, f32::MIN_POSITIVE);
    let tiny = mask(b, FloatCC::LessThan, x, min_normal);
    let big = f32x4(b, 8_388_608.0);
    let scaled = b.ins().fmul(x, big);
    let xs = b.ins().bitselect(tiny, scaled, x);
    let bits = cast(b, types::I32X4, xs);
    // Exponent: the biased exponent minus 126 (for a mantissa in [0.5, 1)), minus 23 more for
    // scaled subnormals.
    let biased = b.ins().ushr_imm_u(bits, 23);
    let normal_bias = i32x4(b, 126);
    let tiny_bias = i32x4(b, 126 + 23);
    let tiny_i = cast(b, types::I32X4, tiny);
    let bias = b.ins().bitselect(tiny_i, tiny_bias, normal_bias);
    let e = b.ins().isub(biased, bias);
    let e = b.ins().fcvt_from_sint(types::F32X4, e);
    // Mantissa in [0.5, 1).
    let mant_mask = i32x4(b, 0x007f_ffff);
    let m = b.ins().band(bits, mant_mask);
    let half = i32x4(b, 0x3f00_0000);
    let m = b.ins().bor(m, half);
    let m = cast(b, types::F32X4, m);
    // Below √½: one more halving of the exponent, x = 2m - 1, else x = m - 1 (both exact).
    let sqrt_half = f32x4(b, std::f32::consts::FRAC_1_SQRT_2);
    let low = mask(b, FloatCC::LessThan, m, sqrt_half);
    let one = f32x4(b, 1.0);
    let low_one = b.ins().band(low, one);
    let e = b.ins().fsub(e, low_one);
    let one = f32x4(b, 1.0);
    let xm = b.ins().fsub(m, one);
    let low_m = b.ins().band(low, m);
    let xm = b.ins().fadd(xm, low_m);
    let z = b.ins().fmul(xm, xm);
    let p = horner(
        b,
        xm,
        &[
            7.037_683_6e-2,
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333e-1,
        ],
    );
    let p = b.ins().fmul(p, xm);
    let y = b.ins().fmul(p, z);
    let c = f32x4(b, LN2_LO);
    let y = b.ins().fma(e, c, y);
    let c = f32x4(b, -0.5);
    let y = b.ins().fma(z, c, y);
    let r = b.ins().fadd(xm, y);
    let c = f32x4(b, LN2_HI);
    let r = b.ins().fma(e, c, r);
    // Special inputs: 0 -> -inf, +inf -> +inf, negative or NaN -> NaN.
    let zero = f32x4(b, 0.0);
    let nan = f32x4(b, f32::NAN);
    let special = select(b, FloatCC::GreaterThanOrEqual, x, zero, x, nan);
    let zero = f32x4(b, 0.0);
    let neg_inf = f32x4(b, f32::NEG_INFINITY);
    let special = select(b, FloatCC::Equal, x, zero, neg_inf, special);
    let zero = f32x4(b, 0.0);
    let positive = mask(b, FloatCC::GreaterThan, x, zero);
    let inf = f32x4(b, f32::INFINITY);
    let finite = mask(b, FloatCC::LessThan, x, inf);
    let regular = b.ins().band(positive, finite);
    b.ins().bitselect(regular, r, special)
}

/// The hyperbolic tangent for f32x4 (Cephes `tanhf`): an odd polynomial below |x| = 0.625,
/// else `1 - 2 / (e^{2|x|} + 1)` with |x| clamped to 10; then the sign of x. Accuracy: within
/// 2-3 ulp of `tanhf`.
pub fn tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    let ax = b.ins().fabs(x);
    // Large |x|.
    // tanh rounds to 1 from 9.01 on; the clamp keeps e^{2x} far from overflow.
    let ten = f32x4(b, 10.0);
    let c = select(b, FloatCC::GreaterThan, ax, ten, ten, ax);
    let c2 = b.ins().fadd(c, c);
    let e = exp(b, c2);
    let one = f32x4(b, 1.0);
    let d = b.ins().fadd(e, one);
    let two = f32x4(b, 2.0);
    let q = b.ins().fdiv(two, d);
    let one = f32x4(b, 1.0);
    let large = b.ins().fsub(one, q);
    // Small |x|: x + x z P(z), z = x².
    let z = b.ins().fmul(x, x);
    let p = horner(
        b,
        z,
        &[-5.704_988_7e-3, 2.063_909e-2, -5.373_971_6e-2, 1.333_144_2e-1, -3.333_328e-1],
    );
    let pz = b.ins().fmul(p, z);
    let small = b.ins().fma(pz, x, x);
    let limit = f32x4(b, 0.625);
    let t = select(b, FloatCC::LessThan, ax, limit, small, large);
    // The sign of x (the large branch computed tanh|x|; the small one loses it at -0).
    let sign_bit = f32x4(b, -0.0);
    let sign = b.ins().band(x, sign_bit);
    b.ins().bor(t, sign)
}
