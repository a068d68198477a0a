//! [`ModelError`]: every problem with a model file, located in the text, with a suggestion
//! for misspelt names.

use std::fmt;

/// A position in a model file: 1-based line and column (columns count characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What kind of problem a [`ModelError`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The file could not be read.
    Io,
    /// The text is not valid JSON (or is empty).
    Syntax,
    /// Valid JSON that does not follow the schema: an unknown or missing field, a value of the
    /// wrong type or out of range, an unknown name.
    Schema,
    /// The parts do not fit together: layer names and references, shapes, the loss.
    Semantic,
}

/// The layer a [`ModelError`] concerns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LayerRef {
    /// 1-based position in the `layers` list.
    pub index: usize,
    /// The layer's name (given or default), when known.
    pub name: Option<String>,
    /// The layer's type, when known.
    pub kind: Option<String>,
}

/// A problem with a model: where it is and what is wrong. Never a panic.
///
/// Displays as `file:line:column: layer 3 `conv2d_2` (conv2d): message; did you mean `x`?`,
/// leaving out the parts that do not apply.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct ModelError {
    /// The file name (for models built in code, `<model name>`).
    pub file: String,
    /// Where in the file, when the problem is located in the text.
    pub location: Option<Location>,
    /// The layer concerned, if any (boxed to keep the error small).
    pub layer: Option<Box<LayerRef>>,
    /// The kind of problem.
    pub kind: ErrorKind,
    /// What is wrong.
    pub message: String,
    /// A close valid name, for a misspelt one.
    pub suggestion: Option<String>,
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(loc) = self.location {
            write!(f, ":{loc}")?;
        }
        write!(f, ": ")?;
        if let Some(layer) = &self.layer {
            write!(f, "layer {}", layer.index)?;
            if let Some(name) = &layer.name {
                write!(f, " `{name}`")?;
            }
            if let Some(kind) = &layer.kind {
                write!(f, " ({kind})")?;
            }
            write!(f, ": ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(s) = &self.suggestion {
            write!(f, "; did you mean `{s}`?")?;
        }
        Ok(())
    }
}

impl ModelError {
    /// An error with only a file, a kind and a message.
    pub fn new(file: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        ModelError {
            file: file.into(),
            location: None,
            layer: None,
            kind,
            message: message.into(),
            suggestion: None,
        }
    }

    /// Sets the location.
    pub fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }

    /// Sets the layer concerned.
    pub fn in_layer(mut self, layer: Option<LayerRef>) -> Self {
        self.layer = layer.map(Box::new);
        self
    }

    /// Sets the suggestion.
    pub fn suggest(mut self, suggestion: Option<String>) -> Self {
        self.suggestion = suggestion;
        self
    }
}

/// The candidate closest to `word`, if it is close enough to be a plausible misspelling:
/// Levenshtein distance ≤ 2 (and less than the word's length), or Jaro–Winkler similarity
/// ≥ 0.85 for words of 4 characters or more. Case and `_` are ignored in the comparison.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('_', "");
    let w = norm(word);
    let mut best: Option<(usize, f64, &str)> = None;
    for c in candidates {
        if c == word {
            continue;
        }
        let cn = norm(c);
        let lev = strsim::levenshtein(&w, &cn);
        let jw = strsim::jaro_winkler(&w, &cn);
        let shortest = w.chars().count().min(cn.chars().count());
        let close = (lev <= 2 && lev < shortest) || (jw >= 0.85 && shortest >= 4);
        if !close {
            continue;
        }
        let better = match best {
            None => true,
            Some((bl, bj, _)) => lev < bl || (lev == bl && jw > bj),
        };
        if better {
            best = Some((lev, jw, c));
        }
    }
    best.map(|(_, _, c)| c.to_string())
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant …")
/// message into the unknown name and the expected names.
pub(crate) fn parse_unknown(message: &str) -> Option<(&'static str, String, Vec<String>)> {
    let (what, rest) = if let Some(rest) = message.strip_prefix("unknown field `") {
        ("field", rest)
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        ("variant", rest)
    } else {
        return None;
    };
    let end = rest.find('`')?;
    let name = rest[..end].to_string();
    let expected = rest[end + 1..].split_once("expected").map(|(_, e)| e).unwrap_or("");
    let names = expected.split('`').skip(1).step_by(2).map(str::to_string).collect();
    Some((what, name, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let types = ["dense", "conv2d", "max_pool2d", "avg_pool2d", "flatten"];
        assert_eq!(suggest("conv2", types).as_deref(), Some("conv2d"));
        assert_eq!(suggest("Conv2D", types).as_deref(), Some("conv2d"));
        assert_eq!(suggest("maxpool2d", types).as_deref(), Some("max_pool2d"));
        assert_eq!(suggest("lstm", types), None);
        assert_eq!(suggest("rleu", ["relu", "elu", "tanh"]).as_deref(), Some("relu"));
        assert_eq!(suggest("smae", ["valid", "same"]).as_deref(), Some("same"));
        assert_eq!(suggest("x", ["lr", "rho"]), None);
    }

    #[test]
    fn parses_serde_unknown_messages() {
        let (what, name, names) =
            parse_unknown("unknown field `filter`, expected one of `filters`, `kernel_size`")
                .unwrap();
        assert_eq!((what, name.as_str()), ("field", "filter"));
        assert_eq!(names, ["filters", "kernel_size"]);
        let (_, _, names) = parse_unknown("unknown variant `x`, expected `a` or `b`").unwrap();
        assert_eq!(names, ["a", "b"]);
        let (_, _, names) = parse_unknown("unknown field `x`, there are no fields").unwrap();
        assert!(names.is_empty());
    }

    #[test]
    fn display() {
        let e = ModelError::new("m.json", ErrorKind::Schema, "unknown field `filter`")
            .at(Some(Location { line: 12, column: 15 }))
            .in_layer(Some(LayerRef {
                index: 3,
                name: Some("conv2d_2".into()),
                kind: Some("conv2d".into()),
            }))
            .suggest(Some("filters".into()));
        assert_eq!(
            e.to_string(),
            "m.json:12:15: layer 3 `conv2d_2` (conv2d): unknown field `filter`; did you mean `filters`?"
        );
    }
}
