//! Building blocks of convolutional classifiers, each with a forward pass, a forward pass that
//! records a [`Tape`], and a written-out backward pass that returns only `∂loss/∂input` (no
//! weight gradients, which attribution never needs). Batch-norm layers are folded into the
//! convolution before them at load time (inference mode), so a convolution carries a bias.
//!
//! A layer keeps its parameters as plain tensors; a later training path can add weight
//! gradients to the same types (`backward` would return them beside `dx`).

use super::depthwise::{self, DwGeometry};
use crate::error::{Error, Result};
use crate::models::weights::Weights;
use candle_core::{DType, Tensor, D};

/// Activations a layer saved on its forward pass for its backward pass.
#[derive(Debug, Default)]
pub struct Tape {
    pub saved: Vec<Tensor>,
    pub children: Vec<Tape>,
}

/// One differentiable stage of a classifier.
pub trait Layer: Send + Sync {
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// The forward pass plus what [`Layer::backward`] needs.
    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Tape)>;
    /// `∂loss/∂x` from `∂loss/∂y`.
    fn backward(&self, tape: &Tape, dy: &Tensor) -> Result<Tensor>;
    /// A copy whose learned weights (convolutions, linear layers) are redrawn at random, for
    /// the model-randomisation sanity check (MPRT); normalisations and scales are kept.
    fn randomised(&self, rng: &mut Randomiser) -> Result<Box<dyn Layer>>;
    /// Whether [`Layer::randomised`] redraws anything here (MPRT skips stages it would not change).
    fn learned(&self) -> bool {
        false
    }
}

/// Redraws weights for [`Layer::randomised`]: each tensor from a normal distribution with its
/// own mean and standard deviation (so activations keep their scale), reproducibly from a seed.
pub struct Randomiser(rand_chacha::ChaCha8Rng);

impl Randomiser {
    pub fn new(seed: u64) -> Self {
        use rand::SeedableRng;
        Randomiser(rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    }

    /// A tensor shaped like `t` drawn from N(mean(t), std(t)²).
    pub fn redraw(&mut self, t: &Tensor) -> Result<Tensor> {
        use rand_distr::{Distribution, StandardNormal};
        let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        let out: Vec<f32> = (0..v.len())
            .map(|_| (mean + std * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, &mut self.0)) as f32)
            .collect();
        Ok(Tensor::from_vec(out, t.dims(), t.device())?.to_dtype(t.dtype())?)
    }
}

/// How a convolution pads its input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Padding {
    /// Symmetric zero padding of `p` pixels (PyTorch `padding=p`).
    Fixed(usize),
    /// TensorFlow "SAME": `total = max((⌈i/s⌉ − 1)·s + k − i, 0)`, the smaller half first
    /// (asymmetric for even totals' remainder), computed for each input size.
    TfSame,
}

impl Padding {
    /// `[top, bottom, left, right]` for an `h × w` input.
    pub fn pads(&self, h: usize, w: usize, k: usize, s: usize) -> [usize; 4] {
        match *self {
            Padding::Fixed(p) => [p; 4],
            Padding::TfSame => {
                let s = s.max(1);
                let total = |i: usize| ((i.div_ceil(s) - 1) * s + k).saturating_sub(i);
                let (th, tw) = (total(h), total(w));
                [th / 2, th - th / 2, tw / 2, tw - tw / 2]
            }
        }
    }
}

/// Inference batch norm: `y = (x − mean)/sqrt(var + eps)·γ + β`, as a per-channel scale and shift.
pub struct BatchNorm {
    pub scale: Tensor,
    pub shift: Tensor,
}

