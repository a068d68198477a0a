//! The rewrite rules, as named data in two stages: algebraic clean-up, then fusion.
//!
//! Rules are directional (no bare commutativity or associativity, so saturation stays small).
//! A rule whose right-hand side depends on attributes or shapes builds it in a [`Build`]
//! applier; the rest are plain patterns.

use egg::{rewrite, Applier, ENodeOrVar, Id, PatternAst, RecExpr, Rewrite, Subst, Symbol, Var};
use kiln_ir::ops::{
    Conv2dBiasAct, Conv2dBiasActMaxPool2d, MatMulBiasAct, MaxPool2dGradRelu, MaxPool2dGradReluBias,
    Part,
};
use kiln_ir::{Op, Shape};

use super::lang::{attr_of, Entry, KilnGraph, Node, ShapeAnalysis};

/// A rule of the rewriter.
pub type Rule = Rewrite<Node, ShapeAnalysis>;

/// What a [`Build`] applier computes from a match: the equalities it proves, each a pair of
/// patterns over the match's variables (`None` on the left: the rule's own left-hand side), or
/// `None` when the rule does not apply to this match.
type BuildFn = dyn Fn(&mut KilnGraph, &Subst) -> Option<Vec<Equality>> + Send + Sync;

/// One equality a [`Build`] applier adds: `left` (the matched term when `None`) = `right`.
type Equality = (Option<PatternAst<Node>>, PatternAst<Node>);

/// An applier that computes its right-hand side per match (to read attributes, shapes and
/// constants), then adds and unions it like a pattern would, with explanations if enabled. A
/// fusion with several results proves several equalities at once: each original value equals
/// its `part` of the fused op's packed output.
pub struct Build(Box<BuildFn>);

impl Build {
    /// The matched term equals the pattern `f` returns.
    fn new(
        f: impl Fn(&mut KilnGraph, &Subst) -> Option<PatternAst<Node>> + Send + Sync + 'static,
    ) -> Build {
        Build(Box::new(move |eg, s| f(eg, s).map(|rhs| vec![(None, rhs)])))
    }

    /// The equalities `f` returns.
    fn many(
        f: impl Fn(&mut KilnGraph, &Subst) -> Option<Vec<Equality>> + Send + Sync + 'static,
    ) -> Build {
        Build(Box::new(f))
    }
}

impl Applier<Node, ShapeAnalysis> for Build {
    fn apply_one(
        &self,
        egraph: &mut KilnGraph,
        eclass: Id,
        subst: &Subst,
        searcher_ast: Option<&PatternAst<Node>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        let Some(equalities) = (self.0)(egraph, subst) else { return vec![] };
        let mut changed = Vec::new();
        for (left, right) in &equalities {
            let left = left.as_ref().or(searcher_ast);
            if let (true, Some(left)) = (egraph.are_explanations_enabled(), left) {
                let (id, union) = egraph.union_instantiations(left, right, subst, rule_name);
                if union {
                    changed.push(id);
                }
            } else {
                let target = match left {
                    Some(left) => egraph.add_instantiation(left, subst),
                    None => eclass,
                };
                let id = egraph.add_instantiation(right, subst);
                if egraph.union(target, id) {
                    changed.push(target);
                }
            }
        }
        changed
    }
}

fn var(name: &str) -> Var {
    name.parse().expect("a pattern variable")
}

/// A right-hand side: `op` with a fresh attribute leaf for `attr` (when given) and the given
/// variables as operands.
fn rhs(
    egraph: &mut KilnGraph,
    name: &str,
    attr: Option<Op>,
    operands: &[&str],
) -> PatternAst<Node> {
    let mut ast: RecExpr<ENodeOrVar<Node>> = RecExpr::default();
    let mut children = Vec::new();
    if let Some(op) = attr {
        let key = egraph.analysis.ops.intern(Entry { op, leaf: None });
        children.push(ast.add(ENodeOrVar::ENode(Node::Attr(key))));
    }
    for v in operands {
        children.push(ast.add(ENodeOrVar::Var(var(v))));
    }
    use egg::FromOp;
    ast.add(ENodeOrVar::ENode(Node::from_op(name, children).expect("a named variant")));
    ast
}

