//! Ahead-of-time code generation: kernels and the data that describes them, emitted into one
//! relocatable object file (ELF on Linux) through cranelift-object, for the system linker.
//!
//! The object defines, all with deterministic names, so that the same input gives the same
//! bytes:
//! - every kernel of every program, as the symbol the caller names it with;
//! - `kiln_layout`: opaque bytes (the runtime's layout JSON), `kiln_initial`: f32 values (the
//!   initial persistent region), little-endian;
//! - `kiln_<program>_kernels`: per program, the table of its kernels' addresses, in order;
//! - `kiln_manifest`: the words `[MANIFEST_VERSION, &kiln_layout, layout bytes, &kiln_initial,
//!   initial values, programs, (&table, kernels) per program]`, each 8 bytes;
//! - `main(argc: i32, argv: *const *const c_char) -> i32`, which returns
//!   `<entry>(argc, argv, &kiln_manifest)`: the entry point of the executable, handing the
//!   manifest to the runtime library that defines `<entry>`.
//!
//! Kernels import `logf` and `cosf` (normal numbers), which the C library provides.

use cranelift_codegen::ir::{types, AbiParam, InstBuilder, UserFuncName};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};

use super::{build_function, function, isa, CodegenError};
use crate::kernel::Kernel;

/// The version of the manifest's layout; the runtime refuses other versions.
pub const MANIFEST_VERSION: u64 = 1;

/// One program: its name (in `kiln_<name>_kernels`) and its kernels with their symbols.
pub struct ObjectProgram<'a> {
    /// The program's name, e.g. `train`.
    pub name: &'a str,
    /// The kernels in execution order.
    pub kernels: &'a [Kernel],
    /// The symbol of each kernel (unique in the object).
    pub symbols: Vec<String>,
}

/// What goes into the object file.
pub struct ObjectSpec<'a> {
    /// The programs, in the order of the manifest.
    pub programs: Vec<ObjectProgram<'a>>,
    /// The bytes of `kiln_layout`.
    pub layout: &'a [u8],
    /// The values of `kiln_initial`.
    pub initial: &'a [f32],
    /// The function `main` calls with `(argc, argv, &kiln_manifest)`, defined elsewhere.
    pub entry: &'a str,
}

fn module_err(e: impl std::fmt::Display) -> CodegenError {
    CodegenError { kernel: String::new(), message: e.to_string() }
}

/// Compiles every kernel and the data above into the bytes of a relocatable object file for the
/// host, position-independent (it links into a default PIE with `cc`).
pub fn emit_object(spec: &ObjectSpec<'_>) -> Result<Vec<u8>, CodegenError> {
    let isa = isa::native_isa(true).map_err(module_err)?;
    let builder = ObjectBuilder::new(isa, "kiln_model", cranelift_module::default_libcall_names())
        .map_err(module_err)?;
    let mut module = ObjectModule::new(builder);
    let sig = function::kernel_signature(&module);
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();

    let mut tables = Vec::new();
    for program in &spec.programs {
        if program.symbols.len() != program.kernels.len() {
            return Err(module_err(format!("program `{}`: one symbol per kernel", program.name)));
        }
        let mut ids = Vec::new();
        for (kernel, symbol) in program.kernels.iter().zip(&program.symbols) {
            let id = module
                .declare_function(symbol, Linkage::Export, &sig)
                .map_err(|e| CodegenError::new(kernel, e.to_string()))?;
            module.clear_context(&mut ctx);
            let name = UserFuncName::user(0, id.as_u32());
            build_function(&mut module, kernel, name, &mut ctx, &mut fctx)?;
            module
                .define_function(id, &mut ctx)
                .map_err(|e| CodegenError::new(kernel, format!("{e:?}")))?;
            ids.push(id);
        }
        let table = module
            .declare_data(&format!("kiln_{}_kernels", program.name), Linkage::Export, false, false)
            .map_err(module_err)?;
        let mut desc = DataDescription::new();
        // Explicit zeros, not `define_zeroinit`: that goes to .bss, where relocations are dropped.
        desc.define(vec![0u8; 8 * ids.len().max(1)].into_boxed_slice());
        desc.set_align(8);
        for (i, id) in ids.into_iter().enumerate() {
            let f = module.declare_func_in_data(id, &mut desc);
            desc.write_function_addr(8 * i as u32, f);
        }
        module.define_data(table, &desc).map_err(module_err)?;
        tables.push((table, program.kernels.len()));
    }

    let layout = define_bytes(&mut module, "kiln_layout", spec.layout.to_vec())?;
    let initial_bytes = spec.initial.iter().flat_map(|v| v.to_le_bytes()).collect();
    let initial = define_bytes(&mut module, "kiln_initial", initial_bytes)?;
    let manifest = define_manifest(&mut module, spec, layout, initial, &tables)?;
    define_main(&mut module, spec.entry, manifest, &mut ctx, &mut fctx)?;
    module.finish().emit().map_err(module_err)
}