impl BatchNorm {
    /// Reads `{prefix}.weight`, `.bias`, `.running_mean`, `.running_var` (each `[c]`).
    pub fn load(w: &Weights, prefix: &str, c: usize, eps: f64) -> Result<Self> {
        let g = w.get(&format!("{prefix}.weight"), &[c])?;
        let b = w.get(&format!("{prefix}.bias"), &[c])?;
        let m = w.get(&format!("{prefix}.running_mean"), &[c])?;
        let v = w.get(&format!("{prefix}.running_var"), &[c])?;
        let scale = (g / (v + eps)?.sqrt()?)?;
        let shift = (b - (m * &scale)?)?;
        Ok(BatchNorm { scale, shift })
    }
}

/// A 2-D convolution (dense, 1×1 or depthwise) with an optional bias.
pub struct Conv2d {
    /// `[out, in / groups, k, k]`.
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub padding: Padding,
    pub groups: usize,
}

impl Conv2d {
    /// Reads `{name}.weight` of shape `[out, in/groups, k, k]` (and `{name}.bias` if `bias`).
    pub fn load(
        w: &Weights,
        name: &str,
        (cin, cout, k): (usize, usize, usize),
        stride: usize,
        padding: Padding,
        groups: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = w.get(&format!("{name}.weight"), &[cout, cin / groups, k, k])?;
        let bias = if bias { Some(w.get(&format!("{name}.bias"), &[cout])?) } else { None };
        Ok(Conv2d { weight, bias, stride, padding, groups })
    }

    /// Folds an inference batch norm that follows this convolution into it.
    pub fn fold(mut self, bn: &BatchNorm) -> Result<Self> {
        let c = bn.scale.dim(0)?;
        self.weight = self.weight.broadcast_mul(&bn.scale.reshape((c, 1, 1, 1))?)?;
        self.bias = Some(match &self.bias {
            Some(b) => ((b * &bn.scale)? + &bn.shift)?,
            None => bn.shift.clone(),
        });
        Ok(self)
    }

    fn kernel(&self) -> usize {
        self.weight.dim(3).unwrap_or(1)
    }

    fn out_channels(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }

    fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.out_channels() && self.weight.dim(1).ok() == Some(1)
    }

    fn is_pointwise(&self) -> bool {
        self.kernel() == 1 && self.stride == 1 && self.groups == 1 && self.padding.pads(1, 1, 1, 1) == [0; 4]
    }

    fn geometry(&self, h: usize, w: usize) -> DwGeometry {
        let (k, s) = (self.kernel(), self.stride);
        DwGeometry { kernel: k, stride: s, pads: self.padding.pads(h, w, k, s) }
    }

    fn add_bias(&self, y: Tensor) -> Result<Tensor> {
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?,
            None => y,
        })
    }
}

impl Layer for Conv2d {
    fn learned(&self) -> bool {
        true
    }