/// A right-hand side `part(fused(operands…))`: one result of a fused op whose output packs
/// several (both `fused` and `part` are opaque [`Node::Other`] nodes).
fn packed(egraph: &mut KilnGraph, fused: Op, operands: &[&str], part: Part) -> PatternAst<Node> {
    let mut ast: PatternAst<Node> = RecExpr::default();
    let children = operands.iter().map(|v| ast.add(ENodeOrVar::Var(var(v)))).collect();
    let key = egraph.analysis.ops.intern(Entry { op: fused, leaf: None });
    let fused = ast.add(ENodeOrVar::ENode(Node::Other(key, children)));
    let key = egraph.analysis.ops.intern(Entry { op: part.into(), leaf: None });
    ast.add(ENodeOrVar::ENode(Node::Other(key, vec![fused])));
    ast
}

/// A right-hand side that is just the variable `v`.
fn just(v: &str) -> PatternAst<Node> {
    let mut ast = RecExpr::default();
    ast.add(ENodeOrVar::Var(var(v)));
    ast
}

/// The op held by the attribute class bound to `v`.
fn attr(egraph: &KilnGraph, subst: &Subst, v: &str) -> Option<Op> {
    let key = attr_of(egraph, subst[var(v)])?;
    Some(egraph.analysis.ops.get(key).op.clone())
}

fn shape(egraph: &KilnGraph, subst: &Subst, v: &str) -> Option<Shape> {
    egraph[subst[var(v)]].data.shape.clone()
}

fn constant(egraph: &KilnGraph, subst: &Subst, v: &str) -> Option<f64> {
    egraph[subst[var(v)]].data.constant
}

/// `x` when `x op c` (or `c op x`) is `x` itself: `c` the constant `unit` and the result no
/// larger than `x`.
fn drop_unit(x: &'static str, c: &'static str, unit: f64) -> Build {
    Build::new(move |eg, s| {
        let same = shape(eg, s, x).is_some()
            && shape(eg, s, c)
                .is_some_and(|cs| shape(eg, s, x).is_some_and(|xs| cs.rank() == 0 || cs == xs));
        (same && constant(eg, s, c) == Some(unit)).then(|| just(x))
    })
}

/// Stage 1: algebraic clean-up.
pub fn cleanup() -> Vec<Rule> {
    vec![
        // ReLU is idempotent.
        rewrite!("relu-relu"; "(relu (relu ?x))" => "(relu ?x)"),
        // Multiplying by a constant one is the identity.
        rewrite!("mul-one-right"; "(mul ?x ?c)" => { drop_unit("?x", "?c", 1.0) }),
        rewrite!("mul-one-left"; "(mul ?c ?x)" => { drop_unit("?x", "?c", 1.0) }),
        // Adding a constant zero is the identity.
        rewrite!("add-zero-right"; "(add ?x ?c)" => { drop_unit("?x", "?c", 0.0) }),
        rewrite!("add-zero-left"; "(add ?c ?x)" => { drop_unit("?x", "?c", 0.0) }),
        // Dropout with rate 0 keeps every element unscaled.
        rewrite!("dropout-rate-zero"; "(dropout ?a ?x)" => {
            Build::new(|eg, s| matches!(attr(eg, s, "?a"), Some(Op::Dropout(d)) if d.rate == 0.0).then(|| just("?x")))
        }),
        // A reshape to the shape the value already has is the identity.
        rewrite!("reshape-identity"; "(reshape ?a ?x)" => {
            Build::new(|eg, s| match attr(eg, s, "?a") {
                Some(Op::Reshape(r)) if shape(eg, s, "?x").is_some_and(|x| x.dims() == r.shape.as_slice()) => Some(just("?x")),
                _ => None,
            })
        }),
        // Two transposes whose permutations compose to the identity cancel.
        rewrite!("transpose-transpose"; "(transpose ?p (transpose ?q ?x))" => {
            Build::new(|eg, s| match (attr(eg, s, "?p"), attr(eg, s, "?q")) {
                (Some(Op::Transpose(p)), Some(Op::Transpose(q)))
                    if p.perm.len() == q.perm.len() && p.perm.iter().enumerate().all(|(i, &j)| q.perm[j] == i) =>
                {
                    Some(just("?x"))
                }
                _ => None,
            })
        }),
        // Consecutive bias adds of constants become one bias add of their sum.
        rewrite!("bias-bias-constants"; "(bias_add (bias_add ?x ?b1) ?b2)" => {
            Build::new(|eg, s| {
                let (b1, b2) = (constant(eg, s, "?b1")?, constant(eg, s, "?b2")?);
                let bias_shape = shape(eg, s, "?b1")?;
                (bias_shape == shape(eg, s, "?b2")?).then_some(())?;
                let sum = kiln_ir::ops::Constant { value: b1 + b2 };
                let key = eg.analysis.ops.intern(Entry { op: sum.into(), leaf: Some((bias_shape, None)) });
                let mut ast: PatternAst<Node> = RecExpr::default();
                let x = ast.add(ENodeOrVar::Var(var("?x")));
                let b = ast.add(ENodeOrVar::ENode(Node::Other(key, vec![])));
                ast.add(ENodeOrVar::ENode(Node::BiasAdd([x, b])));
                Some(ast)
            })
        }),
    ]
}

