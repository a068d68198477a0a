//! The target: Cranelift flags and ISA for the host CPU, and the JIT module.

use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::default_libcall_names;

use super::random::LIBM_SYMBOLS;

/// The host ISA with the flags every kernel is compiled with.
///
/// - `cranelift_native::builder()` enables the CPU's features (`has_fma`, AVX...): without
///   `has_fma` an `fma.f32x4` becomes four calls to `fmaf`;
/// - `opt_level = "none"`: kernels are scheduled by hand, and the mid-end's code motion makes
///   register-tiled loops spill (see `notes/cranelift.md`);
/// - `is_pic`: `false` for the JIT, `true` for object files linked into a PIE;
/// - the verifier runs only in tests and debug builds (it adds 50-100% compile time);
/// - unwind tables only for object files (the JIT does not register them; kernels keep frame
///   pointers, so profilers can still walk through them).
pub fn native_isa(pic: bool) -> Result<OwnedTargetIsa, String> {
    let mut flags = settings::builder();
    let bool_str = |b: bool| if b { "true" } else { "false" };
    let verify = cfg!(any(test, debug_assertions));
    for (name, value) in
        [("opt_level", "none"), ("is_pic", bool_str(pic)), ("enable_verifier", bool_str(verify))]
    {
        flags.set(name, value).map_err(|e| format!("cranelift flag {name}={value}: {e}"))?;
    }
    let isa = cranelift_native::builder().map_err(|e| format!("host ISA: {e}"))?;
    isa.finish(settings::Flags::new(flags)).map_err(|e| format!("host ISA: {e}"))
}

/// A JIT module for the host, with the libm functions that kernels may import
/// ([`LIBM_SYMBOLS`]) bound to Rust's own implementations, so that generated code calls exactly
/// what [`crate::kernel::eval`] computes.
pub fn jit_module() -> Result<JITModule, String> {
    let mut builder = JITBuilder::with_isa(native_isa(false)?, default_libcall_names());
    for &(name, f) in LIBM_SYMBOLS {
        builder.symbol(name, f as *const u8);
    }
    Ok(JITModule::new(builder))
}
