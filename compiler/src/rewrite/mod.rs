//! The rewrite pass: equality saturation with egg between autodiff and lowering.
//!
//! The graph (a DAG with several roots: every `assign`, every `output` and every data input)
//! becomes an e-graph ([`lang`]), staged rule sets run on it under explicit budgets
//! ([`rules`]: algebraic clean-up, then fusion), and a cost model of bytes moved plus flops
//! picks the cheapest equivalent graph ([`extract`]). Node names survive: each extracted node
//! takes the name of an original node of its e-class, so parameters, state and outputs keep
//! theirs. A [`FusionReport`] says what happened: per stage the stop reason, iterations and
//! e-graph size; per fused node the original ops it covers and, with explanations on, the
//! chain of rules that produced it.

mod extract;
pub mod lang;
pub mod rules;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use egg::{FlatTerm, Id, Language, RecExpr, Runner, SimpleScheduler};
use kiln_ir::{Graph, IrError, NodeId, Op};

pub use extract::node_cost;
use lang::{KilnGraph, Node};
pub use rules::Rule;

/// Limits of one stage's saturation run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// At most this many iterations.
    pub iterations: usize,
    /// Stop once the e-graph has this many e-nodes.
    pub nodes: usize,
    /// Stop after this much time.
    pub time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { iterations: 16, nodes: 50_000, time: Duration::from_millis(200) }
    }
}

/// Options of the pass.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RewriteOptions {
    /// The budget of each stage.
    pub budget: Budget,
    /// Record egg explanations, so the report can say which rules produced each fused node
    /// (slower; for `kiln dump --explain`).
    pub explain: bool,
}

/// What one stage did.
#[derive(Clone, Debug, PartialEq)]
pub struct StageReport {
    /// The stage's name.
    pub name: &'static str,
    /// Why saturation stopped (`Saturated`, or the limit hit).
    pub stop_reason: String,
    /// Iterations run.
    pub iterations: usize,
    /// E-nodes in the e-graph at the end.
    pub nodes: usize,
    /// E-classes at the end.
    pub classes: usize,
    /// How often each rule applied, by name.
    pub applied: Vec<(String, usize)>,
}

/// A fused node of the rewritten graph.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedNode {
    /// Its name in the rewritten graph.
    pub name: String,
    /// Its op.
    pub op: &'static str,
    /// The original nodes it computes (its own and those no longer in the graph), by name.
    pub covers: Vec<String>,
    /// The rules that produced it, in proof order (empty unless explanations were on).
    pub rules: Vec<String>,
}

/// What the pass did, for dumps and for tests that assert structure.
#[derive(Clone, Debug, PartialEq)]
pub struct FusionReport {
    /// The stages, in order.
    pub stages: Vec<StageReport>,
    /// Fused nodes of the result, in execution order.
    pub fused: Vec<FusedNode>,
    /// Nodes before and after.
    pub nodes: (usize, usize),
    /// The cost model's figure for the original and the rewritten graph.
    pub cost: (f64, f64),
    /// Wall time of the whole pass, ms.
    pub ms: f64,
}

impl FusionReport {
    /// How many nodes of the result have op `name`.
    pub fn count(&self, graph: &Graph, name: &str) -> usize {
        graph.node_ids().into_iter().filter(|&n| graph.node(n).op.name() == name).count()
    }

    /// A readable summary: stages, then every fused node with what it covers (and its rules).
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# rewrite: {} -> {} nodes, cost {:.3e} -> {:.3e}, {:.1} ms",
            self.nodes.0, self.nodes.1, self.cost.0, self.cost.1, self.ms
        );
        for st in &self.stages {
            let applied: Vec<String> =
                st.applied.iter().map(|(r, n)| format!("{r} x{n}")).collect();
            let _ = writeln!(
                s,
                "# stage {}: {}, {} iterations, {} e-nodes, {} e-classes; applied: {}",
                st.name,
                st.stop_reason,
                st.iterations,
                st.nodes,
                st.classes,
                if applied.is_empty() { "none".into() } else { applied.join(", ") }
            );
        }
        for f in &self.fused {
            let _ = writeln!(s, "# %{} = {} covers {}", f.name, f.op, f.covers.join(", "));
            if !f.rules.is_empty() {
                let _ = writeln!(s, "#   by {}", f.rules.join(" -> "));
            }
        }
        s
    }
}

/// The result of the pass.
#[derive(Clone, Debug)]
pub struct Rewritten {
    /// The rewritten graph.
    pub graph: Graph,
    /// Where each original node's value is in the rewritten graph (when it still is).
    pub renamed: HashMap<NodeId, NodeId>,
    /// What happened.
    pub report: FusionReport,
}

/// The ops the fusion rules introduce.
const FUSED: &[&str] = &[
    "matmul_bias_act",
    "conv2d_bias_act",
    "conv2d_bias_act_max_pool2d",
    "relu_grad",
    "max_pool2d_grad_relu",
    "max_pool2d_grad_relu_bias",
    "softmax_cross_entropy_grad",
];

