//! The Keras-style summary table.

use std::fmt::Write;

use super::{Mode, Model, ModelError};

/// `1234567` as `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `[1, 26, 26, 32]` as `(None, 26, 26, 32)`: the batch dimension is left open.
fn shape_text(dims: &[usize]) -> String {
    let mut parts = vec!["None".to_string()];
    parts.extend(dims.iter().skip(1).map(|d| d.to_string()));
    format!("({})", parts.join(", "))
}

pub(super) fn summary(model: &Model) -> Result<String, ModelError> {
    let built = model.build(1, Mode::Eval)?;
    let graph_form = model.layers.iter().any(|l| l.inputs.is_some());
    let mut rows: Vec<[String; 4]> = Vec::new();
    if graph_form {
        let mut dims = vec![1];
        dims.extend(&model.input.shape);
        rows.push(["input (input)".into(), shape_text(&dims), "0".into(), String::new()]);
    }
    for l in &built.layers {
        rows.push([
            format!("{} ({})", l.name, l.kind),
            shape_text(l.output_shape.dims()),
            thousands(l.params),
            l.inputs.join(", "),
        ]);
    }
    let header = ["Layer (type)", "Output Shape", "Param #", "Connected to"];
    let columns = if graph_form { 4 } else { 3 };
    let mins = [28, 26, 10, 20];
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            let longest = rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
            longest.max(header[c].len()).max(mins[c]) + 2
        })
        .collect();
    let total_width = widths.iter().sum::<usize>() + 1;
    let line = |cells: &[String]| {
        let mut s = String::from(" ");
        for (c, cell) in cells.iter().take(columns).enumerate() {
            s.push_str(cell);
            if c + 1 < columns {
                s.push_str(&" ".repeat(widths[c].saturating_sub(cell.chars().count())));
            }
        }
        s.trim_end().to_string()
    };
    let total = built.graph.parameter_count();
    let mut out = String::new();
    let _ = writeln!(out, "Model: \"{}\"", model.name);
    let _ = writeln!(out, "{}", "_".repeat(total_width));
    let _ = writeln!(out, "{}", line(&header.map(String::from)));
    let _ = writeln!(out, "{}", "=".repeat(total_width));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r));
    }
    let _ = writeln!(out, "{}", "=".repeat(total_width));
    let _ = writeln!(out, "Total params: {}", thousands(total));
    let _ = writeln!(out, "Trainable params: {}", thousands(total));
    let _ = writeln!(out, "Non-trainable params: 0");
    let _ = writeln!(out, "{}", "_".repeat(total_width));
    Ok(out)
}
