//! The text form of graphs and Graphviz output.
//!
//! One node per line, in topological order:
//!
//! ```text
//! %conv2d_1 = conv2d(%input, %conv2d_1.kernel) {pad=valid, stride=[1,1]} : f32[64,26,26,32]
//! ```
//!
//! Leaves have no operand list (`%input = input : f32[64,28,28,1]`). Attribute values are JSON
//! values, except that strings which are plain identifiers are written bare. Blank lines and
//! lines starting with `#` are ignored. [`parse`] reads back exactly what [`print`] writes.

use std::fmt::Write;

use serde_json::{Map, Value};

use crate::graph::{Graph, NodeId};
use crate::ops::Op;
use crate::shape::Shape;
use crate::IrError;

/// Prints a graph in the text form, one node per line in topological order.
pub fn print(graph: &Graph) -> Result<String, IrError> {
    let mut out = String::new();
    for id in graph.topo_order()? {
        out.push_str(&print_node(graph, id));
        out.push('\n');
    }
    Ok(out)
}

/// Prints one node as a line of the text form (without the newline).
pub fn print_node(graph: &Graph, id: NodeId) -> String {
    let node = graph.node(id);
    let mut line = format!("%{} = {}", node.name, node.op.name());
    if !node.op.spec().is_leaf() {
        let operands: Vec<String> =
            graph.operands(id).iter().map(|&o| format!("%{}", graph.node(o).name)).collect();
        let _ = write!(line, "({})", operands.join(", "));
    }
    let attrs = node.op.attrs();
    if !attrs.is_empty() {
        let _ = write!(line, " {}", attrs_text(&attrs));
    }
    let _ = write!(line, " : {}", node.shape);
    line
}

/// Prints attributes as `{key=value, …}`.
pub fn attrs_text(attrs: &Map<String, Value>) -> String {
    let parts: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={}", value_text(v))).collect();
    format!("{{{}}}", parts.join(", "))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(s, "true" | "false" | "null")
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) if is_identifier(s) => s.clone(),
        Value::Array(items) => {
            format!("[{}]", items.iter().map(value_text).collect::<Vec<_>>().join(","))
        }
        other => other.to_string(),
    }
}

/// Parses the text form back into a graph, checking every inferred shape against its annotation.
pub fn parse(text: &str) -> Result<Graph, IrError> {
    let mut graph = Graph::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| IrError::Parse { line: i + 1, message };
        let parsed = Line::parse(line).map_err(err)?;
        let operands = parsed
            .operands
            .iter()
            .map(|name| graph.find(name).ok_or_else(|| err(format!("unknown operand `%{name}`"))))
            .collect::<Result<Vec<_>, _>>()?;
        let op = Op::from_parts(&parsed.op, parsed.attrs).map_err(|e| {
            if Op::NAMES.contains(&parsed.op.as_str()) {
                err(format!("bad attributes for `{}`: {e}", parsed.op))
            } else {
                err(format!("unknown op `{}`", parsed.op))
            }
        })?;
        let id = if op.spec().is_leaf() {
            graph.leaf(op, parsed.shape.clone(), &parsed.name)
        } else {
            graph.add(op, &operands, &parsed.name)
        }
        .map_err(|e| err(e.to_string()))?;
        let node = graph.node(id);
        if node.name != parsed.name {
            return Err(err(format!("duplicate node name `%{}`", parsed.name)));
        }
        if node.shape != parsed.shape {
            return Err(err(format!(
                "annotated {} but `{}` gives {}",
                parsed.shape,
                node.op.name(),
                node.shape
            )));
        }
    }
    Ok(graph)
}

/// One parsed line: `%name = op(%a, %b) {attrs} : f32[dims]`.
struct Line {
    name: String,
    op: String,
    operands: Vec<String>,
    attrs: Map<String, Value>,
    shape: Shape,
}

