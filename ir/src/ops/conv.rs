//! 2-D convolution (NHWC input, HWIO filter) and its two gradients.

use super::{expect_arity, EvalCtx, OpSpec, Vjp};
use crate::shape::Shape;
use crate::tensor::Tensor;
use crate::IrError;

/// Named padding modes, as in Keras.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadMode {
    /// No padding.
    Valid,
    /// Pad so that the output is `ceil(input / stride)` (extra padding at the bottom/right).
    Same,
}

/// Zero padding of a convolution: a mode, or explicit `[top, bottom, left, right]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Padding {
    /// `valid` or `same`.
    Mode(PadMode),
    /// `[top, bottom, left, right]`.
    Explicit([usize; 4]),
}

impl Padding {
    /// The explicit `[top, bottom, left, right]` padding for an input of `input_hw`.
    ///
    /// `same` follows TensorFlow/Keras: `out = ceil(in / stride)`, the total padding is
    /// `max((out - 1) * stride + k - in, 0)`, and the odd pixel goes to the bottom/right.
    ///
    /// # Panics
    /// For `same` with a zero stride (shape inference rejects it first).
    pub fn resolve(
        &self,
        input_hw: [usize; 2],
        kernel_hw: [usize; 2],
        stride: [usize; 2],
    ) -> [usize; 4] {
        match *self {
            Padding::Mode(PadMode::Valid) => [0; 4],
            Padding::Explicit(pad) => pad,
            Padding::Mode(PadMode::Same) => {
                let split = |axis: usize| {
                    let (n, k, s) = (input_hw[axis], kernel_hw[axis], stride[axis]);
                    let out = n.div_ceil(s);
                    let total = (out.saturating_sub(1) * s + k).saturating_sub(n);
                    [total / 2, total - total / 2]
                };
                let ([top, bottom], [left, right]) = (split(0), split(1));
                [top, bottom, left, right]
            }
        }
    }
}

/// The dimensions of a rank-4 shape, or an error naming it.
fn dims4(s: &Shape, what: &str, layout: &str) -> Result<[usize; 4], String> {
    s.dims().try_into().map_err(|_| format!("{what} must be 4-D {layout}, got {s}"))
}

/// The checked sizes of one convolution: input `x = [N,H,W,C]`, filter `k = [KH,KW,C,F]`,
/// output `y = [N,OH,OW,F]`, the stride and the resolved `[top, bottom, left, right]` padding.
struct Geometry {
    x: [usize; 4],
    k: [usize; 4],
    y: [usize; 4],
    stride: [usize; 2],
    pad: [usize; 4],
}

impl Geometry {
    fn new(stride: [usize; 2], pad: Padding, x: &Shape, w: &Shape) -> Result<Self, String> {
        let x = dims4(x, "input", "NHWC")?;
        let k = dims4(w, "filter", "HWIO [KH,KW,C,F]")?;
        if x[3] != k[2] {
            return Err(format!("input has {} channels but the filter expects {}", x[3], k[2]));
        }
        if stride.contains(&0) {
            return Err(format!("stride must be at least 1, got {}x{}", stride[0], stride[1]));
        }
        if x[1] == 0 || x[2] == 0 || k[0] == 0 || k[1] == 0 {
            return Err(format!(
                "empty image or window: {}x{} input, {}x{} filter",
                x[1], x[2], k[0], k[1]
            ));
        }
        let pad = pad.resolve([x[1], x[2]], [k[0], k[1]], stride);
        let (ph, pw) = (x[1] + pad[0] + pad[1], x[2] + pad[2] + pad[3]);
        if k[0] > ph || k[1] > pw {
            return Err(format!(
                "{}x{} window is larger than the {ph}x{pw} padded input",
                k[0], k[1]
            ));
        }
        let y = [x[0], (ph - k[0]) / stride[0] + 1, (pw - k[1]) / stride[1] + 1, k[3]];
        Ok(Geometry { x, k, y, stride, pad })
    }

    /// Checks that `g` is the shape of this convolution's output.
    fn check_grad(&self, g: &Shape) -> Result<(), String> {
        let y = Shape::new(self.y);
        if *g != y {
            let (x, k) = (Shape::new(self.x), Shape::new(self.k));
            return Err(format!(
                "gradient {g} does not match the conv2d output {y} of input {x} and filter {k}"
            ));
        }
        Ok(())
    }

