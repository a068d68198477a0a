//! Optimizer updates as graph nodes: each parameter's new value, and each optimizer slot's,
//! becomes an `assign` at the end of the training step.
//!
//! Conventions (as torch.optim): weight decay adds `wd * w` to the gradient (L2); SGD momentum
//! keeps `v = m v + g` and steps by `lr v` (Nesterov: `lr (g + m v)`); RMSprop divides by
//! `sqrt(s) + eps`; Adam keeps `beta^t` as state for its bias correction.

use std::collections::HashMap;

use kiln_ir::model::Optimizer;
use kiln_ir::ops::{Add, Assign, Constant, Div, Init, Mul, Sqrt, State, Sub};
use kiln_ir::{Graph, IrError, NodeId, Op, Shape};

/// Adds the update of every parameter in `params` (with gradients `grads`) to `graph` and
/// returns the `assign` nodes, parameters first, then optimizer state.
pub fn append_updates(
    graph: &mut Graph,
    params: &[NodeId],
    grads: &[NodeId],
    optimizer: &Optimizer,
    weight_decay: f64,
) -> Result<Vec<NodeId>, IrError> {
    let mut u = Updates { graph, constants: HashMap::new(), assigns: Vec::new() };
    // Adam's bias corrections `1 - beta^t`, shared by every parameter.
    let adam_corrections = match optimizer {
        Optimizer::Adam { beta1, beta2, .. } => Some((
            u.correction("adam.beta1_power", *beta1)?,
            u.correction("adam.beta2_power", *beta2)?,
        )),
        _ => None,
    };
    for (&p, &g) in params.iter().zip(grads) {
        let name = u.graph.node(p).name.clone();
        let g = if weight_decay > 0.0 {
            let wd = u.constant(weight_decay)?;
            let decay = u.op(Mul {}, &[p, wd], &format!("{name}.decay"))?;
            u.op(Add {}, &[g, decay], &format!("{name}.decayed_grad"))?
        } else {
            g
        };
        let step = match *optimizer {
            Optimizer::Sgd { lr, momentum, nesterov } => {
                let direction = if momentum > 0.0 {
                    let v = u.slot(p, "velocity")?;
                    let m = u.constant(momentum)?;
                    let mv = u.op(Mul {}, &[v, m], &format!("{name}.velocity.decay"))?;
                    let v_new = u.op(Add {}, &[mv, g], &format!("{name}.velocity.new"))?;
                    u.assign(v, v_new)?;
                    if nesterov {
                        let mv_new = u.op(Mul {}, &[v_new, m], &format!("{name}.nesterov"))?;
                        u.op(Add {}, &[g, mv_new], &format!("{name}.nesterov"))?
                    } else {
                        v_new
                    }
                } else {
                    g
                };
                let lr = u.constant(lr)?;
                u.op(Mul {}, &[direction, lr], &format!("{name}.step"))?
            }
            Optimizer::Rmsprop { lr, rho, eps } => {
                let s = u.slot(p, "rms")?;
                let s_new = u.moving_average(s, g, rho, true, &format!("{name}.rms"))?;
                u.assign(s, s_new)?;
                let denom = u.sqrt_plus_eps(s_new, eps, &name)?;
                let scaled = u.op(Div {}, &[g, denom], &format!("{name}.scaled"))?;
                let lr = u.constant(lr)?;
                u.op(Mul {}, &[scaled, lr], &format!("{name}.step"))?
            }
            Optimizer::Adam { lr, beta1, beta2, eps } => {
                let (c1, c2) = adam_corrections.expect("created for adam");
                let m = u.slot(p, "adam_m")?;
                let v = u.slot(p, "adam_v")?;
                let m_new = u.moving_average(m, g, beta1, false, &format!("{name}.adam_m"))?;
                let v_new = u.moving_average(v, g, beta2, true, &format!("{name}.adam_v"))?;
                u.assign(m, m_new)?;
                u.assign(v, v_new)?;
                let m_hat = u.op(Div {}, &[m_new, c1], &format!("{name}.adam_m_hat"))?;
                let v_hat = u.op(Div {}, &[v_new, c2], &format!("{name}.adam_v_hat"))?;
                let denom = u.sqrt_plus_eps(v_hat, eps, &name)?;
                let scaled = u.op(Div {}, &[m_hat, denom], &format!("{name}.scaled"))?;
                let lr = u.constant(lr)?;
                u.op(Mul {}, &[scaled, lr], &format!("{name}.step"))?
            }
        };
        let new = u.op(Sub {}, &[p, step], &format!("{name}.new"))?;
        u.assign(p, new)?;
    }
    // Parameters' assigns first, then state, for a readable dump.
    let Updates { graph, mut assigns, .. } = u;
    assigns.sort_by_key(|&a| !matches!(graph.node(graph.operands(a)[0]).op, Op::Parameter(_)));
    Ok(assigns)
}

