//! Transformer encoder blocks (pre-LayerNorm as in CLIP / ViT / SigLIP, post-LayerNorm as in
//! BERT) and SigLIP's attention-pooling head, with hand-written backward passes.
//!
//! Attribution methods optimise a mask on a hidden state and need `d output / d hidden state`
//! only: never gradients of the frozen weights. candle's autograd computes weight gradients too
//! (wasted work), and its fused `layer_norm` / `softmax_last_dim` record no backward op at all,
//! so gradients through them would be silently cut. This module therefore runs the forward pass
//! with a [`BlockTape`] of the activations it needs and computes the vector-Jacobian product
//! with respect to the block input explicitly, with candle tensor ops (so it runs on CPU and
//! CUDA alike). A finite-difference test in `tests/` guards it.

use super::clip::config::{Activation, TowerConfig};
use super::weights::Weights;
use crate::error::Result;
use candle_core::{Tensor, D};

/// `y = x W^T + b` with `W` of shape `[out, in]`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn load(w: &Weights, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias { Some(w.get(&format!("{prefix}.bias"), &[out_dim])?) } else { None };
        Ok(Linear { weight, bias })
    }

    /// `x`: `[n, in]` → `[n, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// Gradient with respect to the input: `dy [n, out]` → `dx [n, in]`.
    pub fn backward_input(&self, dy: &Tensor) -> Result<Tensor> {
        Ok(dy.matmul(&self.weight)?)
    }

    /// The linear map restricted to output rows `start..start+len` (no copy).
    pub(crate) fn rows(&self, start: usize, len: usize) -> Result<Linear> {
        Ok(Linear {
            weight: self.weight.narrow(0, start, len)?,
            bias: match &self.bias {
                Some(b) => Some(b.narrow(0, start, len)?),
                None => None,
            },
        })
    }
}

/// LayerNorm over the last dimension.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

/// What [`LayerNorm::backward`] needs from the forward pass.
pub struct LayerNormTape {
    xhat: Tensor,
    rstd: Tensor,
}

impl LayerNorm {
    pub fn load(w: &Weights, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: w.get(&format!("{prefix}.weight"), &[dim])?,
            bias: w.get(&format!("{prefix}.bias"), &[dim])?,
            eps,
        })
    }

    /// Forward without a tape (uses candle's fused kernel).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32)?)
    }

    /// Forward that keeps what the backward pass needs.
    pub fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, LayerNormTape)> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let rstd = (var + self.eps)?.sqrt()?.recip()?;
        let xhat = xc.broadcast_mul(&rstd)?;
        let y = xhat.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?;
        Ok((y, LayerNormTape { xhat, rstd }))
    }

    /// `dx` from `dy` (same shape as the input).
    pub fn backward(&self, tape: &LayerNormTape, dy: &Tensor) -> Result<Tensor> {
        let dxhat = dy.broadcast_mul(&self.weight)?;
        let m1 = dxhat.mean_keepdim(D::Minus1)?;
        let m2 = (&dxhat * &tape.xhat)?.mean_keepdim(D::Minus1)?;
        let inner = dxhat.broadcast_sub(&m1)?.sub(&tape.xhat.broadcast_mul(&m2)?)?;
        Ok(inner.broadcast_mul(&tape.rstd)?)
    }
}

fn act_forward(act: Activation, f: &Tensor) -> Result<Tensor> {
    Ok(match act {
        Activation::QuickGelu => (f * candle_nn::ops::sigmoid(&(f * 1.702)?)?)?,
        Activation::Gelu => f.gelu_erf()?,
        Activation::GeluTanh => f.gelu()?,
    })
}

/// `d act(f) / d f`, elementwise.
fn act_derivative(act: Activation, f: &Tensor) -> Result<Tensor> {
    Ok(match act {
        Activation::QuickGelu => {
            let s = candle_nn::ops::sigmoid(&(f * 1.702)?)?;
            // s + 1.702 f s (1 - s)
            let one_minus = s.affine(-1.0, 1.0)?;
            (&s + ((f * 1.702)? * &s)?.mul(&one_minus)?)?
        }
        Activation::Gelu => {
            // Phi(f) + f phi(f)
            let cdf = ((f / std::f64::consts::SQRT_2)?.erf()? + 1.0)? * 0.5;
            let pdf = (f.sqr()? * -0.5)?.exp()? * (1.0 / (2.0 * std::f64::consts::PI).sqrt());
            (cdf? + (f * pdf?)?)?
        }
        Activation::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let f2 = f.sqr()?;
            let inner = ((f * ((&f2 * 0.044715)? + 1.0)?)? * c)?;
            let t = inner.tanh()?;
            let dinner = ((&f2 * (3.0 * 0.044715))? + 1.0)? * c;
            let sech2 = t.sqr()?.affine(-1.0, 1.0)?;
            ((t + 1.0)? * 0.5)?.add(&((f * 0.5)? * sech2)?.mul(&dinner?)?)?
        }
    })
}

