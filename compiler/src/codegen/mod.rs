//! Code generation: kernel IR → Cranelift IR → native code.
//!
//! Every [`Kernel`] becomes one Cranelift function
//! `extern "C" fn(arena: *mut f32, begin: u64, end: u64, step: u64)` with exactly the semantics
//! of [`crate::kernel::eval`] (bit-identical except `exp`, `log` and `tanh`, which are f32x4
//! polynomials within a few ulp of libm's):
//!
//! - [`isa`]: Cranelift flags and the host ISA, the JIT module;
//! - [`function`]: the translation of one kernel, independent of the module (JIT or object);
//! - [`object`]: the same kernels in an object file, for executables built ahead of time;
//! - [`math`]: the vector polynomials;
//! - [`random`]: the counter-based generator of `kiln_ir::ops::counter_uniform`.

pub mod function;
pub mod isa;
pub mod math;
pub mod object;
pub mod random;

#[cfg(test)]
mod tests;

use std::fmt;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::UserFuncName;
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::JITModule;
use cranelift_module::{Linkage, Module};

use crate::kernel::Kernel;

/// Signature of every compiled kernel: runs parallel iterations `[begin, end)` of the kernel
/// (the whole kernel for `[0, 1)` if it has no parallel loop) on the arena at training `step`.
///
/// # Safety
/// `arena` must point to at least as many f32 as the kernel's buffers reach, `end` must not
/// exceed [`Kernel::work_items`], and no other thread may access the elements it writes.
pub type KernelFn = unsafe extern "C" fn(arena: *mut f32, begin: u64, end: u64, step: u64);

/// A failure to compile a kernel (a kernel that does not pass [`Kernel::check`], or a
/// Cranelift error).
#[derive(Debug, thiserror::Error)]
#[error("codegen of kernel `{kernel}`: {message}")]
pub struct CodegenError {
    /// The kernel's name (empty for module-wide failures).
    pub kernel: String,
    /// What went wrong.
    pub message: String,
}

impl CodegenError {
    fn new(kernel: &Kernel, message: impl Into<String>) -> Self {
        CodegenError { kernel: kernel.name.clone(), message: message.into() }
    }
}

/// Compiled kernels; the function pointers live as long as this value.
pub struct CompiledKernels {
    /// `None` only while dropping.
    module: Option<JITModule>,
    fns: Vec<KernelFn>,
}

// SAFETY: the module is only used again to free its memory (in `drop`); the code it holds is
// immutable and position-independent of threads, and `get` only copies function pointers.
unsafe impl Send for CompiledKernels {}
// SAFETY: `&CompiledKernels` only gives access to the function pointers.
unsafe impl Sync for CompiledKernels {}

impl CompiledKernels {
    /// The function of kernel `i` (in the order given to [`compile`]).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn get(&self, i: usize) -> KernelFn {
        self.fns[i]
    }

    /// The number of kernels.
    pub fn len(&self) -> usize {
        self.fns.len()
    }

    /// Whether there are no kernels.
    pub fn is_empty(&self) -> bool {
        self.fns.is_empty()
    }
}

impl fmt::Debug for CompiledKernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledKernels").field("len", &self.fns.len()).finish()
    }
}

impl Drop for CompiledKernels {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the function pointers are documented to live only as long as `self`.
            unsafe { module.free_memory() };
        }
    }
}

/// The symbol of kernel `index`: `kiln_k{index}_{name}` with the name's characters outside
/// `[A-Za-z0-9_]` replaced by `_`.
pub fn symbol_name(index: usize, kernel: &Kernel) -> String {
    let name: String = kernel
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    format!("kiln_k{index}_{name}")
}

/// Checks `kernel` and translates it into `ctx.func`, named `name`, declaring its imports in
/// `module`. The shared step of the JIT and of object-file emitters.
pub fn build_function(
    module: &mut dyn Module,
    kernel: &Kernel,
    name: UserFuncName,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
) -> Result<(), CodegenError> {
    kernel.check().map_err(|e| CodegenError::new(kernel, e.message))?;
    ctx.func.signature = function::kernel_signature(module);
    ctx.func.name = name;
    function::translate(module, kernel, &mut ctx.func, fctx)
        .map_err(|m| CodegenError::new(kernel, m))
}

/// Compiles all kernels into one JIT module (one Cranelift function each).
pub fn compile(kernels: &[Kernel]) -> Result<CompiledKernels, CodegenError> {
    let module_err = |m: String| CodegenError { kernel: String::new(), message: m };
    let mut module = isa::jit_module().map_err(module_err)?;
    let sig = function::kernel_signature(&module);
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let mut ids = Vec::with_capacity(kernels.len());
    for (i, kernel) in kernels.iter().enumerate() {
        let id = module
            .declare_function(&symbol_name(i, kernel), Linkage::Export, &sig)
            .map_err(|e| CodegenError::new(kernel, e.to_string()))?;
        module.clear_context(&mut ctx);
        build_function(
            &mut module,
            kernel,
            UserFuncName::user(0, id.as_u32()),
            &mut ctx,
            &mut fctx,
        )?;
        module
            .define_function(id, &mut ctx)
            .map_err(|e| CodegenError::new(kernel, format!("{e:?}")))?;
        ids.push(id);
    }
    module.finalize_definitions().map_err(|e| module_err(e.to_string()))?;
    let fns = ids
        .into_iter()
        .map(|id| {
            let p = module.get_finalized_function(id);
            // SAFETY: `p` is the code of a function with the kernel signature.
            unsafe { std::mem::transmute::<*const u8, KernelFn>(p) }
        })
        .collect();
    Ok(CompiledKernels { module: Some(module), fns })
}

/// The Cranelift IR text of one kernel (for `kiln dump --stage clif`), deterministic; the
/// function is named as kernel 0 of a module ([`clif_text_at`] names it by its index).
pub fn clif_text(kernel: &Kernel) -> Result<String, CodegenError> {
    clif_text_at(0, kernel)
}

/// The Cranelift IR text of kernel `index` of a module, named [`symbol_name`]`(index, kernel)`.
pub fn clif_text_at(index: usize, kernel: &Kernel) -> Result<String, CodegenError> {
    let mut module = isa::jit_module().map_err(|m| CodegenError::new(kernel, m))?;
    let mut ctx = module.make_context();
    let name = UserFuncName::testcase(symbol_name(index, kernel));
    build_function(&mut module, kernel, name, &mut ctx, &mut FunctionBuilderContext::new())?;
    Ok(ctx.func.display().to_string())
}

/// The machine code of one kernel after register allocation, as Cranelift prints it (to look
/// for spills and unfolded loads).
pub fn asm_text(kernel: &Kernel) -> Result<String, CodegenError> {
    let mut module = isa::jit_module().map_err(|m| CodegenError::new(kernel, m))?;
    let mut ctx = module.make_context();
    let name = UserFuncName::testcase(symbol_name(0, kernel));
    build_function(&mut module, kernel, name, &mut ctx, &mut FunctionBuilderContext::new())?;
    ctx.set_disasm(true);
    let code = ctx
        .compile(module.isa(), &mut ControlPlane::default())
        .map_err(|e| CodegenError::new(kernel, format!("{:?}", e.inner)))?;
    Ok(code.vcode.clone().unwrap_or_default())
}