    /// Calls `f(xi, wi, yi)` with the row-major offsets of every (input, filter, output)
    /// triple that meets in one product of the forward convolution:
    /// `y[n,oi,oj,f] += x[n, oi*sh + ki - top, oj*sw + kj - left, c] * w[ki,kj,c,f]`.
    /// Taps that fall in the zero padding are skipped.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        let [n, h, w, c] = self.x;
        let [kh, kw, _, nf] = self.k;
        let [_, oh, ow, _] = self.y;
        let [sh, sw] = self.stride;
        let (top, left) = (self.pad[0], self.pad[2]);
        for b in 0..n {
            for oi in 0..oh {
                for oj in 0..ow {
                    for ki in 0..kh {
                        let Some(i) = (oi * sh + ki).checked_sub(top).filter(|&i| i < h) else {
                            continue;
                        };
                        for kj in 0..kw {
                            let Some(j) = (oj * sw + kj).checked_sub(left).filter(|&j| j < w)
                            else {
                                continue;
                            };
                            for ch in 0..c {
                                for fi in 0..nf {
                                    let xi = ((b * h + i) * w + j) * c + ch;
                                    let wi = ((ki * kw + kj) * c + ch) * nf + fi;
                                    let yi = ((b * oh + oi) * ow + oj) * nf + fi;
                                    f(xi, wi, yi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `conv2d(x [N,H,W,C], w [KH,KW,C,F]) -> [N,OH,OW,F]`, cross-correlation as in Keras.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2d {
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Zero padding.
    pub pad: Padding,
}

impl OpSpec for Conv2d {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 2)?;
        let geo = Geometry::new(self.stride, self.pad, operands[0], operands[1])?;
        Ok(Shape::new(geo.y))
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let (x, w) = (operands[0], operands[1]);
        let geo = Geometry::new(self.stride, self.pad, &x.shape, &w.shape).expect("inferred");
        let mut y = Tensor::zeros(out.clone());
        geo.for_each_tap(|xi, wi, yi| y.data[yi] += x.data[xi] * w.data[wi]);
        y
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        let (x, w, g) = (v.operands[0], v.operands[1], v.grad);
        let (stride, pad) = (self.stride, self.pad);
        if v.wants[0] {
            let xs = v.shape(x);
            let input_hw = [xs.dim(1), xs.dim(2)];
            let dx = v.add(Conv2dGradInput { stride, pad, input_hw }, &[g, w])?;
            v.set(0, dx);
        }
        if v.wants[1] {
            let ws = v.shape(w);
            let kernel_hw = [ws.dim(0), ws.dim(1)];
            let dw = v.add(Conv2dGradFilter { stride, pad, kernel_hw }, &[x, g])?;
            v.set(1, dw);
        }
        Ok(())
    }
}

/// `conv2d_grad_input(g [N,OH,OW,F], w [KH,KW,C,F]) -> [N,H,W,C]`: the gradient of `conv2d`
/// with respect to its input (a transposed convolution).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2dGradInput {
    /// The forward convolution's stride.
    pub stride: [usize; 2],
    /// The forward convolution's padding.
    pub pad: Padding,
    /// The forward input's height and width.
    pub input_hw: [usize; 2],
}

impl OpSpec for Conv2dGradInput {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 2)?;
        let (g, w) = (operands[0], operands[1]);
        let [n, ..] = dims4(g, "gradient", "NHWC")?;
        let [_, _, c, _] = dims4(w, "filter", "HWIO [KH,KW,C,F]")?;
        let x = Shape::new([n, self.input_hw[0], self.input_hw[1], c]);
        Geometry::new(self.stride, self.pad, &x, w)?.check_grad(g)?;
        Ok(x)
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let (g, w) = (operands[0], operands[1]);
        let geo = Geometry::new(self.stride, self.pad, out, &w.shape).expect("inferred");
        let mut dx = Tensor::zeros(out.clone());
        geo.for_each_tap(|xi, wi, yi| dx.data[xi] += g.data[yi] * w.data[wi]);
        dx
    }
}

/// `conv2d_grad_filter(x [N,H,W,C], g [N,OH,OW,F]) -> [KH,KW,C,F]`: the gradient of `conv2d`
/// with respect to its filter.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2dGradFilter {
    /// The forward convolution's stride.
    pub stride: [usize; 2],
    /// The forward convolution's padding.
    pub pad: Padding,
    /// The filter's height and width.
    pub kernel_hw: [usize; 2],
}

impl OpSpec for Conv2dGradFilter {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 2)?;
        let (x, g) = (operands[0], operands[1]);
        let [_, _, _, c] = dims4(x, "input", "NHWC")?;
        let [_, _, _, f] = dims4(g, "gradient", "NHWC")?;
        let w = Shape::new([self.kernel_hw[0], self.kernel_hw[1], c, f]);
        Geometry::new(self.stride, self.pad, x, &w)?.check_grad(g)?;
        Ok(w)
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let (x, g) = (operands[0], operands[1]);
        let geo = Geometry::new(self.stride, self.pad, &x.shape, out).expect("inferred");
        let mut dw = Tensor::zeros(out.clone());
        geo.for_each_tap(|xi, wi, yi| dw.data[wi] += x.data[xi] * g.data[yi]);
        dw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Graph;
    use crate::ops::testing::{check_fd, run};
    use crate::ops::{Input, MatMul, Op};

    const VALID: Padding = Padding::Mode(PadMode::Valid);
    const SAME: Padding = Padding::Mode(PadMode::Same);
    const fn ex(pad: [usize; 4]) -> Padding {
        Padding::Explicit(pad)
    }
    fn conv(stride: [usize; 2], pad: Padding) -> Conv2d {
        Conv2d { stride, pad }
    }
    fn grad_input(stride: [usize; 2], pad: Padding, input_hw: [usize; 2]) -> Conv2dGradInput {
        Conv2dGradInput { stride, pad, input_hw }
    }
    fn grad_filter(stride: [usize; 2], pad: Padding, kernel_hw: [usize; 2]) -> Conv2dGradFilter {
        Conv2dGradFilter { stride, pad, kernel_hw }
    }

    /// A tiny seeded generator (64-bit LCG) for reproducible test data in [-1, 1).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005);
            self.0 = self.0.wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
        fn tensor(&mut self, dims: &[usize]) -> Tensor {
            let n = dims.iter().product();
            Tensor::new(dims, (0..n).map(|_| self.next()).collect())
        }
    }

    #[test]
    fn same_padding_follows_keras() {
        let pads = |n, k, s| SAME.resolve([n, n], [k, k], [s, s]);
        assert_eq!(pads(5, 3, 2), [1, 1, 1, 1]);
        assert_eq!(pads(6, 3, 2), [0, 1, 0, 1]);
        assert_eq!(pads(3, 2, 1), [0, 1, 0, 1]);
        assert_eq!(pads(7, 1, 2), [0; 4]);
        assert_eq!(SAME.resolve([6, 5], [3, 3], [2, 2]), [0, 1, 1, 1]);
        assert_eq!(VALID.resolve([6, 5], [3, 3], [2, 2]), [0; 4]);
        let p = ex([1, 2, 3, 4]);
        assert_eq!(p.resolve([6, 5], [3, 3], [2, 2]), [1, 2, 3, 4]);
        // 'same' always gives ceil(in / stride), even with a kernel larger than the input.
        let all = (1..=9).flat_map(|n| (1..=4).flat_map(move |k| (1..=3).map(move |s| (n, k, s))));
        for (n, k, s) in all {
            let (x, w) = (Shape::new([1, n, n, 2]), Shape::new([k, k, 2, 3]));
            let o = n.div_ceil(s);
            let y = conv([s, s], SAME).infer(&[&x, &w]);
            assert_eq!(y, Ok(Shape::new([1, o, o, 3])), "n={n} k={k} s={s}");
        }
    }

    #[test]
    fn conv_3x3_by_2x2_by_hand() {
        let x = Tensor::new([1, 3, 3, 1], (1..=9).map(f64::from).collect());
        let w = Tensor::new([2, 2, 1, 1], vec![1.0, 2.0, 3.0, 4.0]);
        let y = run(&conv([1, 1], VALID), &[&x, &w]);
        // y[0,0] = 1*1 + 2*2 + 4*3 + 5*4, and so on.
        assert_eq!(y, Tensor::new([1, 2, 2, 1], vec![37.0, 47.0, 67.0, 77.0]));
        let y = run(&conv([2, 2], VALID), &[&x, &w]);
        assert_eq!(y, Tensor::new([1, 1, 1, 1], vec![37.0]));
        assert_eq!(run(&conv([1, 2], VALID), &[&x, &w]).data, [37.0, 67.0]);
        assert_eq!(run(&conv([2, 1], VALID), &[&x, &w]).data, [37.0, 47.0]);
        // A 1x2 filter [1, 2]: y[i,j] = x[i,j] + 2 x[i,j+1].
        let w = Tensor::new([1, 2, 1, 1], vec![1.0, 2.0]);
        let y = run(&conv([1, 1], VALID), &[&x, &w]);
        assert_eq!(y, Tensor::new([1, 3, 2, 1], vec![5.0, 8.0, 14.0, 17.0, 23.0, 26.0]));
    }

    #[test]
    fn same_padding_with_stride_2_by_hand() {
        // 5x5 input 0..24, 3x3 box filter: pads (1,1), windows centred on rows/cols 0, 2, 4.
        let x = Tensor::new([1, 5, 5, 1], (0..25).map(f64::from).collect());
        let ones = Tensor::full([3, 3, 1, 1], 1.0);
        let y = run(&conv([2, 2], SAME), &[&x, &ones]);
        let want = [12.0, 27.0, 24.0, 63.0, 108.0, 81.0, 72.0, 117.0, 84.0];
        assert_eq!(y, Tensor::new([1, 3, 3, 1], want.to_vec()));
        // 6x6 of ones: pads (0,1), so the last window row/column holds one padded line.
        let x = Tensor::full([1, 6, 6, 1], 1.0);
        let y = run(&conv([2, 2], SAME), &[&x, &ones]);
        let want = [9.0, 9.0, 6.0, 9.0, 9.0, 6.0, 6.0, 6.0, 4.0];
        assert_eq!(y, Tensor::new([1, 3, 3, 1], want.to_vec()));
    }

    #[test]
    fn pointwise_conv_is_a_matmul() {
        let mut rng = Lcg(7);
        let (x, w) = (rng.tensor(&[2, 3, 4, 5]), rng.tensor(&[1, 1, 5, 7]));
        let y = run(&conv([1, 1], VALID), &[&x, &w]);
        let a = Tensor::new([24, 5], x.data.clone());
        let c = run(&MatMul::default(), &[&a, &Tensor::new([5, 7], w.data.clone())]);
        assert_eq!(y.shape, Shape::new([2, 3, 4, 7]));
        for (p, q) in y.data.iter().zip(&c.data) {
            assert!((p - q).abs() < 1e-12, "{p} vs {q}");
        }
    }

    #[test]
    fn explicit_padding_equals_valid_conv_of_zero_padded_input() {
        let mut rng = Lcg(11);
        let (x, w) = (rng.tensor(&[2, 4, 5, 3]), rng.tensor(&[3, 2, 3, 2]));
        let [top, bottom, left, right] = [1, 2, 0, 3];
        let mut xp = Tensor::zeros([2, 4 + top + bottom, 5 + left + right, 3]);
        crate::tensor::for_each_index(&x.shape, |i| {
            let o = xp.offset(&[i[0], i[1] + top, i[2] + left, i[3]]);
            xp.data[o] = x.at(i);
        });
        let padded = run(&conv([2, 1], ex([top, bottom, left, right])), &[&x, &w]);
        assert_eq!(padded, run(&conv([2, 1], VALID), &[&xp, &w]));
    }

    #[test]
    fn gradients_match_finite_differences() {
        // (input [N,H,W,C], filter [KH,KW,C,F], stride, padding)
        let cases = [
            ([1, 5, 5, 3], [3, 3, 3, 2], [2, 2], SAME),
            ([2, 6, 7, 5], [3, 2, 5, 3], [2, 1], SAME),
            ([1, 3, 3, 2], [4, 4, 2, 2], [1, 1], SAME),
            ([1, 7, 6, 3], [1, 1, 3, 5], [2, 2], VALID),
            ([1, 7, 7, 2], [2, 2, 2, 3], [3, 3], VALID),
            ([2, 4, 5, 2], [2, 3, 2, 3], [1, 1], ex([1, 0, 2, 1])),
            ([1, 6, 6, 1], [3, 3, 1, 1], [2, 2], ex([0, 1, 1, 0])),
        ];
        let mut rng = Lcg(42);
        for (xd, wd, stride, pad) in cases {
            let (x, w) = (rng.tensor(&xd), rng.tensor(&wd));
            let op = conv(stride, pad);
            let r = rng.tensor(run(&op, &[&x, &w]).shape.dims());
            // L(x, w) = sum(conv2d(x, w) * r): its gradient with respect to the output is r.
            let loss = |x: &Tensor, w: &Tensor| {
                let y = run(&op, &[x, w]);
                y.data.iter().zip(&r.data).map(|(a, b)| a * b).sum::<f64>()
            };
            let dx = run(&grad_input(stride, pad, [xd[1], xd[2]]), &[&r, &w]);
            let dw = run(&grad_filter(stride, pad, [wd[0], wd[1]]), &[&x, &r]);
            let case = format!("{xd:?} * {wd:?} stride {stride:?} {pad:?}");
            check_fd(&format!("dx of {case}"), &x, &dx, |x| loss(x, &w));
            check_fd(&format!("dw of {case}"), &w, &dw, |w| loss(&x, w));
        }
    }

    #[test]
    fn vjp_adds_both_gradient_ops() {
        let mut g = Graph::new();
        let x = g.leaf(Input {}, Shape::new([2, 5, 5, 3]), "x").unwrap();
        let w = g.leaf(Input {}, Shape::new([3, 3, 3, 4]), "w").unwrap();
        let op = conv([2, 2], SAME);
        let y = g.add(op.clone(), &[x, w], "y").unwrap();
        let dy = g.leaf(Input {}, g.node(y).shape.clone(), "dy").unwrap();
        let mut v = Vjp::new(&mut g, y, dy, vec![true, true]);
        op.vjp(&mut v).unwrap();
        let (dx, dw) = (v.grads[0].unwrap(), v.grads[1].unwrap());
        assert_eq!(g.node(dx).op, Op::from(grad_input([2, 2], SAME, [5, 5])));
        assert_eq!(g.node(dx).shape, Shape::new([2, 5, 5, 3]));
        assert_eq!(g.operands(dx), vec![dy, w]);
        assert_eq!(g.node(dw).op, Op::from(grad_filter([2, 2], SAME, [3, 3])));
        assert_eq!(g.node(dw).shape, Shape::new([3, 3, 3, 4]));
        assert_eq!(g.operands(dw), vec![x, dy]);
    }

    #[test]
    fn infer_rejects_bad_shapes() {
        let check = |op: &dyn OpSpec, a: &[usize], b: &[usize], want: &str| {
            let e = op.infer(&[&Shape::from(a), &Shape::from(b)]).expect_err(want);
            assert!(e.contains(want), "expected `{want}` in `{e}`");
        };
        let c = conv([1, 1], VALID);
        check(&c, &[1, 3, 3], &[2, 2, 1, 1], "input must be 4-D NHWC, got f32[1,3,3]");
        check(&c, &[1, 3, 3, 1], &[2, 2, 1], "filter must be 4-D HWIO");
        let want = "input has 3 channels but the filter expects 1";
        check(&c, &[1, 3, 3, 3], &[2, 2, 1, 4], want);
        let want = "stride must be at least 1, got 0x1";
        check(&conv([0, 1], VALID), &[1, 3, 3, 1], &[2, 2, 1, 1], want);
        let want = "3x3 window is larger than the 2x2 padded input";
        check(&c, &[1, 2, 2, 1], &[3, 3, 1, 1], want);
        let want = "3x3 window is larger than the 2x3 padded input";
        check(&conv([1, 1], ex([1, 0, 0, 0])), &[1, 1, 3, 1], &[3, 3, 1, 1], want);
        let gi = grad_input([2, 2], SAME, [5, 5]);
        let want = "gradient f32[1,2,2,4] does not match the conv2d output f32[1,3,3,4]";
        check(&gi, &[1, 2, 2, 4], &[3, 3, 1, 4], want);
        let gf = grad_filter([1, 1], VALID, [2, 2]);
        check(&gf, &[1, 4, 4, 2], &[1, 3, 3, 5, 1], "gradient must be 4-D NHWC");
        let want = "does not match the conv2d output f32[1,3,3,5]";
        check(&gf, &[1, 4, 4, 2], &[2, 3, 3, 5], want);
        let e = c.infer(&[&Shape::new([1, 3, 3, 1])]).unwrap_err();
        assert!(e.contains("takes 2 operand(s), got 1"), "{e}");
    }
}