/// Which output rows a block computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// Every token.
    All,
    /// Only token `t` (the pooled token of a last layer); keys/values still use all tokens
    /// (`0..=t` under a causal mask). Output has one row per batch item.
    One(usize),
}

/// Where a block's LayerNorms sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormPlacement {
    /// `x + attn(ln1(x))`, then `+ mlp(ln2(.))` (CLIP, ViT, SigLIP).
    Pre,
    /// `ln1(x + attn(x))`, then `ln2(. + mlp(.))` (BERT).
    Post,
}

/// Multi-head attention with fused q/k/v projections (`qkv.weight` is `[3D, D]`).
#[derive(Clone, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub out_proj: Linear,
    pub heads: usize,
}

/// What [`Attention`]'s backward pass needs.
pub struct AttentionTape {
    q: Tensor, // scaled, [B, H, Tq, d]
    k: Tensor, // [B, H, Tk, d]
    v: Tensor,
    p: Tensor, // [B, H, Tq, Tk]
}

impl Attention {
    /// From separate q, k, v projections (all with biases or all without).
    pub fn from_parts(q: Linear, k: Linear, v: Linear, out_proj: Linear, heads: usize) -> Result<Self> {
        let bias = match (&q.bias, &k.bias, &v.bias) {
            (Some(a), Some(b), Some(c)) => Some(Tensor::cat(&[a, b, c], 0)?),
            (None, None, None) => None,
            _ => return Err(crate::error::Error::invalid("q, k and v projections disagree on having a bias")),
        };
        let qkv = Linear { weight: Tensor::cat(&[&q.weight, &k.weight, &v.weight], 0)?, bias };
        Attention::new(qkv, out_proj, heads)
    }

    /// PyTorch's `nn.MultiheadAttention` under `prefix` (`in_proj_weight`, `in_proj_bias`,
    /// `out_proj`): open_clip's blocks and SigLIP's pooling head.
    pub fn load_torch(w: &Weights, prefix: &str, d: usize, heads: usize) -> Result<Self> {
        let qkv = Linear {
            weight: w.get(&format!("{prefix}.in_proj_weight"), &[3 * d, d])?,
            bias: Some(w.get(&format!("{prefix}.in_proj_bias"), &[3 * d])?),
        };
        Attention::new(qkv, Linear::load(w, &format!("{prefix}.out_proj"), d, d, true)?, heads)
    }

    /// From a fused `[3D, D]` projection (open_clip's `in_proj_weight`, timm's `qkv`).
    pub fn new(qkv: Linear, out_proj: Linear, heads: usize) -> Result<Self> {
        let d = out_proj.weight.dim(0)?;
        if heads == 0 || d % heads != 0 || qkv.weight.dims() != [3 * d, d] {
            return Err(crate::error::Error::invalid(format!(
                "attention of width {d} with {heads} heads and a q/k/v projection of shape {:?}",
                qkv.weight.dims()
            )));
        }
        Ok(Attention { qkv, out_proj, heads })
    }

    fn dim(&self) -> usize {
        self.out_proj.weight.dim(0).unwrap_or(0)
    }

