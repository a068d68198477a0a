//! Max and average pooling over HxW windows of NHWC tensors ('valid' windows), and their
//! gradients.

use super::{expect_arity, EvalCtx, OpSpec, Vjp};
use crate::shape::Shape;
use crate::tensor::{for_each_index, Tensor};
use crate::IrError;

/// The output shape `[N,OH,OW,C]` of pooling `x` with 'valid' windows, after checking.
fn pooled(size: [usize; 2], stride: [usize; 2], x: &Shape) -> Result<Shape, String> {
    let [n, h, w, c]: [usize; 4] =
        x.dims().try_into().map_err(|_| format!("input must be 4-D NHWC, got {x}"))?;
    if size.contains(&0) {
        return Err(format!("pooling window must be at least 1x1, got {}x{}", size[0], size[1]));
    }
    if stride.contains(&0) {
        return Err(format!("stride must be at least 1, got {}x{}", stride[0], stride[1]));
    }
    if size[0] > h || size[1] > w {
        return Err(format!(
            "{}x{} pooling window is larger than the {h}x{w} input",
            size[0], size[1]
        ));
    }
    Ok(Shape::new([n, (h - size[0]) / stride[0] + 1, (w - size[1]) / stride[1] + 1, c]))
}

/// Checks that the gradient `g` has the pooling output shape `y`.
fn check_grad(g: &Shape, y: &Shape) -> Result<(), String> {
    if g != y {
        return Err(format!("gradient {g} does not match the pooling output {y}"));
    }
    Ok(())
}

/// Calls `f(yi, window)` for every element `yi` (row-major offset) of the pooled output `y`
/// of `x`, with the row-major offsets in `x` of its window, in row-major window order.
fn for_each_window(
    size: [usize; 2],
    stride: [usize; 2],
    x: &Shape,
    y: &Shape,
    mut f: impl FnMut(usize, &[usize]),
) {
    let (h, w, c) = (x.dim(1), x.dim(2), x.dim(3));
    let mut window = Vec::with_capacity(size[0] * size[1]);
    let mut yi = 0;
    for_each_index(y, |o| {
        let (b, oi, oj, ch) = (o[0], o[1], o[2], o[3]);
        window.clear();
        for di in 0..size[0] {
            for dj in 0..size[1] {
                let (i, j) = (oi * stride[0] + di, oj * stride[1] + dj);
                window.push(((b * h + i) * w + j) * c + ch);
            }
        }
        f(yi, &window);
        yi += 1;
    });
}

/// The offset of the first maximum of `x` over a window (strict `>` while scanning).
fn first_max(x: &[f64], window: &[usize]) -> usize {
    let mut best = window[0];
    for &i in &window[1..] {
        if x[i] > x[best] {
            best = i;
        }
    }
    best
}

/// `max_pool2d(x [N,H,W,C]) -> [N,OH,OW,C]` with `OH = (H - size) / stride + 1`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPool2d {
    /// Window height and width.
    pub size: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
}

impl OpSpec for MaxPool2d {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        pooled(self.size, self.stride, operands[0])
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let x = operands[0];
        let mut y = Tensor::zeros(out.clone());
        for_each_window(self.size, self.stride, &x.shape, out, |yi, window| {
            y.data[yi] = x.data[first_max(&x.data, window)];
        });
        y
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        let op = MaxPool2dGrad { size: self.size, stride: self.stride };
        let dx = v.add(op, &[v.operands[0], v.grad])?;
        v.set(0, dx);
        Ok(())
    }
}

/// `max_pool2d_grad(x [N,H,W,C], g [N,OH,OW,C]) -> [N,H,W,C]`: each window's gradient goes to
/// the first maximum of the window (row-major order); overlapping windows accumulate.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPool2dGrad {
    /// Window height and width.
    pub size: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
}

impl OpSpec for MaxPool2dGrad {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 2)?;
        let (x, g) = (operands[0], operands[1]);
        check_grad(g, &pooled(self.size, self.stride, x)?)?;
        Ok(x.clone())
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let (x, g) = (operands[0], operands[1]);
        let mut dx = Tensor::zeros(out.clone());
        for_each_window(self.size, self.stride, &x.shape, &g.shape, |yi, window| {
            dx.data[first_max(&x.data, window)] += g.data[yi];
        });
        dx
    }
}

