//! Building blocks of convolutional classifiers, each with a forward pass, a forward pass that
//! records a [`Tape`], and a written-out backward pass. Attribution needs only `∂loss/∂input`
//! ([`Layer::backward`]); training also needs the weight gradients
//! ([`Layer::backward_params`], from a tape of [`Layer::forward_train`], which keeps the inputs
//! of layers with weights). Batch-norm layers are folded into the convolution before them at
//! load time (inference mode), so a convolution carries a bias.
//!
//! A layer keeps its parameters as plain tensors and lists them through one method,
//! [`Layer::map_params`]; copying with new parameters (an optimiser step), randomising (MPRT)
//! and listing them are built on it.

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

/// What a parameter is, for [`Layer::map_params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamRole {
    /// A convolution's or linear layer's weight or bias.
    Weight,
    /// A normalisation's affine parameters or a layer scale.
    Affine,
}

/// One differentiable stage of a classifier.
pub trait Layer: Send + Sync {
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// The forward pass plus what [`Layer::backward`] needs.
    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Tape)>;
    /// `∂loss/∂x` from `∂loss/∂y`.
    fn backward(&self, tape: &Tape, dy: &Tensor) -> Result<Tensor>;
    /// A copy of this layer whose every parameter `t` (in a fixed order: the order of
    /// [`Layer::params`]) is replaced by `f(role, t)`.
    fn map_params(&self, f: &mut dyn FnMut(ParamRole, &Tensor) -> Result<Tensor>) -> Result<Box<dyn Layer>>;
    /// The forward pass plus what [`Layer::backward_params`] needs (also the inputs of layers
    /// with weights, which attribution does not keep).
    fn forward_train(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        self.forward_tape(x)
    }
    /// `∂loss/∂x` and `∂loss/∂p` for every parameter of [`Layer::params`], in its order, from a
    /// tape of [`Layer::forward_train`].
    fn backward_params(&self, tape: &Tape, dy: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        Ok((self.backward(tape, dy)?, Vec::new()))
    }

    /// Only the parameter gradients of [`Layer::backward_params`] (the first layer of a
    /// network needs no gradient for its input, which costs as much as the forward pass).
    fn param_grads(&self, tape: &Tape, dy: &Tensor) -> Result<Vec<Tensor>> {
        Ok(self.backward_params(tape, dy)?.1)
    }

    /// The parameters, in [`Layer::map_params`] order.
    fn params(&self) -> Result<Vec<Tensor>> {
        let mut out = Vec::new();
        self.map_params(&mut |_, t| {
            out.push(t.clone());
            Ok(t.clone())
        })?;
        Ok(out)
    }

    /// A copy with the parameters `p` (as many, in the order and shapes of [`Layer::params`]).
    fn with_params(&self, p: &[Tensor]) -> Result<Box<dyn Layer>> {
        let mut it = p.iter();
        let layer = self.map_params(&mut |_, t| {
            let n = it.next().ok_or_else(|| Error::invalid("too few parameters for the layer"))?;
            if n.dims() != t.dims() {
                return Err(Error::invalid(format!("parameter shaped {:?} where {:?} belongs", n.dims(), t.dims())));
            }
            Ok(n.clone())
        })?;
        if it.next().is_some() {
            return Err(Error::invalid("too many parameters for the layer"));
        }
        Ok(layer)
    }

    /// A copy whose learned weights (convolutions, linear layers) are redrawn at random, for
    /// the model-randomisation sanity check (MPRT); normalisations and scales are kept.
    fn randomised(&self, rng: &mut Randomiser) -> Result<Box<dyn Layer>> {
        self.map_params(&mut |role, t| if role == ParamRole::Weight { rng.redraw(t) } else { Ok(t.clone()) })
    }

    /// Whether [`Layer::randomised`] redraws anything here (MPRT skips stages it would not change).
    fn learned(&self) -> bool {
        let mut any = false;
        let _ = self.map_params(&mut |role, t| {
            any |= role == ParamRole::Weight;
            Ok(t.clone())
        });
        any
    }
}

/// `∂loss/∂bias` of a per-channel bias on `[N, C, …]`: the sum over all but the channels.
fn bias_grad(dy: &Tensor) -> Result<Tensor> {
    let c = dy.dim(1)?;
    Ok(dy.transpose(0, 1)?.contiguous()?.reshape((c, ()))?.sum(1)?)
}