    /// Self-attention of `a [B·T, D]` over all its tokens; output `[B·T, D]`.
    fn forward_all(&self, a: &Tensor, b: usize, t: usize, causal: bool) -> Result<(Tensor, AttentionTape)> {
        let (h, d) = (self.heads, self.dim());
        let qkv = self.qkv.forward(a)?.reshape((b, t, 3, h, d / h))?.permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)?.contiguous()? * self.scale())?;
        self.attend(q, qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?, causal)
    }

    /// Queries from `aq [B·Tq, D]`, keys and values from `akv [B·Tk, D]` (no mask); output
    /// `[B·Tq, D]`.
    fn forward_split(&self, aq: &Tensor, akv: &Tensor, b: usize) -> Result<(Tensor, AttentionTape)> {
        let (h, d) = (self.heads, self.dim());
        let (tq, tk) = (aq.dim(0)? / b, akv.dim(0)? / b);
        let kv = self.qkv.rows(d, 2 * d)?.forward(akv)?.reshape((b, tk, 2, h, d / h))?.permute((2, 0, 3, 1, 4))?;
        let q = self.qkv.rows(0, d)?.forward(aq)?.reshape((b, tq, h, d / h))?.transpose(1, 2)?.contiguous()?;
        self.attend((q * self.scale())?, kv.get(0)?.contiguous()?, kv.get(1)?.contiguous()?, false)
    }

    fn scale(&self) -> f64 {
        1.0 / ((self.dim() / self.heads) as f64).sqrt()
    }

    fn attend(&self, q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Result<(Tensor, AttentionTape)> {
        let (b, _, tq, _) = q.dims4()?;
        let mut s = q.matmul(&k.t()?)?;
        if causal {
            s = s.broadcast_add(&causal_mask(tq, q.device())?.to_dtype(s.dtype())?)?;
        }
        let p = candle_nn::ops::softmax_last_dim(&s)?;
        let o = p.matmul(&v)?.transpose(1, 2)?.reshape((b * tq, self.dim()))?;
        Ok((self.out_proj.forward(&o)?, AttentionTape { q, k, v, p }))
    }

    /// Gradients of the (unscaled) q, k, v heads from the output gradient `dy [B·Tq, D]`.
    fn backward_heads(&self, tape: &AttentionTape, dy: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, h, tq, _) = tape.p.dims4()?;
        let hd = self.dim() / h;
        let dout = self.out_proj.backward_input(dy)?.reshape((b, tq, h, hd))?.transpose(1, 2)?.contiguous()?;
        let dp = dout.matmul(&tape.v.t()?)?;
        let dv = tape.p.t()?.matmul(&dout)?;
        let ds = (&tape.p * dp.broadcast_sub(&(&dp * &tape.p)?.sum_keepdim(D::Minus1)?)?)?;
        let dq = (ds.matmul(&tape.k)? * self.scale())?;
        let dk = ds.t()?.matmul(&tape.q)?;
        Ok((dq, dk, dv))
    }

    /// Backward of [`Attention::forward_all`]: `dy [B·T, D]` → `da [B·T, D]`.
    fn backward_all(&self, tape: &AttentionTape, dy: &Tensor) -> Result<Tensor> {
        let (b, _, t, _) = tape.p.dims4()?;
        let (dq, dk, dv) = self.backward_heads(tape, dy)?;
        let dqkv = Tensor::stack(&[dq, dk, dv], 0)?.permute((1, 3, 0, 2, 4))?.reshape((b * t, 3 * self.dim()))?;
        self.qkv.backward_input(&dqkv)
    }

    /// Backward of [`Attention::forward_split`]: `dy [B·Tq, D]` → (`daq [B·Tq, D]`, `dakv [B·Tk, D]`).
    fn backward_split(&self, tape: &AttentionTape, dy: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, _, tq, tk) = tape.p.dims4()?;
        let d = self.dim();
        let (dq, dk, dv) = self.backward_heads(tape, dy)?;
        let dkv = Tensor::stack(&[dk, dv], 0)?.permute((1, 3, 0, 2, 4))?.reshape((b * tk, 2 * d))?;
        let dakv = self.qkv.rows(d, 2 * d)?.backward_input(&dkv)?;
        let daq = self.qkv.rows(0, d)?.backward_input(&dq.transpose(1, 2)?.reshape((b * tq, d))?)?;
        Ok((daq, dakv))
    }
}

/// A two-layer MLP `fc2(act(fc1(x)))`.
#[derive(Clone, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    pub activation: Activation,
}

impl Mlp {
    /// Output and the pre-activation (the tape).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let f = self.fc1.forward(x)?;
        Ok((self.fc2.forward(&act_forward(self.activation, &f)?)?, f))
    }

    pub(crate) fn backward(&self, f: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let df = (self.fc2.backward_input(dy)? * act_derivative(self.activation, f)?)?;
        self.fc1.backward_input(&df)
    }
}

/// One encoder block: attention and MLP, each with a residual and a LayerNorm placed as
/// [`NormPlacement`] says.
#[derive(Clone, Debug)]
pub struct Block {
    pub ln1: LayerNorm,
    pub attn: Attention,
    pub ln2: LayerNorm,
    pub mlp: Mlp,
    pub norm: NormPlacement,
}

/// Activations kept by [`Block::forward_tape`].
pub struct BlockTape {
    rows: Rows,
    tokens: usize,
    ln1: LayerNormTape,
    attn: AttentionTape,
    ln2: LayerNormTape,
    f: Tensor, // MLP pre-activation
}