    fn randomised(&self, rng: &mut Randomiser) -> Result<Box<dyn Layer>> {
        Ok(Box::new(Conv2d {
            weight: rng.redraw(&self.weight)?,
            bias: self.bias.as_ref().map(|b| rng.redraw(b)).transpose()?,
            stride: self.stride,
            padding: self.padding,
            groups: self.groups,
        }))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let cin = self.weight.dim(1)? * self.groups;
        if c != cin {
            return Err(Error::invalid(format!("convolution expects {cin} input channels, got {c}")));
        }
        let y = if self.is_pointwise() {
            let o = self.out_channels();
            left_matmul(&self.weight.reshape((o, c))?, &x.reshape((n, c, h * w))?)?.reshape((n, o, h, w))?
        } else if self.is_depthwise() {
            depthwise::forward(x, &self.weight, &self.geometry(h, w))?
        } else if self.groups == 1 {
            let g = self.geometry(h, w);
            let [t, b, l, r] = g.pads;
            g.output_size(h, w)?;
            let xp = if g.pads == [0; 4] { x.clone() } else { x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)? };
            xp.conv2d(&self.weight, 0, self.stride, 1, 1)?
        } else {
            return Err(Error::Unsupported(format!("grouped convolution with {} groups", self.groups)));
        };
        self.add_bias(y)
    }

    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        // the backward pass needs only the input's spatial size
        let y = self.forward(x)?;
        let (_, _, h, w) = x.dims4()?;
        let size = Tensor::from_vec(vec![h as u32, w as u32], 2, &candle_core::Device::Cpu)?;
        Ok((y, Tape { saved: vec![size], children: vec![] }))
    }

    fn backward(&self, tape: &Tape, dy: &Tensor) -> Result<Tensor> {
        let hw = tape.saved[0].to_vec1::<u32>()?;
        let (h, w) = (hw[0] as usize, hw[1] as usize);
        let (n, o, ho, wo) = dy.dims4()?;
        if self.is_pointwise() {
            let c = self.weight.dim(1)?;
            let wt = self.weight.reshape((o, c))?.t()?;
            return Ok(left_matmul(&wt, &dy.reshape((n, o, ho * wo))?)?.reshape((n, c, h, w))?);
        }
        let g = self.geometry(h, w);
        if self.is_depthwise() {
            return depthwise::backward_input(dy, &self.weight, &g, h, w);
        }
        // dense: transposed convolution of the gradient, then drop the padding
        let [t, b, l, r] = g.pads;
        let k = self.kernel();
        let dxp = dy.conv_transpose2d(&self.weight, 0, 0, self.stride, 1)?;
        let (hp, wp) = (h + t + b, w + l + r);
        let (gh, gw) = ((ho - 1) * self.stride + k, (wo - 1) * self.stride + k);
        let dxp = dxp.pad_with_zeros(2, 0, hp - gh)?.pad_with_zeros(3, 0, wp - gw)?;
        Ok(dxp.narrow(2, t, h)?.narrow(3, l, w)?)
    }
}

/// `m [r, k]` times each matrix of `x [n, k, l]`, without copying `m` per batch entry (a
/// zero batch stride; candle's `broadcast_matmul` would materialise `n` copies).
fn left_matmul(m: &Tensor, x: &Tensor) -> Result<Tensor> {
    let (r, k) = m.dims2()?;
    let n = x.dim(0)?;
    Ok(m.broadcast_as((n, r, k))?.matmul(&x.contiguous()?)?)
}

/// Elementwise activations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    /// `clamp(x, 0, 6)`.
    Relu6,
    /// The exact GELU, `x·Φ(x)` (PyTorch's default `approximate='none'`).
    Gelu,
}

impl Layer for Activation {
    fn randomised(&self, _: &mut Randomiser) -> Result<Box<dyn Layer>> {
        Ok(Box::new(*self))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Relu => x.relu()?,
            Activation::Relu6 => x.clamp(0f32, 6f32)?,
            Activation::Gelu => x.gelu_erf()?,
        })
    }

    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        if *self == Activation::Gelu {
            // y = x·Φ(x), y' = Φ(x) + x·φ(x): Φ computed once for both
            let cdf = (((x / std::f64::consts::SQRT_2)?.erf()? + 1.0)? * 0.5)?;
            let pdf = ((x.sqr()? * -0.5)?.exp()? * (1.0 / (2.0 * std::f64::consts::PI).sqrt()))?;
            let d = (&cdf + (x * pdf)?)?;
            return Ok(((x * cdf)?, Tape { saved: vec![d], children: vec![] }));
        }
        let y = self.forward(x)?;
        // the local derivative: where the activation is not saturated (PyTorch's rule:
        // strictly inside (0, 6) for ReLU6, x > 0 for ReLU); Φ(x) + x·φ(x) for GELU
        let d = match self {
            Activation::Relu => x.gt(0f32)?.to_dtype(x.dtype())?,
            Activation::Relu6 => (x.gt(0f32)? * x.lt(6f32)?)?.to_dtype(x.dtype())?,
            Activation::Gelu => unreachable!("handled above"),
        };
        Ok((y, Tape { saved: vec![d], children: vec![] }))
    }

    fn backward(&self, tape: &Tape, dy: &Tensor) -> Result<Tensor> {
        Ok((dy * &tape.saved[0])?)
    }
}