/// The spatial size `[h, w]` of `x` as a tape entry.
fn size_of(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    Ok(Tensor::from_vec(vec![h as u32, w as u32], 2, &candle_core::Device::Cpu)?)
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

impl Conv2d {
    /// `∂loss/∂weight` from the input `x` and `dy`.
    fn weight_grad(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let (_, o, ho, wo) = dy.dims4()?;
        if self.is_pointwise() {
            // Σ_n dy_n · x_nᵀ as one product over all positions of the batch
            let d = dy.reshape((n, o, ho * wo))?.transpose(0, 1)?.contiguous()?.reshape((o, n * ho * wo))?;
            let xt = x.reshape((n, c, h * w))?.transpose(1, 2)?.contiguous()?.reshape((n * h * w, c))?;
            return Ok(d.matmul(&xt)?.reshape((o, c, 1, 1))?);
        }
        let g = self.geometry(h, w);
        if self.is_depthwise() {
            return depthwise::backward_weight(x, dy, &g);
        }
        // dW[o, c, a, b] = Σ_{n,i,j} dy[n, o, i, j] · x_pad[n, c, s·i + a, s·j + b]: a convolution
        // of x (batch and channels swapped) with dy as the kernel, dilated by the stride
        let [t, b, l, r] = g.pads;
        let k = self.kernel();
        let xp = if g.pads == [0; 4] { x.clone() } else { x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)? };
        let xt = xp.transpose(0, 1)?.contiguous()?;
        let dyt = dy.transpose(0, 1)?.contiguous()?;
        let full = xt.conv2d(&dyt, 0, 1, self.stride, 1)?;
        Ok(full.narrow(2, 0, k)?.narrow(3, 0, k)?.transpose(0, 1)?.contiguous()?)
    }
}

impl Layer for Conv2d {
    fn map_params(&self, f: &mut dyn FnMut(ParamRole, &Tensor) -> Result<Tensor>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(Conv2d {
            weight: f(ParamRole::Weight, &self.weight)?,
            bias: self.bias.as_ref().map(|b| f(ParamRole::Weight, b)).transpose()?,
            stride: self.stride,
            padding: self.padding,
            groups: self.groups,
        }))
    }

    fn forward_train(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        Ok((self.forward(x)?, Tape { saved: vec![size_of(x)?, x.clone()], children: vec![] }))
    }

    fn backward_params(&self, tape: &Tape, dy: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        Ok((self.backward(tape, dy)?, self.param_grads(tape, dy)?))
    }

    fn param_grads(&self, tape: &Tape, dy: &Tensor) -> Result<Vec<Tensor>> {
        let x = tape.saved.get(1).ok_or_else(|| Error::invalid("weight gradients need a training tape"))?;
        let mut grads = vec![self.weight_grad(x, dy)?];
        if self.bias.is_some() {
            grads.push(bias_grad(dy)?);
        }
        Ok(grads)
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
        Ok((self.forward(x)?, Tape { saved: vec![size_of(x)?], children: vec![] }))
    }

    fn backward(&self, tape: &Tape, dy: &Tensor) -> Result<Tensor> {
        let hw = tape.saved[0].to_vec1::<u32>()?;
        let (h, w) = (hw[0] as usize, hw[1] as usize);
        let (n, o, ho, wo) = dy.dims4()?;
        if self.is_pointwise() {
            let c = self.weight.dim(1)?;
            let wt = self.weight.reshape((o, c))?.t()?.contiguous()?;
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
    fn map_params(&self, _: &mut dyn FnMut(ParamRole, &Tensor) -> Result<Tensor>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(*self))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Relu => x.relu()?,
            Activation::Relu6 => x.clamp(0f32, 6f32)?,
            Activation::Gelu => match gelu_fused(x, false)? {
                Some((y, _)) => y,
                None => x.gelu_erf()?,
            },
        })
    }

    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        if *self == Activation::Gelu {
            if let Some(r) = gelu_fused(x, true)? {
                return Ok(r);
            }
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

/// GELU (and with `derivative` its derivative, as a tape) in one pass over the values (CPU,
/// f32), or `None` elsewhere. Φ uses Abramowitz & Stegun's 7.1.26 for erf (absolute error below
/// 1.5e-7, under f32 rounding of the result's scale) so that Φ and φ share one exponential.
fn gelu_fused(x: &Tensor, derivative: bool) -> Result<Option<(Tensor, Tape)>> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return Ok(None);
    }
    let v = x.flatten_all()?.to_vec1::<f32>()?;
    let mut y = vec![0f32; v.len()];
    let mut d = vec![0f32; if derivative { v.len() } else { 0 }];
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152, 1.061_405_4];
    let run = |v: &[f32], y: &mut [f32], d: &mut [f32]| {
        for (i, (&xv, yv)) in v.iter().zip(y.iter_mut()).enumerate() {
            let g = (-0.5 * xv * xv).exp();
            let t = 1.0 / (1.0 + 0.327_591_1 * xv.abs() * std::f32::consts::FRAC_1_SQRT_2);
            let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
            let erf_abs = 1.0 - poly * g;
            let cdf = 0.5 * (1.0 + if xv < 0.0 { -erf_abs } else { erf_abs });
            *yv = xv * cdf;
            if let Some(dv) = d.get_mut(i) {
                *dv = cdf + xv * g * INV_SQRT_2PI;
            }
        }
    };
    let threads = candle_core::utils::get_num_threads().max(1);
    if threads == 1 || v.len() < 1 << 16 {
        run(&v, &mut y, &mut d);
    } else {
        let chunk = v.len().div_ceil(threads);
        std::thread::scope(|s| {
            let mut dc = d.chunks_mut(chunk);
            for (vc, yc) in v.chunks(chunk).zip(y.chunks_mut(chunk)) {
                let dcc = dc.next().unwrap_or_default();
                s.spawn(move || run(vc, yc, dcc));
            }
        });
    }
    let shape = x.dims();
    let saved = if derivative { vec![Tensor::from_vec(d, shape, x.device())?] } else { vec![] };
    Ok(Some((Tensor::from_vec(y, shape, x.device())?, Tape { saved, children: vec![] })))
}

