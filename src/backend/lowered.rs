//! A model lowered to its two programs (training step and evaluation) with the layout the
//! runtime's [`Executor`](kiln_runtime::compiled::Executor) needs: the part that the JIT
//! backend and `kiln build` share, so both run exactly the same kernels over the same arena.

use kiln_compiler::memory::Persistent;
use kiln_compiler::program::{build, initial_persistent, Io, Program};
use kiln_compiler::step::{compiled_evaluation, compiled_training_step, CompileOptions};
use kiln_compiler::CompileError;
use kiln_ir::model::{thousands, Loss, Model, Optimizer};
use kiln_runtime::compiled::{
    EarlyStoppingSetting, KernelEntry, ModelLayout, ProgramLayout, Slot, TrainingSettings, Variable,
};

/// Which of a model's programs a kernel belongs to; part of every kernel's symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    /// The training step.
    Train,
    /// Evaluation (forward and loss).
    Eval,
}

impl ProgramKind {
    /// `train` or `eval`.
    pub fn name(self) -> &'static str {
        match self {
            ProgramKind::Train => "train",
            ProgramKind::Eval => "eval",
        }
    }
}

/// The training step of a model, lowered, with its layout and initial persistent values.
pub struct Lowered {
    /// The layout; `eval` is filled in by [`Lowered::lower_eval`].
    pub layout: ModelLayout,
    /// The initial parameters and optimizer state (the persistent region).
    pub initial: Vec<f32>,
    /// How the graphs were compiled (evaluation is compiled the same way).
    pub options: CompileOptions,
    /// The training program.
    pub train: Program,
    /// Where every persistent variable lives (evaluation shares it).
    pub persistent: Persistent,
}

impl Lowered {
    /// Builds and lowers the training step of `model` for its batch size.
    pub fn train(model: &Model, options: &CompileOptions) -> Result<Self, CompileError> {
        let (tg, _) = compiled_training_step(model, model.training.batch_size, options)?;
        let mut persistent = Persistent::default();
        persistent.add_from(&tg.graph);
        let initial = initial_persistent(&[&tg.graph], &persistent);
        let shapes: std::collections::HashMap<&str, Vec<usize>> = tg
            .graph
            .node_ids()
            .into_iter()
            .map(|id| tg.graph.node(id))
            .map(|n| (n.name.as_str(), n.shape.dims().to_vec()))
            .collect();
        // `Persistent::buffers` is sorted by name, as the layout requires.
        let variables = persistent
            .buffers
            .iter()
            .map(|(name, b)| Variable {
                name: name.clone(),
                offset: b.offset,
                shape: shapes.get(name.as_str()).cloned().unwrap_or_else(|| vec![b.len]),
            })
            .collect();
        let train = build(&tg.graph, Io::from(&tg), &persistent)?;
        let layout = ModelLayout {
            model: model.name.clone(),
            classifier: model.training.loss == Loss::SoftmaxCrossEntropy,
            persistent_len: persistent.len,
            variables,
            train: program_layout(ProgramKind::Train, &train),
            eval: None,
            training: settings(model)?,
        };
        Ok(Lowered { layout, initial, train, persistent, options: *options })
    }

    /// Builds and lowers the evaluation program of `model` over the same persistent region.
    pub fn lower_eval(&self, model: &Model) -> Result<Program, CompileError> {
        let (lg, _) = compiled_evaluation(model, model.training.batch_size, &self.options)?;
        Ok(build(&lg.graph, Io::from(&lg), &self.persistent)?)
    }
}

/// The layout of a program: its slots, and its kernels named as [`symbol`] names them.
pub fn program_layout(kind: ProgramKind, p: &Program) -> ProgramLayout {
    let slot = |b: &kiln_compiler::kernel::Buffer| Slot { offset: b.offset, len: b.len };
    ProgramLayout {
        batch: p.batch,
        arena_len: p.plan.len,
        input: slot(&p.input),
        labels: p.labels.as_ref().map(slot),
        weights: slot(&p.weights),
        loss: slot(&p.loss),
        prediction: slot(&p.prediction),
        kernels: p
            .kernels
            .iter()
            .enumerate()
            .map(|(i, k)| KernelEntry { symbol: symbol(kind, i, k), work_items: k.work_items() })
            .collect(),
    }
}

/// The symbol of kernel `index` of a program: `kiln_<train|eval>_k<index>_<name>`.
pub fn symbol(kind: ProgramKind, index: usize, kernel: &kiln_compiler::kernel::Kernel) -> String {
    let base = kiln_compiler::codegen::symbol_name(index, kernel);
    format!("kiln_{}_{}", kind.name(), base.trim_start_matches("kiln_"))
}

/// The training defaults and a description of the model's hyper-parameters.
fn settings(model: &Model) -> Result<TrainingSettings, CompileError> {
    let t = &model.training;
    let optimizer = match t.optimizer {
        Optimizer::Sgd { lr, momentum, nesterov } => {
            format!("sgd lr={lr} momentum={momentum} nesterov={nesterov}")
        }
        Optimizer::Rmsprop { lr, rho, eps } => format!("rmsprop lr={lr} rho={rho} eps={eps}"),
        Optimizer::Adam { lr, beta1, beta2, eps } => {
            format!("adam lr={lr} beta1={beta1} beta2={beta2} eps={eps}")
        }
    };
    let input = model.input.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
    let mut description = vec![
        ("input".to_string(), input),
        ("layers".to_string(), model.layers.len().to_string()),
        ("parameters".to_string(), thousands(model.parameter_count()?)),
        ("loss".to_string(), t.loss.name().to_string()),
        ("optimizer".to_string(), optimizer),
        ("batch size".to_string(), t.batch_size.to_string()),
        ("seed".to_string(), t.seed.to_string()),
    ];
    if t.weight_decay != 0.0 {
        description.push(("weight decay".to_string(), t.weight_decay.to_string()));
    }
    Ok(TrainingSettings {
        epochs: t.epochs,
        seed: t.seed,
        early_stopping: t
            .early_stopping
            .as_ref()
            .map(|e| EarlyStoppingSetting { patience: e.patience, min_delta: e.min_delta as f32 }),
        description,
    })
}