/// Layers applied in order.
pub struct Sequence(pub Vec<Box<dyn Layer>>);

impl Sequence {
    fn randomised_seq(&self, rng: &mut Randomiser) -> Result<Sequence> {
        Ok(Sequence(self.0.iter().map(|l| l.randomised(rng)).collect::<Result<_>>()?))
    }
}

impl Layer for Sequence {
    fn learned(&self) -> bool {
        self.0.iter().any(|l| l.learned())
    }

    fn randomised(&self, rng: &mut Randomiser) -> Result<Box<dyn Layer>> {
        Ok(Box::new(self.randomised_seq(rng)?))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.0 {
            h = l.forward(&h)?;
        }
        Ok(h)
    }

    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        let mut h = x.clone();
        let mut children = Vec::with_capacity(self.0.len());
        for l in &self.0 {
            let (y, t) = l.forward_tape(&h)?;
            children.push(t);
            h = y;
        }
        Ok((h, Tape { saved: vec![], children }))
    }

    fn backward(&self, tape: &Tape, dy: &Tensor) -> Result<Tensor> {
        let mut g = dy.clone();
        for (l, t) in self.0.iter().zip(&tape.children).rev() {
            g = l.backward(t, &g)?;
        }
        Ok(g)
    }
}

/// `post(body(x) + skip(x))`, with `skip` the identity when absent (MBConv, ResNet blocks).
pub struct Residual {
    pub body: Sequence,
    pub skip: Option<Sequence>,
    pub post: Option<Activation>,
}

impl Layer for Residual {
    fn learned(&self) -> bool {
        self.body.learned() || self.skip.as_ref().is_some_and(|s| s.learned())
    }

    fn randomised(&self, rng: &mut Randomiser) -> Result<Box<dyn Layer>> {
        Ok(Box::new(Residual {
            body: self.body.randomised_seq(rng)?,
            skip: self.skip.as_ref().map(|s| s.randomised_seq(rng)).transpose()?,
            post: self.post,
        }))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = match &self.skip {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        let y = (self.body.forward(x)? + s)?;
        match &self.post {
            Some(a) => a.forward(&y),
            None => Ok(y),
        }
    }

    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        let (b, bt) = self.body.forward_tape(x)?;
        let (s, st) = match &self.skip {
            Some(s) => s.forward_tape(x)?,
            None => (x.clone(), Tape::default()),
        };
        let y = (b + s)?;
        let (y, pt) = match &self.post {
            Some(a) => a.forward_tape(&y)?,
            None => (y, Tape::default()),
        };
        Ok((y, Tape { saved: vec![], children: vec![bt, st, pt] }))
    }

    fn backward(&self, tape: &Tape, dy: &Tensor) -> Result<Tensor> {
        let g = match &self.post {
            Some(a) => a.backward(&tape.children[2], dy)?,
            None => dy.clone(),
        };
        let gb = self.body.backward(&tape.children[0], &g)?;
        let gs = match &self.skip {
            Some(s) => s.backward(&tape.children[1], &g)?,
            None => g,
        };
        Ok((gb + gs)?)
    }
}