/// Layers applied in order.
pub struct Sequence(pub Vec<Box<dyn Layer>>);

impl Sequence {
    /// Parameter gradients of every layer, and the input gradient if `input`.
    fn seq_backward(&self, tape: &Tape, dy: &Tensor, input: bool) -> Result<(Option<Tensor>, Vec<Tensor>)> {
        let mut g = dy.clone();
        let mut per_layer = Vec::with_capacity(self.0.len());
        for (i, (l, t)) in self.0.iter().zip(&tape.children).enumerate().rev() {
            if i == 0 && !input {
                per_layer.push(l.param_grads(t, &g)?);
                return Ok((None, per_layer.into_iter().rev().flatten().collect()));
            }
            let (dx, grads) = l.backward_params(t, &g)?;
            per_layer.push(grads);
            g = dx;
        }
        Ok((Some(g), per_layer.into_iter().rev().flatten().collect()))
    }

    fn map_seq(&self, f: &mut dyn FnMut(ParamRole, &Tensor) -> Result<Tensor>) -> Result<Sequence> {
        Ok(Sequence(self.0.iter().map(|l| l.map_params(f)).collect::<Result<_>>()?))
    }

    fn run(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tape)> {
        let mut h = x.clone();
        let mut children = Vec::with_capacity(self.0.len());
        for l in &self.0 {
            let (y, t) = if train { l.forward_train(&h)? } else { l.forward_tape(&h)? };
            children.push(t);
            h = y;
        }
        Ok((h, Tape { saved: vec![], children }))
    }
}

impl Layer for Sequence {
    fn map_params(&self, f: &mut dyn FnMut(ParamRole, &Tensor) -> Result<Tensor>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(self.map_seq(f)?))
    }

    fn forward_train(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        self.run(x, true)
    }

    fn backward_params(&self, tape: &Tape, dy: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let (g, grads) = self.seq_backward(tape, dy, true)?;
        Ok((g.expect("asked for"), grads))
    }

    fn param_grads(&self, tape: &Tape, dy: &Tensor) -> Result<Vec<Tensor>> {
        Ok(self.seq_backward(tape, dy, false)?.1)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.0 {
            h = l.forward(&h)?;
        }
        Ok(h)
    }

    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        self.run(x, false)
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

impl Residual {
    fn run(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tape)> {
        let (b, bt) = self.body.run(x, train)?;
        let (s, st) = match &self.skip {
            Some(s) => s.run(x, train)?,
            None => (x.clone(), Tape::default()),
        };
        let y = (b + s)?;
        let (y, pt) = match &self.post {
            Some(a) => a.forward_tape(&y)?,
            None => (y, Tape::default()),
        };
        Ok((y, Tape { saved: vec![], children: vec![bt, st, pt] }))
    }
}