impl Block {
    /// A block with HF `CLIPEncoderLayer` tensor names under `prefix`.
    pub fn load(w: &Weights, prefix: &str, c: &TowerConfig) -> Result<Self> {
        let d = c.hidden_size;
        let lin = |name: &str, i: usize, o: usize| Linear::load(w, &format!("{prefix}.{name}"), i, o, true);
        Ok(Block {
            ln1: LayerNorm::load(w, &format!("{prefix}.layer_norm1"), d, c.layer_norm_eps)?,
            attn: Attention::from_parts(
                lin("self_attn.q_proj", d, d)?,
                lin("self_attn.k_proj", d, d)?,
                lin("self_attn.v_proj", d, d)?,
                lin("self_attn.out_proj", d, d)?,
                c.num_attention_heads,
            )?,
            ln2: LayerNorm::load(w, &format!("{prefix}.layer_norm2"), d, c.layer_norm_eps)?,
            mlp: Mlp {
                fc1: lin("mlp.fc1", d, c.intermediate_size)?,
                fc2: lin("mlp.fc2", c.intermediate_size, d)?,
                activation: c.activation,
            },
            norm: NormPlacement::Pre,
        })
    }

    /// Plain forward: `x [B, T, D]` → `[B, T, D]`.
    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        Ok(self.forward_impl(x, causal, Rows::All, false)?.0)
    }

    /// Forward that records a tape for [`Block::backward`]. With [`Rows::One`], the output is
    /// `[B, D]` (only that token).
    pub fn forward_tape(&self, x: &Tensor, causal: bool, rows: Rows) -> Result<(Tensor, BlockTape)> {
        let (y, tape) = self.forward_impl(x, causal, rows, true)?;
        Ok((y, tape.expect("keep = true records a tape")))
    }

    fn forward_impl(&self, x: &Tensor, causal: bool, rows: Rows, keep: bool) -> Result<(Tensor, Option<BlockTape>)> {
        let (b, t, d) = x.dims3()?;
        let x2 = x.reshape((b * t, d))?;
        let pre = self.norm == NormPlacement::Pre;
        // the attention input: normalised first (pre-norm) or the block input itself
        let (a, ln1_pre) = if pre { norm(&self.ln1, &x2, keep)? } else { (x2.clone(), None) };
        let (attn, attn_tape, resid) = match rows {
            Rows::All => {
                let (o, tp) = self.attn.forward_all(&a, b, t, causal)?;
                (o, tp, x2)
            }
            Rows::One(tok) => {
                // the pooled token attends to the tokens it may see
                let tk = if causal { tok + 1 } else { t };
                let a3 = a.reshape((b, t, d))?;
                let akv = a3.narrow(1, 0, tk)?.reshape((b * tk, d))?;
                let aq = a3.narrow(1, tok, 1)?.reshape((b, d))?;
                let (o, tp) = self.attn.forward_split(&aq, &akv, b)?;
                (o, tp, x.narrow(1, tok, 1)?.reshape((b, d))?)
            }
        };
        let s1 = (resid + attn)?;
        let (x1, ln1) = if pre { (s1, ln1_pre) } else { norm(&self.ln1, &s1, keep)? };
        let (y, ln2, f) = if pre {
            let (bn, ln2) = norm(&self.ln2, &x1, keep)?;
            let (m, f) = self.mlp.forward(&bn)?;
            ((x1 + m)?, ln2, f)
        } else {
            let (m, f) = self.mlp.forward(&x1)?;
            let (y, ln2) = norm(&self.ln2, &(x1 + m)?, keep)?;
            (y, ln2, f)
        };
        let y = match rows {
            Rows::All => y.reshape((b, t, d))?,
            Rows::One(_) => y,
        };
        let tape = match (ln1, ln2) {
            (Some(ln1), Some(ln2)) => Some(BlockTape { rows, tokens: t, ln1, attn: attn_tape, ln2, f }),
            _ => None,
        };
        Ok((y, tape))
    }

    /// Vector-Jacobian product: given `dy` (shape of the output), returns `dx [B, T, D]`.
    pub fn backward(&self, tape: &BlockTape, dy: &Tensor) -> Result<Tensor> {
        let d = self.attn.dim();
        let t = tape.tokens;
        let (b, _, tq, tk) = tape.attn.p.dims4()?;
        let dy2 = dy.reshape((b * tq, d))?;
        let pre = self.norm == NormPlacement::Pre;
        // d(attention sum s1 = resid + attn)
        let ds1 = if pre {
            (&dy2 + self.ln2.backward(&tape.ln2, &self.mlp.backward(&tape.f, &dy2)?)?)?
        } else {
            let ds2 = self.ln2.backward(&tape.ln2, &dy2)?;
            let dx1 = (&ds2 + self.mlp.backward(&tape.f, &ds2)?)?;
            self.ln1.backward(&tape.ln1, &dx1)?
        };
        // gradient at the attention input `a` ([B·T, D]) and at the residual rows
        let da = match tape.rows {
            Rows::All => self.attn.backward_all(&tape.attn, &ds1)?,
            Rows::One(tok) => {
                let (daq, dakv) = self.attn.backward_split(&tape.attn, &ds1)?;
                let da = add_at_token(&dakv.reshape((b, tk, d))?, tok, &daq.reshape((b, 1, d))?)?;
                let da = if tk < t { pad_tokens(&da, t)? } else { da };
                da.reshape((b * t, d))?
            }
        };
        let dx = if pre { self.ln1.backward(&tape.ln1, &da)? } else { da };
        Ok(match tape.rows {
            Rows::All => (dx + ds1)?.reshape((b, t, d))?,
            Rows::One(tok) => add_at_token(&dx.reshape((b, t, d))?, tok, &ds1.reshape((b, 1, d))?)?,
        })
    }
}

