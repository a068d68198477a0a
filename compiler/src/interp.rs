//! The reference interpreter: runs any graph with the ops' plain-loop reference semantics.
//!
//! It is the oracle every compiled backend is tested against, so it favours being obviously
//! correct over being fast: it evaluates every node in topological order in f64 and keeps
//! every value.

use std::collections::HashMap;

use kiln_ir::init::initial_values;
use kiln_ir::{EvalCtx, Graph, NodeId, Op, Tensor};

use crate::CompileError;

/// The values of parameters and state, by node name, carried from step to step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Variables {
    values: HashMap<String, Tensor>,
}

impl Variables {
    /// Initialises every parameter and state of `graph` not already present.
    pub fn init_from(&mut self, graph: &Graph) {
        for id in graph.node_ids() {
            let node = graph.node(id);
            let (init, seed) = match &node.op {
                Op::Parameter(p) => (p.init, p.seed),
                Op::State(s) => (s.init, 0),
                _ => continue,
            };
            self.values.entry(node.name.clone()).or_insert_with(|| {
                Tensor::new(node.shape.clone(), initial_values(init, &node.shape, seed))
            });
        }
    }

    /// The value of a variable.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.values.get(name)
    }

    /// Sets the value of a variable.
    pub fn set(&mut self, name: &str, value: Tensor) {
        self.values.insert(name.to_string(), value);
    }

    /// Variable names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.values.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// Evaluates `graph` once: inputs come from `feeds` (by node), parameters and state from
/// `vars`. Returns the value of every node. Then every `assign` writes its value into `vars`
/// (all reads in the step see the values from before it).
pub fn run(
    graph: &Graph,
    feeds: &HashMap<NodeId, Tensor>,
    vars: &mut Variables,
    ctx: &EvalCtx,
) -> Result<HashMap<NodeId, Tensor>, CompileError> {
    let mut values: HashMap<NodeId, Tensor> = HashMap::with_capacity(graph.len());
    let mut assigns = Vec::new();
    for id in graph.topo_order()? {
        let node = graph.node(id);
        let value = match &node.op {
            Op::Input(_) => {
                let v =
                    feeds.get(&id).ok_or_else(|| CompileError::MissingFeed(node.name.clone()))?;
                if v.shape != node.shape {
                    return Err(CompileError::FeedShape {
                        input: node.name.clone(),
                        expected: node.shape.clone(),
                        got: v.shape.clone(),
                    });
                }
                v.clone()
            }
            Op::Parameter(_) | Op::State(_) => vars
                .get(&node.name)
                .cloned()
                .ok_or_else(|| CompileError::MissingVariable(node.name.clone()))?,
            op => {
                let operands = graph.operands(id);
                let args: Vec<&Tensor> = operands.iter().map(|o| &values[o]).collect();
                let v = op.spec().eval(&args, &node.shape, ctx);
                if let Op::Assign(_) = op {
                    assigns.push((graph.node(operands[0]).name.clone(), v.clone()));
                }
                v
            }
        };
        values.insert(id, value);
    }
    for (name, value) in assigns {
        vars.set(&name, value);
    }
    Ok(values)
}