impl Layer for Residual {
    fn map_params(&self, f: &mut dyn FnMut(ParamRole, &Tensor) -> Result<Tensor>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(Residual {
            body: self.body.map_seq(f)?,
            skip: self.skip.as_ref().map(|s| s.map_seq(f)).transpose()?,
            post: self.post,
        }))
    }

    fn forward_train(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        self.run(x, true)
    }

    fn backward_params(&self, tape: &Tape, dy: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let g = match &self.post {
            Some(a) => a.backward(&tape.children[2], dy)?,
            None => dy.clone(),
        };
        let (gb, mut grads) = self.body.backward_params(&tape.children[0], &g)?;
        let gs = match &self.skip {
            Some(s) => {
                let (gs, more) = s.backward_params(&tape.children[1], &g)?;
                grads.extend(more);
                gs
            }
            None => g,
        };
        Ok(((gb + gs)?, grads))
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
        self.run(x, false)
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
    fn map_params(&self, _: &mut dyn FnMut(ParamRole, &Tensor) -> Result<Tensor>) -> Result<Box<dyn Layer>> {
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
    fn map_params(&self, f: &mut dyn FnMut(ParamRole, &Tensor) -> Result<Tensor>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(LayerNorm2d {
            weight: f(ParamRole::Affine, &self.weight)?,
            bias: f(ParamRole::Affine, &self.bias)?,
            eps: self.eps,
        }))
    }

    fn backward_params(&self, tape: &Tape, dy: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        if let Some((dx, dg, db)) = layer_norm_cpu::backward(dy, &tape.saved[0], &tape.saved[1], &self.weight)? {
            return Ok((dx, vec![dg, db]));
        }
        let dgamma = bias_grad(&(dy * &tape.saved[0])?)?;
        Ok((self.backward(tape, dy)?, vec![dgamma, bias_grad(dy)?]))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_tape(x)?.0)
    }

    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        if let Some((y, xhat, inv)) = layer_norm_cpu::forward(x, &self.weight, &self.bias, self.eps)? {
            return Ok((y, Tape { saved: vec![xhat, inv], children: vec![] }));
        }
        let (xhat, inv) = self.normalise(x)?;
        let y = xhat
            .broadcast_mul(&self.per_channel(&self.weight, x)?)?
            .broadcast_add(&self.per_channel(&self.bias, x)?)?;
        Ok((y, Tape { saved: vec![xhat, inv], children: vec![] }))
    }

    fn backward(&self, tape: &Tape, dy: &Tensor) -> Result<Tensor> {
        // dx = (g − mean_c g − x̂·mean_c(g·x̂)) / σ with g = γ·dy
        let (xhat, inv) = (&tape.saved[0], &tape.saved[1]);
        if let Some((dx, _, _)) = layer_norm_cpu::backward(dy, xhat, inv, &self.weight)? {
            return Ok(dx);
        }
        let g = dy.broadcast_mul(&self.per_channel(&self.weight, dy)?)?;
        let m1 = g.mean_keepdim(1)?;
        let m2 = (&g * xhat)?.mean_keepdim(1)?;
        Ok(g.broadcast_sub(&m1)?.sub(&xhat.broadcast_mul(&m2)?)?.broadcast_mul(inv)?)
    }
}

/// [`LayerNorm2d`] as single passes over `[N, C, H, W]` f32 values on the CPU (the tensor-op
/// version makes eight passes); `None` for other devices, types or ranks.
mod layer_norm_cpu {
    use crate::error::Result;
    use candle_core::{DType, Tensor};

    fn eligible(t: &Tensor) -> bool {
        t.device().is_cpu() && t.dtype() == DType::F32 && t.rank() == 4
    }

