//! The layout of a compiled model: everything the runtime needs to run its kernels besides the
//! machine code itself. The JIT builds it in memory; `kiln build` embeds it (as JSON) in the
//! executable, next to the kernels it names.

use serde::{Deserialize, Serialize};

/// A contiguous range of the arena, in f32 elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// First element.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

impl Slot {
    /// The elements it covers.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// One kernel of a program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelEntry {
    /// Its symbol (deterministic: `kiln_<program>_k<index>_<name>`), for profiles and listings.
    pub symbol: String,
    /// Iterations of its outermost parallel loop (1 when it has none).
    pub work_items: usize,
}

/// One compiled program (the training step, or evaluation): where it reads its inputs and
/// leaves its outputs, and its kernels in execution order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramLayout {
    /// The batch size it is compiled for; shorter batches are padded up to it.
    pub batch: usize,
    /// The arena length its kernels need (they were bounds-checked against it).
    pub arena_len: usize,
    /// The data batch, `batch * example_len` values.
    pub input: Slot,
    /// The labels, `batch` values, when the loss reads labels.
    pub labels: Option<Slot>,
    /// The example weights of the loss, `batch` values.
    pub weights: Slot,
    /// The scalar loss after a run.
    pub loss: Slot,
    /// The prediction (logits for classifiers) after a run.
    pub prediction: Slot,
    /// The kernels, in execution order.
    pub kernels: Vec<KernelEntry>,
}

/// A parameter or optimizer-state variable in the persistent region of the arena.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    /// The variable's name (as in checkpoints).
    pub name: String,
    /// Its first element.
    pub offset: usize,
    /// Its shape; it holds the product of the dimensions elements.
    pub shape: Vec<usize>,
}

impl Variable {
    /// The elements it covers.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.shape.iter().product::<usize>()
    }
}

/// Early stopping as the model file asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStoppingSetting {
    /// Epochs without improvement tolerated.
    pub patience: usize,
    /// Smallest decrease of the test loss that counts as an improvement.
    pub min_delta: f32,
}

/// The model file's training settings that a trainer uses as defaults, and descriptions for
/// `--help`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingSettings {
    /// Epochs to train.
    pub epochs: usize,
    /// The seed the parameters and random ops were initialised from (also the shuffle's).
    pub seed: u64,
    /// Early stopping, if the model file asks for it.
    pub early_stopping: Option<EarlyStoppingSetting>,
    /// Human-readable facts about the model: `(what, value)`, e.g. `("optimizer", "rmsprop
    /// lr=0.001 …")`, in the order they should be shown.
    pub description: Vec<(String, String)>,
}

/// Everything about a compiled model except its machine code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelLayout {
    /// The model's name (checkpoints are checked against it).
    pub model: String,
    /// Whether evaluation counts correct classifications (argmax of the prediction = label).
    pub classifier: bool,
    /// Length of the persistent region (parameters and optimizer state), in f32 elements.
    pub persistent_len: usize,
    /// The persistent variables, sorted by name.
    pub variables: Vec<Variable>,
    /// The training step.
    pub train: ProgramLayout,
    /// The evaluation program (the JIT compiles it on first use, so it may come later).
    pub eval: Option<ProgramLayout>,
    /// Defaults and descriptions from the model file.
    pub training: TrainingSettings,
}

/// A layout that does not describe a runnable model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid compiled-model layout: {0}")]
pub struct LayoutError(pub String);

impl ModelLayout {
    /// The layout stored as JSON (as `kiln build` embeds it).
    pub fn from_json(bytes: &[u8]) -> Result<Self, LayoutError> {
        let layout: ModelLayout =
            serde_json::from_slice(bytes).map_err(|e| LayoutError(e.to_string()))?;
        layout.check()?;
        Ok(layout)
    }

    /// The layout as JSON, deterministic (field order is declaration order).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a layout always serialises")
    }

    /// The arena length every program needs.
    pub fn arena_len(&self) -> usize {
        let eval = self.eval.as_ref().map_or(0, |e| e.arena_len);
        self.persistent_len.max(self.train.arena_len).max(eval)
    }

    /// Checks that every variable lies in the persistent region, sorted by name, and that
    /// every program's slots lie in its arena and its inputs do not overlap.
    pub fn check(&self) -> Result<(), LayoutError> {
        let err = |m: String| Err(LayoutError(m));
        for v in &self.variables {
            if v.range().end > self.persistent_len {
                return err(format!("variable `{}` ends past the persistent region", v.name));
            }
        }
        if !self.variables.windows(2).all(|w| w[0].name < w[1].name) {
            return err("variables are not sorted by name without repeats".into());
        }
        for p in std::iter::once(&self.train).chain(&self.eval) {
            p.check()?;
        }
        Ok(())
    }
}

impl ProgramLayout {
    /// Checks that the slots lie in the program's arena, the inputs do not overlap each other,
    /// and the slots have the sizes the batch implies.
    pub fn check(&self) -> Result<(), LayoutError> {
        let err = |m: String| Err(LayoutError(m));
        if self.batch == 0 {
            return err("a program for batches of 0".into());
        }
        let mut slots = vec![("input", self.input), ("weights", self.weights)];
        slots.extend(self.labels.map(|l| ("labels", l)));
        let inputs = slots.len();
        slots.extend([("loss", self.loss), ("prediction", self.prediction)]);
        for (name, s) in &slots {
            if s.offset.checked_add(s.len).is_none_or(|end| end > self.arena_len) {
                return err(format!("the {name} slot ends past the program's arena"));
            }
        }
        for (i, (a, sa)) in slots[..inputs].iter().enumerate() {
            for (b, sb) in &slots[i + 1..inputs] {
                if sa.offset < sb.offset + sb.len && sb.offset < sa.offset + sa.len {
                    return err(format!("the {a} and {b} slots overlap"));
                }
            }
        }
        let batch_sized = [("weights", Some(self.weights)), ("labels", self.labels)];
        for (name, s) in batch_sized {
            if s.is_some_and(|s| s.len != self.batch) {
                return err(format!("the {name} slot does not hold one value per example"));
            }
        }
        if !self.input.len.is_multiple_of(self.batch)
            || !self.prediction.len.is_multiple_of(self.batch)
        {
            return err("the input or prediction slot is not a whole number of examples".into());
        }
        if self.loss.len != 1 {
            return err("the loss slot is not a scalar".into());
        }
        Ok(())
    }
}