/// Stage 2: fusion.
pub fn fusion() -> Vec<Rule> {
    vec![
        // A bias add after a (plain) matmul goes into the GEMM's epilogue.
        rewrite!("matmul-bias"; "(bias_add (matmul ?a ?x ?w) ?b)" => {
            Build::new(|eg, s| match attr(eg, s, "?a") {
                Some(Op::MatMul(m)) if !m.transpose_a && !m.transpose_b => {
                    Some(rhs(eg, "matmul_bias_act", Some(MatMulBiasAct { relu: false }.into()), &["?x", "?w", "?b"]))
                }
                _ => None,
            })
        }),
        // ... and so does the ReLU after it.
        rewrite!("matmul-bias-relu"; "(relu (matmul_bias_act ?a ?x ?w ?b))" => {
            Build::new(|eg, s| match attr(eg, s, "?a") {
                Some(Op::MatMulBiasAct(m)) if !m.relu => {
                    Some(rhs(eg, "matmul_bias_act", Some(MatMulBiasAct { relu: true }.into()), &["?x", "?w", "?b"]))
                }
                _ => None,
            })
        }),
        // A bias add after a convolution goes into its GEMM's epilogue.
        rewrite!("conv-bias"; "(bias_add (conv2d ?a ?x ?w) ?b)" => {
            Build::new(|eg, s| match attr(eg, s, "?a") {
                Some(Op::Conv2d(c)) => {
                    let op = Conv2dBiasAct { stride: c.stride, pad: c.pad, relu: false };
                    Some(rhs(eg, "conv2d_bias_act", Some(op.into()), &["?x", "?w", "?b"]))
                }
                _ => None,
            })
        }),
        // ... and so does the ReLU after it.
        rewrite!("conv-bias-relu"; "(relu (conv2d_bias_act ?a ?x ?w ?b))" => {
            Build::new(|eg, s| match attr(eg, s, "?a") {
                Some(Op::Conv2dBiasAct(c)) if !c.relu => {
                    let op = Conv2dBiasAct { relu: true, ..c };
                    Some(rhs(eg, "conv2d_bias_act", Some(op.into()), &["?x", "?w", "?b"]))
                }
                _ => None,
            })
        }),
        // A max pool of a fused convolution pools in the same kernel (chosen only when nothing
        // else needs the unpooled activation: the cost model decides).
        rewrite!("conv-bias-relu-pool"; "(max_pool2d ?p (conv2d_bias_act ?a ?x ?w ?b))" => {
            Build::new(|eg, s| match (attr(eg, s, "?a"), attr(eg, s, "?p")) {
                (Some(Op::Conv2dBiasAct(c)), Some(Op::MaxPool2d(p))) => {
                    let op = Conv2dBiasActMaxPool2d {
                        stride: c.stride,
                        pad: c.pad,
                        relu: c.relu,
                        pool_size: p.size,
                        pool_stride: p.stride,
                    };
                    Some(rhs(eg, "conv2d_bias_act_max_pool2d", Some(op.into()), &["?x", "?w", "?b"]))
                }
                _ => None,
            })
        }),
        // The gradient through a ReLU, from its output rather than its input (when the output
        // exists), so the pre-activation need not be kept for the backward pass.
        rewrite!("relu-grad"; "(mul ?g (step ?z))" => {
            Build::new(|eg, s| {
                eg.lookup(Node::Relu([s[var("?z")]]))?;
                let mut ast: PatternAst<Node> = RecExpr::default();
                let g = ast.add(ENodeOrVar::Var(var("?g")));
                let z = ast.add(ENodeOrVar::Var(var("?z")));
                let a = ast.add(ENodeOrVar::ENode(Node::Relu([z])));
                ast.add(ENodeOrVar::ENode(Node::ReluGrad([g, a])));
                Some(ast)
            })
        }),
        // A max-pool gradient followed by the ReLU gradient of the pooled activation: one pass.
        rewrite!("pool-grad-relu-grad"; "(relu_grad (max_pool2d_grad ?p ?a ?g) ?a)" => {
            Build::new(|eg, s| match attr(eg, s, "?p") {
                Some(Op::MaxPool2dGrad(p)) => {
                    let op = MaxPool2dGradRelu { size: p.size, stride: p.stride };
                    Some(rhs(eg, "max_pool2d_grad_relu", Some(op.into()), &["?a", "?g"]))
                }
                _ => None,
            })
        }),
        // The bias gradient of that: summed in the same pass, into one op with a packed output
        // `[dz…, db…]`; the gradient and the bias gradient each become a `part` of it.
        rewrite!("pool-grad-relu-bias-grad"; "(reduce_sum ?r (max_pool2d_grad_relu ?p ?a ?g))" => {
            Build::many(|eg, s| {
                let (Some(Op::ReduceSum(r)), Some(Op::MaxPool2dGradRelu(p))) = (attr(eg, s, "?r"), attr(eg, s, "?p")) else {
                    return None;
                };
                let dz = shape(eg, s, "?a")?;
                (r.axes == MaxPool2dGradReluBias::bias_grad(dz.rank()).axes).then_some(())?;
                let fused = MaxPool2dGradReluBias { size: p.size, stride: p.stride };
                let part = |offset, shape: &[usize]| Part { offset, shape: shape.to_vec() };
                let db = packed(eg, fused.clone().into(), &["?a", "?g"], part(dz.numel(), &[dz.dim(-1)]));
                let dz_part = packed(eg, fused.into(), &["?a", "?g"], part(0, dz.dims()));
                let unfused: egg::Pattern<Node> = "(max_pool2d_grad_relu ?p ?a ?g)".parse().ok()?;
                Some(vec![(None, db), (Some(unfused.ast), dz_part)])
            })
        }),
        // The softmax cross-entropy gradient, `(softmax(x) - one_hot(l)) * (w * g)[:, None]`,
        // in one pass.
        rewrite!("softmax-xent-grad";
            "(mul (sub (softmax ?x) (one_hot ?c ?l)) (broadcast ?b (mul ?w ?g)))" => {
            Build::new(|eg, s| {
                let (x, w, g) = (shape(eg, s, "?x")?, shape(eg, s, "?w")?, shape(eg, s, "?g")?);
                let ok = x.rank() == 2 && w.dims() == [x.dim(0)] && g.rank() == 0
                    && matches!(attr(eg, s, "?b"), Some(Op::Broadcast(b)) if b.axes == [1]);
                ok.then(|| rhs(eg, "softmax_cross_entropy_grad", None, &["?x", "?l", "?w", "?g"]))
            })
        }),
    ]
}