/// Builds the update nodes, sharing one node per distinct scalar constant.
struct Updates<'g> {
    graph: &'g mut Graph,
    constants: HashMap<u64, NodeId>,
    assigns: Vec<NodeId>,
}

impl Updates<'_> {
    fn op(
        &mut self,
        op: impl Into<Op>,
        operands: &[NodeId],
        name: &str,
    ) -> Result<NodeId, IrError> {
        self.graph.add(op, operands, name)
    }

    fn constant(&mut self, value: f64) -> Result<NodeId, IrError> {
        if let Some(&c) = self.constants.get(&value.to_bits()) {
            return Ok(c);
        }
        let c =
            // Named by the f32 value the kernels use (`1 - 0.9` is named 0.1).
            self.graph.leaf(Constant { value }, Shape::scalar(), &format!("opt.const.{}", value as f32))?;
        self.constants.insert(value.to_bits(), c);
        Ok(c)
    }

    /// A zero-initialised optimizer slot shaped like parameter `p`.
    fn slot(&mut self, p: NodeId, what: &str) -> Result<NodeId, IrError> {
        let node = self.graph.node(p);
        let (shape, name) = (node.shape.clone(), format!("{}.{what}", node.name));
        self.graph.leaf(State { init: Init::Zeros }, shape, &name)
    }

    fn assign(&mut self, target: NodeId, value: NodeId) -> Result<(), IrError> {
        let name = format!("{}.assign", self.graph.node(target).name);
        let a = self.graph.add(Assign {}, &[target, value], &name)?;
        self.assigns.push(a);
        Ok(())
    }

    /// Adam's bias correction `1 - beta^t` for the current step `t`, with `beta^t` kept as a
    /// scalar state that starts at 1 and is multiplied by `beta` every step.
    fn correction(&mut self, name: &str, beta: f64) -> Result<NodeId, IrError> {
        let s = self.graph.leaf(State { init: Init::Ones }, Shape::scalar(), name)?;
        let b = self.constant(beta)?;
        let power = self.op(Mul {}, &[s, b], &format!("{name}.new"))?;
        self.assign(s, power)?;
        let one = self.constant(1.0)?;
        let name = format!("{name}.correction");
        self.op(Sub {}, &[one, power], &name)
    }

    /// `decay * s + (1 - decay) * x` where `x` is `g` or `g * g`.
    fn moving_average(
        &mut self,
        s: NodeId,
        g: NodeId,
        decay: f64,
        square: bool,
        name: &str,
    ) -> Result<NodeId, IrError> {
        let x = if square { self.op(Mul {}, &[g, g], &format!("{name}.g2"))? } else { g };
        let d = self.constant(decay)?;
        let one_minus = self.constant(1.0 - decay)?;
        let kept = self.op(Mul {}, &[s, d], &format!("{name}.decay"))?;
        let added = self.op(Mul {}, &[x, one_minus], &format!("{name}.add"))?;
        self.op(Add {}, &[kept, added], &format!("{name}.new"))
    }

    fn sqrt_plus_eps(&mut self, x: NodeId, eps: f64, name: &str) -> Result<NodeId, IrError> {
        let root = self.op(Sqrt {}, &[x], &format!("{name}.sqrt"))?;
        let eps = self.constant(eps)?;
        self.op(Add {}, &[root, eps], &format!("{name}.denom"))
    }
}