    /// Runs `f(first_image, image_count, chunks…)` over disjoint runs of images on up to
    /// candle's thread count, each output split `per[i]` values per image.
    fn split<F>(n: usize, work: usize, outs: Vec<(&mut [f32], usize)>, f: F)
    where
        F: Fn(usize, usize, &mut [&mut [f32]]) + Sync,
    {
        let threads = candle_core::utils::get_num_threads().clamp(1, n.max(1));
        let threads = if work < 1 << 16 { 1 } else { threads };
        let per_thread = n.div_ceil(threads);
        let mut parts: Vec<Vec<&mut [f32]>> = (0..threads).map(|_| Vec::new()).collect();
        for (buf, per) in outs {
            for (t, c) in buf.chunks_mut((per * per_thread).max(1)).enumerate() {
                parts[t].push(c);
            }
        }
        std::thread::scope(|s| {
            for (t, mut chunks) in parts.into_iter().enumerate() {
                let f = &f;
                let first = t * per_thread;
                let count = per_thread.min(n.saturating_sub(first));
                if count == 0 {
                    continue;
                }
                if threads == 1 {
                    f(first, count, &mut chunks);
                } else {
                    s.spawn(move || f(first, count, &mut chunks));
                }
            }
        });
    }

    /// `(y, x̂, 1/σ)`.
    pub fn forward(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Option<(Tensor, Tensor, Tensor)>> {
        if !eligible(x) || gamma.dtype() != DType::F32 {
            return Ok(None);
        }
        let (n, c, h, w) = x.dims4()?;
        let l = h * w;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let (g, b) = (gamma.to_vec1::<f32>()?, beta.to_vec1::<f32>()?);
        let mut y = vec![0f32; xs.len()];
        let mut xhat = vec![0f32; xs.len()];
        let mut inv = vec![0f32; n * l];
        let eps = eps as f32;
        split(n, xs.len(), vec![(&mut y, c * l), (&mut xhat, c * l), (&mut inv, l)], |first, count, out| {
            let mut mean = vec![0f32; l];
            let mut var = vec![0f32; l];
            for k in 0..count {
                let img = &xs[(first + k) * c * l..(first + k + 1) * c * l];
                mean.fill(0.0);
                var.fill(0.0);
                for ch in img.chunks_exact(l) {
                    for (m, &v) in mean.iter_mut().zip(ch) {
                        *m += v;
                    }
                }
                mean.iter_mut().for_each(|m| *m /= c as f32);
                for ch in img.chunks_exact(l) {
                    for ((s, &m), &v) in var.iter_mut().zip(&mean).zip(ch) {
                        *s += (v - m) * (v - m);
                    }
                }
                let iv = &mut out[2][k * l..(k + 1) * l];
                for (i, &s) in iv.iter_mut().zip(&var) {
                    *i = 1.0 / (s / c as f32 + eps).sqrt();
                }
                let iv = iv.to_vec();
                for (ci, ch) in img.chunks_exact(l).enumerate() {
                    let o = (k * c + ci) * l;
                    for p in 0..l {
                        let xh = (ch[p] - mean[p]) * iv[p];
                        out[1][o + p] = xh;
                        out[0][o + p] = xh * g[ci] + b[ci];
                    }
                }
            }
        });
        let dev = x.device();
        Ok(Some((
            Tensor::from_vec(y, (n, c, h, w), dev)?,
            Tensor::from_vec(xhat, (n, c, h, w), dev)?,
            Tensor::from_vec(inv, (n, 1, h, w), dev)?,
        )))
    }

    /// `(dx, dγ, dβ)` from `dy`, `x̂`, `1/σ`.
    pub fn backward(
        dy: &Tensor,
        xhat: &Tensor,
        inv: &Tensor,
        gamma: &Tensor,
    ) -> Result<Option<(Tensor, Tensor, Tensor)>> {
        if !eligible(dy) || !eligible(xhat) || gamma.dtype() != DType::F32 {
            return Ok(None);
        }
        let (n, c, h, w) = dy.dims4()?;
        let l = h * w;
        let ds = dy.flatten_all()?.to_vec1::<f32>()?;
        let xs = xhat.flatten_all()?.to_vec1::<f32>()?;
        let is = inv.flatten_all()?.to_vec1::<f32>()?;
        let g = gamma.to_vec1::<f32>()?;
        let mut dx = vec![0f32; ds.len()];
        // per-image sums of dγ, dβ (2c values per image), added up afterwards in a fixed order
        let mut partial = vec![0f32; n * 2 * c];
        split(n, ds.len(), vec![(&mut dx, c * l), (&mut partial, 2 * c)], |first, count, out| {
            let (mut m1, mut m2) = (vec![0f32; l], vec![0f32; l]);
            for k in 0..count {
                let base = (first + k) * c * l;
                let (d, xh) = (&ds[base..base + c * l], &xs[base..base + c * l]);
                let iv = &is[(first + k) * l..(first + k + 1) * l];
                m1.fill(0.0);
                m2.fill(0.0);
                for ci in 0..c {
                    let (dc, xc) = (&d[ci * l..(ci + 1) * l], &xh[ci * l..(ci + 1) * l]);
                    let (mut sg, mut sb) = (0f32, 0f32);
                    for p in 0..l {
                        let gv = dc[p] * g[ci];
                        m1[p] += gv;
                        m2[p] += gv * xc[p];
                        sg += dc[p] * xc[p];
                        sb += dc[p];
                    }
                    out[1][k * 2 * c + ci] = sg;
                    out[1][k * 2 * c + c + ci] = sb;
                }
                for ci in 0..c {
                    let (dc, xc) = (&d[ci * l..(ci + 1) * l], &xh[ci * l..(ci + 1) * l]);
                    let o = &mut out[0][(k * c + ci) * l..(k * c + ci + 1) * l];
                    for p in 0..l {
                        let gv = dc[p] * g[ci];
                        o[p] = (gv - m1[p] / c as f32 - xc[p] * m2[p] / c as f32) * iv[p];
                    }
                }
            }
        });
        let mut dg = vec![0f32; c];
        let mut db = vec![0f32; c];
        for part in partial.chunks_exact(2 * c) {
            for ci in 0..c {
                dg[ci] += part[ci];
                db[ci] += part[c + ci];
            }
        }
        let dev = dy.device();
        Ok(Some((
            Tensor::from_vec(dx, (n, c, h, w), dev)?,
            Tensor::from_vec(dg, c, dev)?,
            Tensor::from_vec(db, c, dev)?,
        )))
    }
}

/// A fixed per-channel scale `x · s` (ConvNeXt's layer scale), `s` shaped to broadcast.
pub struct Scale(pub Tensor);

impl Layer for Scale {
    fn map_params(&self, f: &mut dyn FnMut(ParamRole, &Tensor) -> Result<Tensor>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(Scale(f(ParamRole::Affine, &self.0)?)))
    }