/// Defines read-only data `name` holding `bytes` (aligned to 16).
fn define_bytes(
    module: &mut ObjectModule,
    name: &str,
    bytes: Vec<u8>,
) -> Result<DataId, CodegenError> {
    let id = module.declare_data(name, Linkage::Export, false, false).map_err(module_err)?;
    let mut desc = DataDescription::new();
    desc.define(bytes.into_boxed_slice());
    desc.set_align(16);
    module.define_data(id, &desc).map_err(module_err)?;
    Ok(id)
}

/// Defines `kiln_manifest` (see the module documentation).
fn define_manifest(
    module: &mut ObjectModule,
    spec: &ObjectSpec<'_>,
    layout: DataId,
    initial: DataId,
    tables: &[(DataId, usize)],
) -> Result<DataId, CodegenError> {
    let id =
        module.declare_data("kiln_manifest", Linkage::Export, false, false).map_err(module_err)?;
    let mut words = vec![
        MANIFEST_VERSION,
        0,
        spec.layout.len() as u64,
        0,
        spec.initial.len() as u64,
        tables.len() as u64,
    ];
    for &(_, kernels) in tables {
        words.extend([0, kernels as u64]);
    }
    let mut desc = DataDescription::new();
    desc.define(words.iter().flat_map(|w| w.to_le_bytes()).collect());
    desc.set_align(8);
    let mut pointers = vec![(8, layout), (24, initial)];
    pointers.extend(tables.iter().enumerate().map(|(i, &(t, _))| (48 + 16 * i as u32, t)));
    for (offset, data) in pointers {
        let gv = module.declare_data_in_data(data, &mut desc);
        desc.write_data_addr(offset, gv, 0);
    }
    module.define_data(id, &desc).map_err(module_err)?;
    Ok(id)
}

/// Defines `main(argc, argv)` as `return entry(argc, argv, &kiln_manifest)`.
fn define_main(
    module: &mut ObjectModule,
    entry: &str,
    manifest: DataId,
    ctx: &mut cranelift_codegen::Context,
    fctx: &mut FunctionBuilderContext,
) -> Result<(), CodegenError> {
    let mut main_sig = module.make_signature();
    main_sig.params.extend([AbiParam::new(types::I32), AbiParam::new(types::I64)]);
    main_sig.returns.push(AbiParam::new(types::I32));
    let mut entry_sig = main_sig.clone();
    entry_sig.params.push(AbiParam::new(types::I64));
    let main = module.declare_function("main", Linkage::Export, &main_sig).map_err(module_err)?;
    let callee = module.declare_function(entry, Linkage::Import, &entry_sig).map_err(module_err)?;

    module.clear_context(ctx);
    let config = module.target_config();
    ctx.func.signature = main_sig;
    ctx.func.name = UserFuncName::user(0, main.as_u32());
    let callee = module.declare_func_in_func(callee, &mut ctx.func);
    let manifest = module.declare_data_in_func(manifest, &mut ctx.func);
    let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
    let block = b.create_block();
    b.append_block_params_for_function_params(block);
    b.switch_to_block(block);
    b.seal_block(block);
    let (argc, argv) = (b.block_params(block)[0], b.block_params(block)[1]);
    let address = b.ins().symbol_value(types::I64, manifest);
    let call = b.ins().call(callee, &[argc, argv, address]);
    let status = b.inst_results(call)[0];
    b.ins().return_(&[status]);
    b.finalize(config);
    module.define_function(main, ctx).map_err(|e| module_err(format!("main: {e:?}")))?;
    Ok(())
}