/// `avg_pool2d(x [N,H,W,C]) -> [N,OH,OW,C]`: the mean of each window.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvgPool2d {
    /// Window height and width.
    pub size: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
}

impl OpSpec for AvgPool2d {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        pooled(self.size, self.stride, operands[0])
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let x = operands[0];
        let mut y = Tensor::zeros(out.clone());
        for_each_window(self.size, self.stride, &x.shape, out, |yi, window| {
            let sum: f64 = window.iter().map(|&i| x.data[i]).sum();
            y.data[yi] = sum / window.len() as f64;
        });
        y
    }
    fn vjp(&self, v: &mut Vjp<'_>) -> Result<(), IrError> {
        let xs = v.shape(v.operands[0]);
        let input_hw = [xs.dim(1), xs.dim(2)];
        let op = AvgPool2dGrad { size: self.size, stride: self.stride, input_hw };
        let dx = v.add(op, &[v.grad])?;
        v.set(0, dx);
        Ok(())
    }
}

/// `avg_pool2d_grad(g [N,OH,OW,C]) -> [N,H,W,C]`: spreads each window's gradient evenly over
/// the window; overlapping windows accumulate.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvgPool2dGrad {
    /// Window height and width.
    pub size: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// The forward input's height and width.
    pub input_hw: [usize; 2],
}

impl OpSpec for AvgPool2dGrad {
    fn infer(&self, operands: &[&Shape]) -> Result<Shape, String> {
        expect_arity(operands, 1)?;
        let g = operands[0];
        let [n, _, _, c]: [usize; 4] =
            g.dims().try_into().map_err(|_| format!("gradient must be 4-D NHWC, got {g}"))?;
        let x = Shape::new([n, self.input_hw[0], self.input_hw[1], c]);
        check_grad(g, &pooled(self.size, self.stride, &x)?)?;
        Ok(x)
    }
    fn eval(&self, operands: &[&Tensor], out: &Shape, _: &EvalCtx) -> Tensor {
        let g = operands[0];
        let mut dx = Tensor::zeros(out.clone());
        for_each_window(self.size, self.stride, out, &g.shape, |yi, window| {
            let share = g.data[yi] / window.len() as f64;
            for &i in window {
                dx.data[i] += share;
            }
        });
        dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Graph;
    use crate::ops::testing::{check_fd, run};
    use crate::ops::{Input, Op};

    fn max(size: [usize; 2], stride: [usize; 2]) -> MaxPool2d {
        MaxPool2d { size, stride }
    }
    fn avg(size: [usize; 2], stride: [usize; 2]) -> AvgPool2d {
        AvgPool2d { size, stride }
    }
    fn max_grad(size: [usize; 2], stride: [usize; 2]) -> MaxPool2dGrad {
        MaxPool2dGrad { size, stride }
    }
    fn avg_grad(size: [usize; 2], stride: [usize; 2], input_hw: [usize; 2]) -> AvgPool2dGrad {
        AvgPool2dGrad { size, stride, input_hw }
    }

    /// A tiny seeded generator (64-bit LCG) for reproducible test data.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005);
            self.0 = self.0.wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        /// Values in [-1, 1).
        fn tensor(&mut self, dims: &[usize]) -> Tensor {
            let n = dims.iter().product();
            let data = (0..n).map(|_| self.next() as f64 / (1u64 << 30) as f64 - 1.0);
            Tensor::new(dims, data.collect())
        }
        /// Distinct values 0.1 apart (a shuffled ramp), so every window has a unique maximum.
        fn distinct(&mut self, dims: &[usize]) -> Tensor {
            let n: usize = dims.iter().product();
            let mut data: Vec<f64> = (0..n).map(|i| i as f64 * 0.1 - n as f64 * 0.05).collect();
            for i in (1..n).rev() {
                data.swap(i, self.next() as usize % (i + 1));
            }
            Tensor::new(dims, data)
        }
    }