/// SigLIP's attention-pooling head (`MultiheadAttentionPoolingHead`): a learned probe attends
/// to every token, then `h + mlp(ln(h))`. Maps `[B, T, D]` to `[B, D]`.
#[derive(Clone, Debug)]
pub struct AttentionPool {
    /// `[D]`.
    pub probe: Tensor,
    pub attn: Attention,
    pub ln: LayerNorm,
    pub mlp: Mlp,
}

/// Activations kept by [`AttentionPool::forward_tape`].
pub struct AttentionPoolTape {
    attn: AttentionTape,
    ln: LayerNormTape,
    f: Tensor,
}

impl AttentionPool {
    pub fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, AttentionPoolTape)> {
        let (b, t, d) = x.dims3()?;
        let probe = self.probe.reshape((1, d))?.broadcast_as((b, d))?.contiguous()?;
        let (h, attn) = self.attn.forward_split(&probe, &x.reshape((b * t, d))?, b)?;
        let (n, ln) = self.ln.forward_tape(&h)?;
        let (m, f) = self.mlp.forward(&n)?;
        Ok(((h + m)?, AttentionPoolTape { attn, ln, f }))
    }

    /// `dy [B, D]` → `dx [B, T, D]`.
    pub fn backward(&self, tape: &AttentionPoolTape, dy: &Tensor) -> Result<Tensor> {
        let dh = (dy + self.ln.backward(&tape.ln, &self.mlp.backward(&tape.f, dy)?)?)?;
        let (_, dx) = self.attn.backward_split(&tape.attn, &dh)?;
        let (b, _, _, t) = tape.attn.p.dims4()?;
        Ok(dx.reshape((b, t, self.attn.dim()))?)
    }
}

/// `x [B, T, D]` with `v [B, 1, D]` added at token `tok`.
fn add_at_token(x: &Tensor, tok: usize, v: &Tensor) -> Result<Tensor> {
    let t = x.dim(1)?;
    let mid = (x.narrow(1, tok, 1)? + v)?;
    let mut parts = Vec::with_capacity(3);
    if tok > 0 {
        parts.push(x.narrow(1, 0, tok)?);
    }
    parts.push(mid);
    if tok + 1 < t {
        parts.push(x.narrow(1, tok + 1, t - tok - 1)?);
    }
    Ok(Tensor::cat(&parts, 1)?)
}

/// Zero-pads `x [B, T', D]` to `T` tokens.
fn pad_tokens(x: &Tensor, t: usize) -> Result<Tensor> {
    let (b, tp, d) = x.dims3()?;
    let z = Tensor::zeros((b, t - tp, d), x.dtype(), x.device())?;
    Ok(Tensor::cat(&[x, &z], 1)?)
}

/// LayerNorm with a tape when `keep`, else the fused kernel.
fn norm(ln: &LayerNorm, x: &Tensor, keep: bool) -> Result<(Tensor, Option<LayerNormTape>)> {
    if keep {
        let (y, tp) = ln.forward_tape(x)?;
        Ok((y, Some(tp)))
    } else {
        Ok((ln.forward(x)?, None))
    }
}

/// Additive causal mask `[T, T]`: 0 on and below the diagonal, a large negative number above.
pub fn causal_mask(t: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::MIN } else { 0.0 })).collect();
    Ok(Tensor::from_vec(mask, (t, t), device)?)
}