impl Line {
    fn parse(line: &str) -> Result<Line, String> {
        let mut c = Cursor { rest: line };
        c.expect("%")?;
        let name = c.name()?;
        c.expect("=")?;
        let op = c.name()?;
        let mut operands = Vec::new();
        if c.eat("(") && !c.eat(")") {
            loop {
                c.expect("%")?;
                operands.push(c.name()?);
                if c.eat(")") {
                    break;
                }
                c.expect(",")?;
            }
        }
        let mut attrs = Map::new();
        if c.eat("{") && !c.eat("}") {
            loop {
                let key = c.name()?;
                c.expect("=")?;
                attrs.insert(key, c.value()?);
                if c.eat("}") {
                    break;
                }
                c.expect(",")?;
            }
        }
        c.expect(":")?;
        c.expect("f32")?;
        let dims = match c.value()? {
            Value::Array(items) => items
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize).ok_or("dimensions must be integers"))
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err("expected a shape like f32[2,3]".into()),
        };
        if !c.rest.trim().is_empty() {
            return Err(format!("unexpected `{}` after the shape", c.rest.trim()));
        }
        Ok(Line { name, op, operands, attrs, shape: Shape(dims) })
    }
}

/// A tiny scanner over one line.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(token) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(format!("expected `{token}` at `{}`", self.rest))
        }
    }

    fn name(&mut self) -> Result<String, String> {
        self.skip_space();
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c)))
            .unwrap_or(self.rest.len());
        if end == 0 {
            return Err(format!("expected a name at `{}`", self.rest));
        }
        let (name, rest) = self.rest.split_at(end);
        self.rest = rest;
        Ok(name.to_string())
    }

    /// An attribute value: a JSON value, a bare identifier (a string), or an array of those.
    fn value(&mut self) -> Result<Value, String> {
        self.skip_space();
        if self.eat("[") {
            let mut items = Vec::new();
            if !self.eat("]") {
                loop {
                    items.push(self.value()?);
                    if self.eat("]") {
                        break;
                    }
                    self.expect(",")?;
                }
            }
            return Ok(Value::Array(items));
        }
        let first = self.rest.chars().next().ok_or("expected a value at the end of the line")?;
        if first.is_ascii_alphabetic() || first == '_' {
            let word = self.name()?;
            return Ok(match word.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => Value::String(word),
            });
        }
        let mut stream = serde_json::Deserializer::from_str(self.rest).into_iter::<Value>();
        let value = match stream.next() {
            Some(Ok(v)) => v,
            _ => return Err(format!("expected a value at `{}`", self.rest)),
        };
        self.rest = &self.rest[stream.byte_offset()..];
        Ok(value)
    }
}