    const X4: [f64; 16] = [
        1.0, 3.0, 2.0, 4.0, //
        5.0, 6.0, 8.0, 7.0, //
        9.0, 2.0, 12.0, 0.0, //
        4.0, 11.0, 10.0, 3.0,
    ];

    #[test]
    fn max_pool_4x4_by_hand() {
        let x = Tensor::new([1, 4, 4, 1], X4.to_vec());
        let g = Tensor::new([1, 2, 2, 1], vec![1.0, 2.0, 3.0, 4.0]);
        let y = run(&max([2, 2], [2, 2]), &[&x]);
        assert_eq!(y.data, [6.0, 8.0, 11.0, 12.0]);
        let dx = run(&max_grad([2, 2], [2, 2]), &[&x, &g]);
        let mut want = [0.0; 16];
        (want[5], want[6], want[13], want[10]) = (1.0, 2.0, 3.0, 4.0);
        assert_eq!(dx.data, want);
        // Overlapping 3x3 windows all pick the 12, whose gradient accumulates.
        assert_eq!(run(&max([3, 3], [1, 1]), &[&x]).data, [12.0; 4]);
        let dx = run(&max_grad([3, 3], [1, 1]), &[&x, &g]);
        want = [0.0; 16];
        want[10] = 10.0;
        assert_eq!(dx.data, want);
        // Channels pool independently: channel 1 holds -x, so it pools -min.
        let x2 = Tensor::new([1, 4, 4, 2], X4.iter().flat_map(|&v| [v, -v]).collect());
        let y = run(&max([2, 2], [2, 2]), &[&x2]);
        assert_eq!(y.data, [6.0, -1.0, 8.0, -2.0, 11.0, -2.0, 12.0, -0.0]);
    }