/// The staged rule sets of the pass.
pub fn stages() -> Vec<(&'static str, Vec<Rule>)> {
    vec![("cleanup", rules::cleanup()), ("fusion", rules::fusion())]
}

/// Runs the pass with the standard stages.
pub fn rewrite(graph: &Graph, options: &RewriteOptions) -> Result<Rewritten, IrError> {
    rewrite_with(graph, &stages(), options)
}

/// Runs the pass with the given stages (tests use their own).
pub fn rewrite_with(
    graph: &Graph,
    stages: &[(&'static str, Vec<Rule>)],
    options: &RewriteOptions,
) -> Result<Rewritten, IrError> {
    let start = Instant::now();
    let order = graph.topo_order()?;
    let mut egraph = KilnGraph::default();
    if options.explain {
        egraph = egraph.with_explanations_enabled();
    }
    let mut ids: HashMap<NodeId, Id> = HashMap::new();
    let mut roots = Vec::new();
    for &n in &order {
        let node = graph.node(n);
        let operands: Vec<Id> = graph.operands(n).iter().map(|o| ids[o]).collect();
        let leaf = node.op.spec().is_leaf().then(|| {
            let name = (!matches!(node.op, Op::Constant(_))).then(|| node.name.clone());
            (node.shape.clone(), name)
        });
        let id = Node::add_op(&mut egraph, &node.op, leaf, &operands);
        ids.insert(n, id);
        if matches!(node.op, Op::Assign(_) | Op::Output(_) | Op::Input(_)) {
            roots.push(id);
        }
    }
    egraph.rebuild();
    let before = extract::extract(&egraph, &roots).cost;

    let mut reports = Vec::new();
    for (name, rules) in stages {
        let runner = Runner::default()
            .with_scheduler(SimpleScheduler)
            .with_egraph(egraph)
            .with_iter_limit(options.budget.iterations)
            .with_node_limit(options.budget.nodes)
            .with_time_limit(options.budget.time)
            .run(rules);
        let mut applied: HashMap<String, usize> = HashMap::new();
        for it in &runner.iterations {
            for (rule, n) in &it.applied {
                *applied.entry(rule.to_string()).or_default() += n;
            }
        }
        let mut applied: Vec<(String, usize)> = applied.into_iter().collect();
        applied.sort();
        reports.push(StageReport {
            name,
            stop_reason: runner
                .stop_reason
                .as_ref()
                .map_or_else(|| "not run".into(), |r| format!("{r:?}")),
            iterations: runner.iterations.len(),
            nodes: runner.egraph.total_number_of_nodes(),
            classes: runner.egraph.number_of_classes(),
            applied,
        });
        egraph = runner.egraph;
    }

    let choice = extract::extract(&egraph, &roots);
    let post_order = extract::reachable(&egraph, &choice.nodes, &roots)
        .expect("the extracted choice is acyclic");
    // Each class is named after its first original node.
    let mut names: HashMap<Id, String> = HashMap::new();
    let mut originals: HashMap<Id, Vec<NodeId>> = HashMap::new();
    for &n in &order {
        let class = egraph.find(ids[&n]);
        names.entry(class).or_insert_with(|| graph.node(n).name.clone());
        originals.entry(class).or_default().push(n);
    }
    // A class new to the graph (a fused op with several results) is named after its first
    // user: `<user>.<op>`.
    for &class in post_order.iter().rev() {
        let Some(user) = names.get(&class).cloned() else { continue };
        for child in choice.nodes[&class].children() {
            let child = egraph.find(*child);
            if names.contains_key(&child) {
                continue;
            }
            if let Some((op, _)) =
                choice.nodes[&child].op(&egraph.analysis.ops, |id| lang::attr_of(&egraph, id))
            {
                names.insert(child, format!("{user}.{}", op.name()));
            }
        }
    }
    let mut out = Graph::new();
    let mut built: HashMap<Id, NodeId> = HashMap::new();
    for &class in &post_order {
        let node = &choice.nodes[&class];
        let Some((op, operands)) = node.op(&egraph.analysis.ops, |id| lang::attr_of(&egraph, id))
        else {
            continue; // an attribute leaf
        };
        let name = names.get(&class).cloned().unwrap_or_else(|| format!("{}.{class}", op.name()));
        let id = if op.spec().is_leaf() {
            let shape = egraph[class].data.shape.clone().expect("leaves have shapes");
            out.leaf(op, shape, &name)?
        } else {
            let operands: Vec<NodeId> = operands.iter().map(|c| built[&egraph.find(*c)]).collect();
            out.add(op, &operands, &name)?
        };
        built.insert(class, id);
    }
    let renamed = ids
        .iter()
        .filter_map(|(&old, &id)| built.get(&egraph.find(id)).map(|&new| (old, new)))
        .collect();

    let fused = fused_nodes(graph, &out, &egraph, &ids, &built, &originals, &choice.nodes, options);
    let report = FusionReport {
        stages: reports,
        fused,
        nodes: (graph.len(), out.len()),
        cost: (before, choice.cost),
        ms: start.elapsed().as_secs_f64() * 1e3,
    };
    Ok(Rewritten { graph: out, renamed, report })
}

/// The fused nodes of `out`, each with the original nodes it covers: those of its own class,
/// and, walking operands from there, the original nodes that are no longer in the graph and
/// not covered by an earlier fused node. With explanations, also the rules that proved the
/// original node equal to the fused one.
#[allow(clippy::too_many_arguments)]
fn fused_nodes(
    original: &Graph,
    out: &Graph,
    egraph: &KilnGraph,
    ids: &HashMap<NodeId, Id>,
    built: &HashMap<Id, NodeId>,
    originals: &HashMap<Id, Vec<NodeId>>,
    choice: &HashMap<Id, Node>,
    options: &RewriteOptions,
) -> Vec<FusedNode> {
    let mut egraph = egraph.clone();
    let mut claimed: HashSet<NodeId> = HashSet::new();
    let mut fused = Vec::new();
    let order = out.topo_order().unwrap_or_default();
    let class_of_new: HashMap<NodeId, Id> = built.iter().map(|(&c, &n)| (n, c)).collect();
    // The classes of the `part`s reading each packed output.
    let mut parts: HashMap<NodeId, Vec<Id>> = HashMap::new();
    for &n in &order {
        if matches!(out.node(n).op, Op::Part(_)) {
            parts.entry(out.operands(n)[0]).or_default().push(class_of_new[&n]);
        }
    }
    for n in order {
        let node = out.node(n);
        if !FUSED.contains(&node.op.name()) {
            continue;
        }
        // The original nodes it computes: those of its class, or of its parts' classes.
        let class = class_of_new[&n];
        let classes = std::iter::once(class).chain(parts.get(&n).into_iter().flatten().copied());
        let starts: Vec<NodeId> =
            classes.flat_map(|c| originals.get(&c).cloned().unwrap_or_default()).collect();
        let mut covers = Vec::new();
        let mut stack = starts.clone();
        while let Some(o) = stack.pop() {
            if !claimed.insert(o) {
                continue;
            }
            covers.push(original.node(o).name.clone());
            for operand in original.operands(o) {
                let c = egraph.find(ids[&operand]);
                if !built.contains_key(&c) && !claimed.contains(&operand) {
                    stack.push(operand);
                }
            }
        }
        covers.sort();
        let rules = match (options.explain, starts.first()) {
            (true, Some(&first)) => {
                let left = egraph.id_to_expr(ids[&first]);
                let right = expr_of(&egraph, choice, egraph.find(ids[&first]));
                let mut explanation = egraph.explain_equivalence(&left, &right);
                let mut names = Vec::new();
                for term in explanation.make_flat_explanation().iter() {
                    collect_rules(term, 0, &mut names);
                }
                names
            }
            _ => Vec::new(),
        };
        fused.push(FusedNode { name: node.name.clone(), op: node.op.name(), covers, rules });
    }
    fused
}

/// The term the choice extracts for `class`.
fn expr_of(egraph: &KilnGraph, choice: &HashMap<Id, Node>, class: Id) -> RecExpr<Node> {
    fn go(
        egraph: &KilnGraph,
        choice: &HashMap<Id, Node>,
        class: Id,
        expr: &mut RecExpr<Node>,
        done: &mut HashMap<Id, Id>,
    ) -> Id {
        let class = egraph.find(class);
        if let Some(&id) = done.get(&class) {
            return id;
        }
        let node = choice[&class].clone().map_children(|c| go(egraph, choice, c, expr, done));
        let id = expr.add(node);
        done.insert(class, id);
        id
    }
    let mut expr = RecExpr::default();
    go(egraph, choice, class, &mut expr, &mut HashMap::new());
    expr
}

/// How deep below a fused node a rule of its proof may apply: the roots of the fusion rules'
/// left-hand sides are at most this deep (`(mul (sub (softmax ..) ..) ..)`). Deeper steps of
/// the proof rewrite the node's operands, which are other fused nodes' business.
const PROOF_DEPTH: usize = 2;

/// The rule names of a flat explanation term and its children down to [`PROOF_DEPTH`],
/// without repeats.
fn collect_rules(term: &FlatTerm<Node>, depth: usize, names: &mut Vec<String>) {
    for rule in [term.forward_rule, term.backward_rule].into_iter().flatten() {
        let rule = rule.to_string();
        if !names.contains(&rule) {
            names.push(rule);
        }
    }
    if depth < PROOF_DEPTH {
        for child in &term.children {
            collect_rules(child, depth + 1, names);
        }
    }
}