/// Graphviz DOT output: one box per node (name, op, attributes, shape), edges labelled with the
/// operand position when an op has more than one operand.
pub fn dot(graph: &Graph) -> Result<String, IrError> {
    let mut out = String::from(
        "digraph kiln {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n",
    );
    let order = graph.topo_order()?;
    let index_of = |id: NodeId| order.iter().position(|&o| o == id).unwrap_or(0);
    for &id in &order {
        let node = graph.node(id);
        let attrs = node.op.attrs();
        let mut label = format!("{}\\n{}", node.name, node.op.name());
        if !attrs.is_empty() {
            let _ = write!(label, " {}", attrs_text(&attrs));
        }
        let _ = write!(label, "\\n{}", node.shape);
        let style = match node.op {
            Op::Parameter(_) => ", style=filled, fillcolor=\"#dde8ff\"",
            Op::State(_) => ", style=filled, fillcolor=\"#eeeeee\"",
            Op::Input(_) => ", style=filled, fillcolor=\"#ddffdd\"",
            Op::Output(_) | Op::Assign(_) => ", style=filled, fillcolor=\"#ffe8cc\"",
            _ => "",
        };
        let _ =
            writeln!(out, "  n{} [label=\"{}\"{style}];", index_of(id), label.replace('"', "\\\""));
    }
    for &id in &order {
        let operands = graph.operands(id);
        for (pos, &o) in operands.iter().enumerate() {
            if operands.len() > 1 {
                let _ = writeln!(out, "  n{} -> n{} [label=\"{pos}\"];", index_of(o), index_of(id));
            } else {
                let _ = writeln!(out, "  n{} -> n{};", index_of(o), index_of(id));
            }
        }
    }
    out.push_str("}\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Add, BiasAdd, Constant, Init, Input, MatMul, Output, Parameter, Relu};

    fn small_graph() -> Graph {
        let mut g = Graph::new();
        let x = g.leaf(Input {}, Shape::new([4, 3]), "input").unwrap();
        let w = g
            .leaf(
                Parameter { init: Init::GlorotUniform, seed: 7 },
                Shape::new([3, 2]),
                "dense_1.kernel",
            )
            .unwrap();
        let b = g
            .leaf(Parameter { init: Init::Zeros, seed: 8 }, Shape::new([2]), "dense_1.bias")
            .unwrap();
        let h = g.add(MatMul { transpose_a: false, transpose_b: true }, &[x, w], "dense_1");
        assert!(h.is_err(), "transposed [3,2] does not fit [4,3]");
        let h = g.add(MatMul::default(), &[x, w], "dense_1").unwrap();
        let h = g.add(BiasAdd {}, &[h, b], "dense_1.bias_add").unwrap();
        let h = g.add(Relu {}, &[h], "dense_1.relu").unwrap();
        let c = g.leaf(Constant { value: 0.5 }, Shape::scalar(), "half").unwrap();
        let y = g.add(Add {}, &[h, c], "shifted").unwrap();
        g.add(Output { name: "prediction".into() }, &[y], "prediction").unwrap();
        g
    }

    #[test]
    fn prints_one_node_per_line() {
        let text = print(&small_graph()).unwrap();
        let expected = "\
%input = input : f32[4,3]
%dense_1.kernel = parameter {init=glorot_uniform, seed=7} : f32[3,2]
%dense_1.bias = parameter {init=zeros, seed=8} : f32[2]
%dense_1 = matmul(%input, %dense_1.kernel) : f32[4,2]
%dense_1.bias_add = bias_add(%dense_1, %dense_1.bias) : f32[4,2]
%dense_1.relu = relu(%dense_1.bias_add) : f32[4,2]
%half = constant {value=0.5} : f32[]
%shifted = add(%dense_1.relu, %half) : f32[4,2]
%prediction = output(%shifted) {name=prediction} : f32[4,2]
";
        assert_eq!(text, expected);
    }

    #[test]
    fn round_trips() {
        let text = print(&small_graph()).unwrap();
        let parsed = parse(&text).unwrap();
        assert_eq!(print(&parsed).unwrap(), text);
        let with_attrs =
            "%x = input : f32[2,3]\n%t = matmul(%x, %x) {transpose_b=true} : f32[2,2]\n";
        assert_eq!(print(&parse(with_attrs).unwrap()).unwrap(), with_attrs);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let bad_shape = "%x = input : f32[2,3]\n%y = relu(%x) : f32[3,2]\n";
        let e = parse(bad_shape).unwrap_err().to_string();
        assert!(e.starts_with("line 2:") && e.contains("annotated f32[3,2]"), "{e}");
        let unknown = "%x = input : f32[2]\n%y = rleu(%x) : f32[2]\n";
        assert!(parse(unknown).unwrap_err().to_string().contains("unknown op `rleu`"));
        let operand = "%y = relu(%x) : f32[2]\n";
        assert!(parse(operand).unwrap_err().to_string().contains("unknown operand `%x`"));
        let attr = "%x = input : f32[2]\n%y = leaky_relu(%x) {alpah=0.1} : f32[2]\n";
        assert!(parse(attr).unwrap_err().to_string().contains("bad attributes"));
        let dup = "%x = input : f32[2]\n%x = relu(%x) : f32[2]\n";
        assert!(parse(dup).unwrap_err().to_string().contains("duplicate"));
    }

    #[test]
    fn dot_has_every_node_and_edge() {
        let g = small_graph();
        let d = dot(&g).unwrap();
        let node_lines = d.lines().filter(|l| l.contains(" [label=") && !l.contains("->")).count();
        let edge_lines = d.lines().filter(|l| l.contains("->")).count();
        assert_eq!(node_lines, g.len());
        assert_eq!(edge_lines, 8);
        assert!(d.contains("n0 -> n3 [label=\"0\"]"));
        assert!(d.starts_with("digraph kiln {"));
    }
}