    #[test]
    fn max_pool_grad_goes_to_the_first_maximum() {
        let grad = |x: Vec<f64>| {
            let x = Tensor::new([1, 2, 2, 1], x);
            run(&max_grad([2, 2], [1, 1]), &[&x, &Tensor::full([1, 1, 1, 1], 1.0)]).data
        };
        assert_eq!(grad(vec![5.0; 4]), [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(grad(vec![1.0, 7.0, 7.0, 7.0]), [0.0, 1.0, 0.0, 0.0]);
        assert_eq!(grad(vec![1.0, 2.0, 7.0, 7.0]), [0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn avg_pool_4x4_by_hand() {
        let x = Tensor::new([1, 4, 4, 1], X4.to_vec());
        let y = run(&avg([2, 2], [2, 2]), &[&x]);
        assert_eq!(y.data, [3.75, 5.25, 6.5, 6.25]);
        assert_eq!(run(&avg([1, 4], [3, 1]), &[&x]).data, [2.5, 7.0]);
        let y = run(&avg([2, 2], [2, 1]), &[&x]);
        assert_eq!(y.data, [3.75, 4.75, 5.25, 6.5, 8.75, 6.25]);
        assert_eq!(run(&max([2, 2], [1, 2]), &[&x]).data, [6.0, 8.0, 9.0, 12.0, 11.0, 12.0]);
        let g = Tensor::new([1, 2, 2, 1], vec![4.0, 8.0, 12.0, 16.0]);
        let dx = run(&avg_grad([2, 2], [2, 2], [4, 4]), &[&g]);
        let want = [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4].map(f64::from);
        assert_eq!(dx.data, want);
        // 3x3 windows with stride 1 on 4x4: the centre pixels are in all four windows.
        let dx = run(&avg_grad([3, 3], [1, 1], [4, 4]), &[&g]);
        assert_eq!(dx.data[5], 40.0 / 9.0);
        assert_eq!(dx.data[0], 4.0 / 9.0);
        assert_eq!(dx.data[15], 16.0 / 9.0);
    }

    #[test]
    fn gradients_match_finite_differences() {
        // (input [N,H,W,C], window, stride)
        let cases = [
            ([1, 5, 5, 3], [3, 3], [2, 2]),
            ([2, 7, 6, 5], [2, 3], [2, 1]),
            ([1, 4, 4, 1], [2, 2], [2, 2]),
            ([1, 3, 3, 2], [1, 1], [1, 1]),
            ([2, 5, 6, 3], [3, 2], [1, 2]),
            ([1, 7, 5, 3], [2, 2], [3, 3]),
        ];
        let mut rng = Lcg(42);
        for (xd, size, stride) in cases {
            let x = rng.distinct(&xd);
            let case = format!("{xd:?} window {size:?} stride {stride:?}");
            let r = rng.tensor(run(&max(size, stride), &[&x]).shape.dims());
            // L(x) = sum(pool(x) * r): its gradient with respect to the output is r.
            let loss = |op: &dyn OpSpec, x: &Tensor| {
                let y = run(op, &[x]);
                y.data.iter().zip(&r.data).map(|(a, b)| a * b).sum::<f64>()
            };
            let (max_op, avg_op) = (max(size, stride), avg(size, stride));
            let dx = run(&max_grad(size, stride), &[&x, &r]);
            check_fd(&format!("max pool {case}"), &x, &dx, |x| loss(&max_op, x));
            let dx = run(&avg_grad(size, stride, [xd[1], xd[2]]), &[&r]);
            check_fd(&format!("avg pool {case}"), &x, &dx, |x| loss(&avg_op, x));
        }
    }

    #[test]
    fn vjps_add_the_gradient_ops() {
        let mut g = Graph::new();
        let x = g.leaf(Input {}, Shape::new([2, 5, 5, 3]), "x").unwrap();
        let cases: [(Op, Op); 2] = [
            (max([3, 3], [2, 2]).into(), max_grad([3, 3], [2, 2]).into()),
            (avg([3, 3], [2, 2]).into(), avg_grad([3, 3], [2, 2], [5, 5]).into()),
        ];
        for (op, want) in cases {
            let y = g.add(op.clone(), &[x], "y").unwrap();
            let dy = g.leaf(Input {}, g.node(y).shape.clone(), "dy").unwrap();
            let mut v = Vjp::new(&mut g, y, dy, vec![true]);
            op.spec().vjp(&mut v).unwrap();
            let dx = v.grads[0].unwrap();
            let is_max = matches!(want, Op::MaxPool2dGrad(_));
            assert_eq!(g.node(dx).op, want);
            assert_eq!(g.node(dx).shape, Shape::new([2, 5, 5, 3]));
            assert_eq!(g.operands(dx), if is_max { vec![x, dy] } else { vec![dy] });
        }
    }

    #[test]
    fn infer_rejects_bad_shapes() {
        let check = |op: &dyn OpSpec, shapes: &[&[usize]], want: &str| {
            let shapes: Vec<Shape> = shapes.iter().map(|&s| Shape::from(s)).collect();
            let e = op.infer(&shapes.iter().collect::<Vec<_>>()).expect_err(want);
            assert!(e.contains(want), "expected `{want}` in `{e}`");
        };
        let (m, a) = (max([2, 2], [2, 2]), avg([3, 1], [1, 1]));
        check(&m, &[&[1, 4, 4]], "input must be 4-D NHWC, got f32[1,4,4]");
        check(&m, &[&[1, 1, 1, 3]], "2x2 pooling window is larger than the 1x1 input");
        check(&a, &[&[1, 2, 5, 3]], "3x1 pooling window is larger than the 2x5 input");
        check(&avg([0, 1], [1, 1]), &[&[1, 2, 5, 3]], "window must be at least 1x1, got 0x1");
        check(&max([1, 1], [1, 0]), &[&[1, 2, 5, 3]], "stride must be at least 1, got 1x0");
        check(&m, &[&[1, 2, 2, 1], &[1, 1, 1, 1]], "takes 1 operand(s), got 2");
        let (mg, ag) = (max_grad([2, 2], [2, 2]), avg_grad([2, 2], [1, 1], [4, 4]));
        let want = "gradient f32[1,2,2,3] does not match the pooling output f32[1,2,2,2]";
        check(&mg, &[&[1, 4, 4, 2], &[1, 2, 2, 3]], want);
        let want = "gradient f32[1,2,2,3] does not match the pooling output f32[1,3,3,3]";
        check(&ag, &[&[1, 2, 2, 3]], want);
        check(&ag, &[&[3, 3, 3]], "gradient must be 4-D NHWC, got f32[3,3,3]");
    }
}