    fn forward_train(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        Ok((self.forward(x)?, Tape { saved: vec![x.clone()], children: vec![] }))
    }

    fn backward_params(&self, tape: &Tape, dy: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let x = tape.saved.first().ok_or_else(|| Error::invalid("weight gradients need a training tape"))?;
        // sum over every dimension the scale broadcasts along
        let prod = (dy * x)?;
        let mut g = prod.clone();
        for (d, (&sd, _)) in self.0.dims().iter().zip(prod.dims()).enumerate().rev() {
            if sd == 1 {
                g = g.sum_keepdim(d)?;
            }
        }
        Ok((self.backward(tape, dy)?, vec![g.reshape(self.0.dims())?]))
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
    fn map_params(&self, _: &mut dyn FnMut(ParamRole, &Tensor) -> Result<Tensor>) -> Result<Box<dyn Layer>> {
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
    fn map_params(&self, f: &mut dyn FnMut(ParamRole, &Tensor) -> Result<Tensor>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(Linear {
            weight: f(ParamRole::Weight, &self.weight)?,
            bias: self.bias.as_ref().map(|b| f(ParamRole::Weight, b)).transpose()?,
        }))
    }

    fn forward_train(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        Ok((self.forward(x)?, Tape { saved: vec![x.clone()], children: vec![] }))
    }

    fn backward_params(&self, tape: &Tape, dy: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let x = tape.saved.first().ok_or_else(|| Error::invalid("weight gradients need a training tape"))?;
        let mut grads = vec![dy.t()?.matmul(x)?];
        if self.bias.is_some() {
            grads.push(dy.sum(0)?);
        }
        Ok((self.backward(tape, dy)?, grads))
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

#[cfg(test)]
mod param_grad_tests {
    use super::*;
    use candle_core::Device;

    fn rand(dims: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = dims.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    /// `<dy, y>` is linear in every weight of a convolution, so its gradient is exact to check
    /// by finite differences on a few entries.
    fn check(layer: &dyn Layer, x: &Tensor) {
        let (y, tape) = layer.forward_train(x).unwrap();
        let dy = rand(y.dims(), 9);
        let (_, grads) = layer.backward_params(&tape, &dy).unwrap();
        let params = layer.params().unwrap();
        assert_eq!(grads.len(), params.len());
        let f = |l: &dyn Layer| (l.forward(x).unwrap() * &dy).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        for (i, (p, g)) in params.iter().zip(&grads).enumerate() {
            assert_eq!(p.dims(), g.dims());
            let flat = p.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let gv = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for k in (0..flat.len()).step_by(flat.len().div_ceil(7)) {
                let at = |d: f64| {
                    let mut ps = params.clone();
                    let mut v = flat.clone();
                    v[k] += d;
                    ps[i] = Tensor::from_vec(v, p.dims(), &Device::Cpu).unwrap();
                    f(&*layer.with_params(&ps).unwrap())
                };
                let fd = (at(1e-4) - at(-1e-4)) / 2e-4;
                assert!((fd - gv[k]).abs() < 1e-6 * (1.0 + fd.abs()), "param {i} entry {k}: fd {fd} vs {}", gv[k]);
            }
        }
    }

    #[test]
    fn weight_gradients_match_finite_differences() {
        let conv = |cin, cout, k, stride, pad, groups| Conv2d {
            weight: rand(&[cout, cin / groups, k, k], 1),
            bias: Some(rand(&[cout], 2)),
            stride,
            padding: Padding::Fixed(pad),
            groups,
        };
        let x = rand(&[2, 4, 12, 12], 3);
        check(&conv(4, 5, 4, 4, 0, 1), &x); // patchify stem
        check(&conv(4, 5, 2, 2, 0, 1), &x); // downsampling
        check(&conv(4, 5, 2, 1, 0, 1), &x); // PIP-Net's stride-1 downsampling
        check(&conv(4, 3, 3, 2, 1, 1), &x);
        check(&conv(4, 6, 1, 1, 0, 1), &x); // pointwise
        check(&conv(4, 4, 7, 1, 3, 4), &x); // depthwise
        check(&conv(4, 4, 7, 1, 3, 4), &rand(&[2, 4, 2, 2], 4)); // depthwise on a tiny map
        let ln = LayerNorm2d { weight: rand(&[4], 5), bias: rand(&[4], 6), eps: 1e-6 };
        check(&ln, &x);
        check(&Scale(rand(&[1, 4, 1, 1], 7)), &x);
        check(&Linear { weight: rand(&[3, 4], 8), bias: Some(rand(&[3], 9)) }, &rand(&[5, 4], 10));
        let block = Residual {
            body: Sequence(vec![
                Box::new(conv(4, 4, 3, 1, 1, 4)),
                Box::new(Activation::Gelu),
                Box::new(conv(4, 4, 1, 1, 0, 1)),
            ]),
            skip: None,
            post: None,
        };
        check(&block, &x);
    }
}

#[cfg(test)]
mod fused_tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        let b = b.to_dtype(a.dtype()).unwrap();
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    #[test]
    fn fused_f32_kernels_match_the_tensor_op_versions() {
        let x = Tensor::randn(0f64, 2.0, (3, 5, 4, 6), &Device::Cpu).unwrap();
        let dy = Tensor::randn(0f64, 1.0, (3, 5, 4, 6), &Device::Cpu).unwrap();
        let ln = LayerNorm2d {
            weight: Tensor::randn(1f64, 0.3, 5, &Device::Cpu).unwrap(),
            bias: Tensor::randn(0f64, 0.3, 5, &Device::Cpu).unwrap(),
            eps: 1e-6,
        };
        let ln32 = ln.map_params(&mut |_, t| Ok(t.to_dtype(DType::F32)?)).unwrap();
        let (x32, dy32) = (x.to_dtype(DType::F32).unwrap(), dy.to_dtype(DType::F32).unwrap());
        // the f64 path runs the tensor ops, the f32 path the fused loops
        for layer in [&ln as &dyn Layer, &Activation::Gelu] {
            let (y, t) = layer.forward_train(&x).unwrap();
            let (dx, g) = layer.backward_params(&t, &dy).unwrap();
            let l32: &dyn Layer = if g.is_empty() { layer } else { &*ln32 };
            let (y32, t32) = l32.forward_train(&x32).unwrap();
            let (dx32, g32) = l32.backward_params(&t32, &dy32).unwrap();
            assert!(max_diff(&y32, &y) < 1e-5, "forward");
            assert!(max_diff(&dx32, &dx) < 1e-5, "input gradient");
            for (a, b) in g32.iter().zip(&g) {
                assert!(max_diff(a, b) < 1e-4, "parameter gradient");
            }
        }
    }
}
