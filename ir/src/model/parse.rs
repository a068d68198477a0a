//! The model file parser.
//!
//! The top level is deserialized with each section and each layer kept as a `&RawValue`; a
//! raw value's byte offset in the file (found by pointer arithmetic: it borrows from the
//! text) turns the positions of errors found while deserializing it, which serde_json gives
//! relative to the raw slice, into positions in the file. A layer is read in two stages: its
//! keys (to find `type`, `name` and `inputs` and where each value is), then the settings of
//! its type, with the three common keys hidden, so that unknown keys are rejected with the
//! valid ones listed.

use serde::Deserialize;
use serde_json::error::Category;
use serde_json::value::RawValue;

use super::de::{from_str_skipping, object_fields, Fields};
use super::error::parse_unknown;
use super::layers::NoSettings;
use super::training::{AdamDe, RmsPropDe, SgdDe, TrainingDe};
use super::{
    default_names, suggest, ErrorKind, InputSpec, Layer, LayerKind, LayerOrigin, LayerRef,
    Location, Model, ModelError, Optimizer, Origin, Training,
};

/// The keys every layer may have besides its settings.
const COMMON_KEYS: &[&str] = &["type", "name", "inputs"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a model: a JSON object with `input` and `layers`")]
struct Top<'a> {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
    #[serde(default, borrow)]
    layers: Option<Vec<&'a RawValue>>,
    #[serde(default, borrow)]
    output: Option<&'a RawValue>,
    #[serde(default, borrow)]
    training: Option<&'a RawValue>,
}

/// A layer after the first stage: its common keys read.
struct Head<'a> {
    raw: &'a RawValue,
    origin: LayerOrigin,
    kind: &'static str,
    name: Option<String>,
    inputs: Option<Vec<String>>,
}

struct Parser<'t> {
    text: &'t str,
    file: &'t str,
}