/// Max pooling `k × k`, stride `s`, padding `p` (padded cells never win: PyTorch's
/// `MaxPool2d`). The forward pass records the winning input position of each output; the
/// backward pass sends each output's gradient there (ties: the first in row-major order, as
/// PyTorch's CPU kernel).
pub struct MaxPool2d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool2d {
    /// Output values and, per output, the flat index of its maximum in the input plane.
    fn run(&self, x: &Tensor) -> Result<(Tensor, Vec<u32>)> {
        let (n, c, h, w) = x.dims4()?;
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if h + 2 * p < k || w + 2 * p < k || s == 0 || p > k / 2 {
            return Err(Error::invalid(format!("max pool {k}x{k}/{s} pad {p} does not fit a {h}x{w} input")));
        }
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let xs = x.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let mut out = Vec::with_capacity(n * c * ho * wo);
        let mut arg = Vec::with_capacity(n * c * ho * wo);
        for plane in xs.chunks_exact(h * w) {
            for i in 0..ho {
                for j in 0..wo {
                    let mut best = (f64::NEG_INFINITY, u32::MAX);
                    for a in 0..k {
                        let y = (i * s + a) as isize - p as isize;
                        if y < 0 || y >= h as isize {
                            continue;
                        }
                        for b in 0..k {
                            let xx = (j * s + b) as isize - p as isize;
                            if xx < 0 || xx >= w as isize {
                                continue;
                            }
                            let idx = y as usize * w + xx as usize;
                            let v = plane[idx];
                            if v > best.0 || best.1 == u32::MAX || v.is_nan() {
                                best = (v, idx as u32);
                            }
                        }
                    }
                    out.push(best.0);
                    arg.push(best.1);
                }
            }
        }
        let y = Tensor::from_vec(out, (n, c, ho, wo), x.device())?.to_dtype(x.dtype())?;
        Ok((y, arg))
    }
}

impl Layer for MaxPool2d {
    fn randomised(&self, _: &mut Randomiser) -> Result<Box<dyn Layer>> {
        Ok(Box::new(MaxPool2d { kernel: self.kernel, stride: self.stride, padding: self.padding }))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.run(x)?.0)
    }

    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        let (_, _, h, w) = x.dims4()?;
        let (y, arg) = self.run(x)?;
        let n = arg.len();
        let arg = Tensor::from_vec(arg, n, &candle_core::Device::Cpu)?;
        let size = Tensor::from_vec(vec![h as u32, w as u32], 2, &candle_core::Device::Cpu)?;
        Ok((y, Tape { saved: vec![size, arg], children: vec![] }))
    }

    fn backward(&self, tape: &Tape, dy: &Tensor) -> Result<Tensor> {
        let hw = tape.saved[0].to_vec1::<u32>()?;
        let (h, w) = (hw[0] as usize, hw[1] as usize);
        let arg = tape.saved[1].to_vec1::<u32>()?;
        let (n, c, ho, wo) = dy.dims4()?;
        let d = dy.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let mut dx = vec![0f64; n * c * h * w];
        for (pi, (dp, ap)) in d.chunks_exact(ho * wo).zip(arg.chunks_exact(ho * wo)).enumerate() {
            let plane = &mut dx[pi * h * w..(pi + 1) * h * w];
            for (&g, &a) in dp.iter().zip(ap) {
                plane[a as usize] += g;
            }
        }
        Ok(Tensor::from_vec(dx, (n, c, h, w), dy.device())?.to_dtype(dy.dtype())?)
    }
}

/// LayerNorm over the channels (dimension 1) at each position of `[N, C, H, W]` (or `[N, C]`):
/// torchvision's `LayerNorm2d` and ConvNeXt's channels-last `LayerNorm`.
pub struct LayerNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm2d {
    /// Reads `{prefix}.weight` and `.bias` (`[c]`).
    pub fn load(w: &Weights, prefix: &str, c: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm2d {
            weight: w.get(&format!("{prefix}.weight"), &[c])?,
            bias: w.get(&format!("{prefix}.bias"), &[c])?,
            eps,
        })
    }

    /// `[1, C, 1, …]` to broadcast a per-channel vector over `x`.
    fn per_channel(&self, v: &Tensor, x: &Tensor) -> Result<Tensor> {
        let mut shape = vec![1; x.rank()];
        shape[1] = v.dim(0)?;
        Ok(v.reshape(shape)?)
    }

    fn normalise(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let mu = x.mean_keepdim(1)?;
        let xc = x.broadcast_sub(&mu)?;
        let inv = (xc.sqr()?.mean_keepdim(1)? + self.eps)?.sqrt()?.recip()?;
        Ok((xc.broadcast_mul(&inv)?, inv))
    }
}