/// Parses a model file (without the checks of [`Model::resolve`]).
pub(super) fn parse(text: &str, file: &str) -> Result<Model, ModelError> {
    let p = Parser { text, file };
    if text.trim().is_empty() {
        return Err(ModelError::new(
            file,
            ErrorKind::Syntax,
            "the file is empty; expected a JSON object with `input` and `layers`",
        ));
    }
    // Sections are read with `from_str_skipping` (skipping no key) rather than
    // `serde_json::from_str`: serde's derived structs also accept arrays of field values,
    // which would give confusing errors for `"input": [28, 28, 1]`.
    let top: Top =
        from_str_skipping(text, &[]).map_err(|e| p.serde_error(e, text, text, None, &[]))?;

    let input_raw = top.input.ok_or_else(|| {
        ModelError::new(
            file,
            ErrorKind::Schema,
            "missing `input`, e.g. \"input\": {\"shape\": [28, 28, 1]}",
        )
    })?;
    let input: InputSpec = from_str_skipping(input_raw.get(), &[])
        .map_err(|e| p.serde_error(e, input_raw.get(), text, None, &[]))?;

    let layers_raw = top.layers.ok_or_else(|| {
        ModelError::new(
            file,
            ErrorKind::Schema,
            "missing `layers`: a model needs at least one layer",
        )
    })?;
    if layers_raw.is_empty() {
        let at = p.find_key_value(text, "layers");
        return Err(ModelError::new(
            file,
            ErrorKind::Schema,
            "`layers` is empty: a model needs at least one layer",
        )
        .at(at));
    }
    let heads = layers_raw
        .iter()
        .enumerate()
        .map(|(i, raw)| p.head(i, raw))
        .collect::<Result<Vec<_>, _>>()?;
    let names = default_names(heads.iter().map(|h| (h.kind, h.name.as_deref())));
    let mut layers = Vec::with_capacity(heads.len());
    for (i, h) in heads.iter().enumerate() {
        let kind = p.settings(h.kind, h.raw).map_err(|e| {
            let layer =
                LayerRef { index: i + 1, name: Some(names[i].clone()), kind: Some(h.kind.into()) };
            p.serde_error(e, h.raw.get(), h.raw.get(), Some(layer), COMMON_KEYS)
        })?;
        layers.push(Layer { name: h.name.clone(), inputs: h.inputs.clone(), kind });
    }

    let mut origin = Origin {
        file: file.to_string(),
        layers: heads.into_iter().map(|h| h.origin).collect(),
        input: Some(p.loc_at(p.offset(input_raw.get()))),
        ..Origin::default()
    };

    let output = match top.output {
        None => None,
        Some(raw) => {
            origin.output = Some(p.loc_at(p.offset(raw.get())));
            let name: String = serde_json::from_str(raw.get())
                .map_err(|e| p.serde_error(e, raw.get(), text, None, &[]))?;
            Some(name)
        }
    };

    let training = match top.training {
        None => Training::default(),
        Some(raw) => {
            origin.training = Some(p.loc_at(p.offset(raw.get())));
            let t: TrainingDe = from_str_skipping(raw.get(), &[])
                .map_err(|e| p.serde_error(e, raw.get(), text, None, &[]))?;
            if let Ok(fields) = object_fields(raw.get()) {
                origin.loss = fields.get("loss").map(|v| p.loc_at(p.offset(v.get())));
                origin.target = fields.get("target").map(|v| p.loc_at(p.offset(v.get())));
            }
            let optimizer = match t.optimizer {
                None => Optimizer::default(),
                Some(raw) => p.optimizer(raw)?,
            };
            Training {
                loss: t.loss,
                target: t.target,
                optimizer,
                weight_decay: t.weight_decay,
                batch_size: t.batch_size,
                epochs: t.epochs,
                seed: t.seed,
                early_stopping: t.early_stopping,
            }
        }
    };

    let name = top.name.unwrap_or_else(|| {
        std::path::Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    Ok(Model { name, input, layers, output, training, origin: Some(origin) })
}

impl<'t> Parser<'t> {
    /// The byte offset of `s` in the file (`s` borrows from it).
    fn offset(&self, s: &str) -> usize {
        let base = self.text.as_ptr() as usize;
        let p = s.as_ptr() as usize;
        if p >= base && p + s.len() <= base + self.text.len() {
            p - base
        } else {
            0
        }
    }

    /// The line and the number of characters before `idx` on it.
    fn line_col(&self, idx: usize) -> (usize, usize) {
        let bytes = &self.text.as_bytes()[..idx.min(self.text.len())];
        let line_start = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let line = 1 + bytes[..line_start].iter().filter(|&&b| b == b'\n').count();
        let chars = bytes[line_start..].iter().filter(|&&b| b & 0xC0 != 0x80).count();
        (line, chars)
    }

    /// The location of the character at byte `idx`.
    fn loc_at(&self, idx: usize) -> Location {
        let (line, chars) = self.line_col(idx);
        Location { line, column: chars + 1 }
    }

    /// The location serde_json reports after reading the bytes before `idx`: the last
    /// character read.
    fn loc_after(&self, idx: usize) -> Location {
        let (line, chars) = self.line_col(idx);
        Location { line, column: chars.max(1) }
    }

    /// Where the value of `key` is in the object `obj`.
    fn find_key_value(&self, obj: &str, key: &str) -> Option<Location> {
        let fields = object_fields(obj).ok()?;
        fields.get(key).map(|v| self.loc_at(self.offset(v.get())))
    }

    /// The keys leading to the innermost object value containing byte `idx`, from `root`.
    /// Also gives that innermost value (`root` itself when the path is empty).
    fn field_path<'a>(&self, root: &'a str, idx: usize) -> (Vec<String>, &'a str) {
        let mut path = Vec::new();
        let mut cur = root;
        while let Ok(Fields(fields)) = object_fields(cur) {
            let found = fields.into_iter().find(|(_, v)| {
                let start = self.offset(v.get());
                start < idx && idx <= start + v.get().len()
            });
            match found {
                Some((key, value)) => {
                    path.push(key);
                    cur = value.get();
                }
                None => break,
            }
        }
        (path, cur)
    }

    /// A [`ModelError`] from a serde_json error found while deserializing `sub` (a slice of the
    /// file): its position made absolute, the keys leading to it (from `root`) prefixed, and a
    /// suggestion for an unknown name (among serde's expected names and `extra`).
    fn serde_error(
        &self,
        e: serde_json::Error,
        sub: &str,
        root: &str,
        layer: Option<LayerRef>,
        extra: &[&str],
    ) -> ModelError {
        let kind = match e.classify() {
            Category::Io => ErrorKind::Io,
            Category::Syntax | Category::Eof => ErrorKind::Syntax,
            Category::Data => ErrorKind::Schema,
        };
        let mut message = e.to_string();
        let mut location = None;
        if e.line() > 0 {
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            if let Some(m) = message.strip_suffix(&suffix) {
                message = m.to_string();
            }
            let base = self.offset(sub);
            let line_start = if e.line() == 1 {
                0
            } else {
                sub.match_indices('\n').nth(e.line() - 2).map_or(sub.len(), |(p, _)| p + 1)
            };
            let idx = base + (line_start + e.column()).min(sub.len());
            location = Some(self.loc_after(idx));
            if kind == ErrorKind::Schema {
                let (path, value) = self.field_path(root, idx);
                // Point at the start of what is wrong, where serde_json reports the position
                // after it (or after the first item of an array or object): a scalar value, a
                // value of the wrong type, an unknown key.
                let value = value.trim_start();
                let first = value.chars().next();
                let scalar = !path.is_empty() && !matches!(first, Some('[' | '{') | None);
                let wrong_type = match message.strip_prefix("invalid type: ") {
                    Some(t) if t.starts_with("sequence") => first == Some('['),
                    Some(t) if t.starts_with("map") => first == Some('{'),
                    Some(_) => !matches!(first, Some('[' | '{')),
                    None => false,
                };
                if scalar || wrong_type {
                    location = Some(self.loc_at(self.offset(value)));
                } else if message.starts_with("unknown field `") {
                    let key_end = idx.saturating_sub(1).min(self.text.len());
                    if let Some(start) = self.text.get(..key_end).and_then(|t| t.rfind('"')) {
                        location = Some(self.loc_at(start));
                    }
                }
                if !path.is_empty() {
                    message = format!("`{}`: {message}", path.join("."));
                }
            }
        }
        let mut suggestion = None;
        if let Some((what, name, mut expected)) = parse_unknown_in(&message) {
            expected.extend(extra.iter().map(|s| s.to_string()));
            suggestion = suggest(&name, expected.iter().map(String::as_str));
            let what = if what == "variant" { "value" } else { what };
            let prefix = &message[..message.find("unknown ").unwrap_or(0)];
            message = if suggestion.is_some() {
                format!("{prefix}unknown {what} `{name}`")
            } else {
                let rest = message.split_once(&format!("`{name}`")).map_or("", |(_, r)| r);
                format!("{prefix}unknown {what} `{name}`{rest}")
            };
        }
        ModelError {
            file: self.file.into(),
            location,
            layer: layer.map(Box::new),
            kind,
            message,
            suggestion,
        }
    }

    /// An error in layer `i` about its raw value `at`.
    fn layer_error(
        &self,
        i: usize,
        name: Option<&str>,
        kind: ErrorKind,
        at: &str,
        message: impl Into<String>,
    ) -> ModelError {
        ModelError::new(self.file, kind, message)
            .at(Some(self.loc_at(self.offset(at))))
            .in_layer(Some(LayerRef { index: i + 1, name: name.map(Into::into), kind: None }))
    }

    /// The first stage of a layer: its keys, type, name and inputs.
    fn head<'a>(&self, i: usize, raw: &'a RawValue) -> Result<Head<'a>, ModelError> {
        let text = raw.get();
        let layer = |name: Option<&str>| {
            Some(LayerRef { index: i + 1, name: name.map(Into::into), kind: None })
        };
        let fields = object_fields(text).map_err(|e| {
            let mut err = self.serde_error(e, text, text, layer(None), &[]);
            if err.message.starts_with("invalid type") {
                err.message = format!(
                    "{}; a layer is an object like {{\"type\": \"dense\", \"units\": 10}}",
                    err.message
                );
            }
            err
        })?;
        let origin = LayerOrigin {
            at: self.loc_at(self.offset(text)),
            fields: fields
                .0
                .iter()
                .map(|(k, v)| (k.clone(), self.loc_at(self.offset(v.get()))))
                .collect(),
        };
        let string = |key: &str, v: &RawValue, name: Option<&str>| -> Result<String, ModelError> {
            serde_json::from_str(v.get()).map_err(|e| {
                let mut err = self.serde_error(e, v.get(), text, layer(name), &[]);
                if !err.message.starts_with('`') {
                    err.message = format!("`{key}`: {}", err.message);
                }
                err
            })
        };
        let name = match fields.get("name") {
            Some(v) => Some(string("name", v, None)?),
            None => None,
        };
        let name = name.as_deref();
        let Some(type_raw) = fields.get("type") else {
            return Err(self.layer_error(
                i,
                name,
                ErrorKind::Schema,
                text,
                format!("missing `type`, one of {}", LayerKind::TYPES.join(", ")),
            ));
        };
        let ty = string("type", type_raw, name)?;
        let Some(kind) = LayerKind::TYPES.iter().copied().find(|t| *t == ty) else {
            let hint = suggest(&ty, LayerKind::TYPES.iter().copied()).or_else(|| alias(&ty));
            let message = if hint.is_some() {
                format!("unknown layer type `{ty}`")
            } else {
                format!(
                    "unknown layer type `{ty}`, expected one of {}",
                    LayerKind::TYPES.join(", ")
                )
            };
            return Err(self
                .layer_error(i, name, ErrorKind::Schema, type_raw.get(), message)
                .suggest(hint));
        };
        let inputs = match fields.get("inputs") {
            Some(v) => Some(serde_json::from_str::<Vec<String>>(v.get()).map_err(|e| {
                let mut err = self.serde_error(e, v.get(), text, layer(name), &[]);
                if let Some(l) = &mut err.layer {
                    l.kind = Some(kind.into());
                }
                err
            })?),
            None => None,
        };
        Ok(Head { raw, origin, kind, name: name.map(Into::into), inputs })
    }

    /// The second stage of a layer: the settings of its type.
    fn settings(&self, kind: &str, raw: &RawValue) -> Result<LayerKind, serde_json::Error> {
        let text = raw.get();
        let k = COMMON_KEYS;
        Ok(match kind {
            "dense" => LayerKind::Dense(from_str_skipping(text, k)?),
            "conv2d" => LayerKind::Conv2d(from_str_skipping(text, k)?),
            "max_pool2d" => LayerKind::MaxPool2d(from_str_skipping(text, k)?),
            "avg_pool2d" => LayerKind::AvgPool2d(from_str_skipping(text, k)?),
            "flatten" => {
                from_str_skipping::<NoSettings>(text, k)?;
                LayerKind::Flatten
            }
            "reshape" => LayerKind::Reshape(from_str_skipping(text, k)?),
            "dropout" => LayerKind::Dropout(from_str_skipping(text, k)?),
            "gaussian_noise" => LayerKind::GaussianNoise(from_str_skipping(text, k)?),
            "activation" => LayerKind::Activation(from_str_skipping(text, k)?),
            "maxout" => LayerKind::Maxout(from_str_skipping(text, k)?),
            "add" => LayerKind::Add(from_str_skipping(text, k)?),
            "concat" => {
                from_str_skipping::<NoSettings>(text, k)?;
                LayerKind::Concat
            }
            other => unreachable!("layer type `{other}` was checked"),
        })
    }

    /// The optimizer: a name (`"adam"`, with its defaults) or an object tagged by `type`.
    fn optimizer(&self, raw: &RawValue) -> Result<Optimizer, ModelError> {
        let text = raw.get();
        let unknown = |ty: &str, at: &str| {
            let hint = suggest(ty, Optimizer::TYPES.iter().copied());
            let message = if hint.is_some() {
                format!("`training.optimizer`: unknown optimizer `{ty}`")
            } else {
                format!(
                    "`training.optimizer`: unknown optimizer `{ty}`, expected one of {}",
                    Optimizer::TYPES.join(", ")
                )
            };
            ModelError::new(self.file, ErrorKind::Schema, message)
                .at(Some(self.loc_at(self.offset(at))))
                .suggest(hint)
        };
        if text.starts_with('"') {
            let ty: String = serde_json::from_str(text)
                .map_err(|e| self.serde_error(e, text, self.text, None, &[]))?;
            return Optimizer::with_defaults(&ty).ok_or_else(|| unknown(&ty, text));
        }
        let fields = object_fields(text).map_err(|e| {
            let mut err = self.serde_error(e, text, self.text, None, &[]);
            if err.message.contains("invalid type") {
                err.message = format!(
                    "{}; expected an optimizer name or an object like {{\"type\": \"sgd\", \"lr\": 0.01}}",
                    err.message
                );
            }
            err
        })?;
        let Some(type_raw) = fields.get("type") else {
            return Err(ModelError::new(
                self.file,
                ErrorKind::Schema,
                format!(
                    "`training.optimizer`: missing `type`, one of {}",
                    Optimizer::TYPES.join(", ")
                ),
            )
            .at(Some(self.loc_at(self.offset(text)))));
        };
        let ty: String = serde_json::from_str(type_raw.get())
            .map_err(|e| self.serde_error(e, type_raw.get(), self.text, None, &[]))?;
        let skip: &'static [&'static str] = &["type"];
        let parsed: Result<Optimizer, serde_json::Error> = match ty.as_str() {
            "sgd" => from_str_skipping::<SgdDe>(text, skip).map(Into::into),
            "rmsprop" => from_str_skipping::<RmsPropDe>(text, skip).map(Into::into),
            "adam" => from_str_skipping::<AdamDe>(text, skip).map(Into::into),
            _ => return Err(unknown(&ty, type_raw.get())),
        };
        parsed.map_err(|e| self.serde_error(e, text, self.text, None, skip))
    }
}

/// Like [`parse_unknown`], for a message that may start with a "`path`: " prefix.
fn parse_unknown_in(message: &str) -> Option<(&'static str, String, Vec<String>)> {
    let start = message.find("unknown field `").or_else(|| message.find("unknown variant `"))?;
    parse_unknown(&message[start..])
}

/// Keras' names for the layer types, for suggestions.
fn alias(ty: &str) -> Option<String> {
    let t = ty.to_ascii_lowercase().replace('_', "");
    let to = match t.as_str() {
        "maxpooling2d" | "maxpool" | "maxpooling" => "max_pool2d",
        "averagepooling2d" | "avgpool" | "averagepooling" | "avgpooling2d" => "avg_pool2d",
        "convolution2d" | "conv" | "convolution" => "conv2d",
        "linear" | "fullyconnected" | "fc" => "dense",
        "concatenate" => "concat",
        "noise" | "gaussiannoise" => "gaussian_noise",
        _ => return None,
    };
    Some(to.into())
}