impl Layer for LayerNorm2d {
    fn randomised(&self, _: &mut Randomiser) -> Result<Box<dyn Layer>> {
        Ok(Box::new(LayerNorm2d { weight: self.weight.clone(), bias: self.bias.clone(), eps: self.eps }))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_tape(x)?.0)
    }

    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        let (xhat, inv) = self.normalise(x)?;
        let y = xhat
            .broadcast_mul(&self.per_channel(&self.weight, x)?)?
            .broadcast_add(&self.per_channel(&self.bias, x)?)?;
        Ok((y, Tape { saved: vec![xhat, inv], children: vec![] }))
    }

    fn backward(&self, tape: &Tape, dy: &Tensor) -> Result<Tensor> {
        // dx = (g − mean_c g − x̂·mean_c(g·x̂)) / σ with g = γ·dy
        let (xhat, inv) = (&tape.saved[0], &tape.saved[1]);
        let g = dy.broadcast_mul(&self.per_channel(&self.weight, dy)?)?;
        let m1 = g.mean_keepdim(1)?;
        let m2 = (&g * xhat)?.mean_keepdim(1)?;
        Ok(g.broadcast_sub(&m1)?.sub(&xhat.broadcast_mul(&m2)?)?.broadcast_mul(inv)?)
    }
}

/// A fixed per-channel scale `x · s` (ConvNeXt's layer scale), `s` shaped to broadcast.
pub struct Scale(pub Tensor);

impl Layer for Scale {
    fn randomised(&self, _: &mut Randomiser) -> Result<Box<dyn Layer>> {
        Ok(Box::new(Scale(self.0.clone())))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_mul(&self.0)?)
    }

    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        Ok((self.forward(x)?, Tape::default()))
    }

    fn backward(&self, _tape: &Tape, dy: &Tensor) -> Result<Tensor> {
        Ok(dy.broadcast_mul(&self.0)?)
    }
}

/// Global average pooling `[N, C, H, W]` → `[N, C]`.
pub struct GlobalAvgPool;

impl Layer for GlobalAvgPool {
    fn randomised(&self, _: &mut Randomiser) -> Result<Box<dyn Layer>> {
        Ok(Box::new(GlobalAvgPool))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.mean(D::Minus1)?.mean(D::Minus1)?)
    }

    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        let (_, _, h, w) = x.dims4()?;
        let size = Tensor::from_vec(vec![h as u32, w as u32], 2, &candle_core::Device::Cpu)?;
        Ok((self.forward(x)?, Tape { saved: vec![size], children: vec![] }))
    }

    fn backward(&self, tape: &Tape, dy: &Tensor) -> Result<Tensor> {
        let hw = tape.saved[0].to_vec1::<u32>()?;
        let (h, w) = (hw[0] as usize, hw[1] as usize);
        let (n, c) = dy.dims2()?;
        Ok((dy / (h * w) as f64)?.reshape((n, c, 1, 1))?.broadcast_as((n, c, h, w))?.contiguous()?)
    }
}

/// `y = x Wᵀ + b` on `[N, in]`.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn load(w: &Weights, name: &str, cin: usize, cout: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&format!("{name}.weight"), &[cout, cin])?;
        let bias = if bias { Some(w.get(&format!("{name}.bias"), &[cout])?) } else { None };
        Ok(Linear { weight, bias })
    }
}

impl Layer for Linear {
    fn learned(&self) -> bool {
        true
    }

    fn randomised(&self, rng: &mut Randomiser) -> Result<Box<dyn Layer>> {
        Ok(Box::new(Linear {
            weight: rng.redraw(&self.weight)?,
            bias: self.bias.as_ref().map(|b| rng.redraw(b)).transpose()?,
        }))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        Ok((self.forward(x)?, Tape::default()))
    }

    fn backward(&self, _tape: &Tape, dy: &Tensor) -> Result<Tensor> {
        Ok(dy.matmul(&self.weight)?)
    }
}
