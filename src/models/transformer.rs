//! A pre-LayerNorm transformer encoder block (CLIP / ViT) with a hand-written backward pass.
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
    fn rows(&self, start: usize, len: usize) -> Result<Linear> {
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

/// One encoder block: `x + attn(ln1(x))`, then `+ mlp(ln2(.))`.
#[derive(Clone, Debug)]
pub struct Block {
    pub ln1: LayerNorm,
    /// q, k, v stacked: weight `[3D, D]`.
    pub qkv: Linear,
    pub out_proj: Linear,
    pub ln2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub heads: usize,
    pub activation: Activation,
}

/// Activations kept by [`Block::forward_tape`].
pub struct BlockTape {
    rows: Rows,
    tokens: usize,
    ln1: LayerNormTape,
    q: Tensor, // scaled, [B, H, Tq, d]
    k: Tensor, // [B, H, Tk, d]
    v: Tensor,
    p: Tensor, // [B, H, Tq, Tk]
    ln2: LayerNormTape,
    f: Tensor, // MLP pre-activation
}

impl Block {
    pub fn load(w: &Weights, prefix: &str, c: &TowerConfig) -> Result<Self> {
        let d = c.hidden_size;
        let q = Linear::load(w, &format!("{prefix}.self_attn.q_proj"), d, d, true)?;
        let k = Linear::load(w, &format!("{prefix}.self_attn.k_proj"), d, d, true)?;
        let v = Linear::load(w, &format!("{prefix}.self_attn.v_proj"), d, d, true)?;
        let qkv = Linear {
            weight: Tensor::cat(&[&q.weight, &k.weight, &v.weight], 0)?,
            bias: Some(Tensor::cat(
                &[q.bias.as_ref().unwrap(), k.bias.as_ref().unwrap(), v.bias.as_ref().unwrap()],
                0,
            )?),
        };
        Ok(Block {
            ln1: LayerNorm::load(w, &format!("{prefix}.layer_norm1"), d, c.layer_norm_eps)?,
            qkv,
            out_proj: Linear::load(w, &format!("{prefix}.self_attn.out_proj"), d, d, true)?,
            ln2: LayerNorm::load(w, &format!("{prefix}.layer_norm2"), d, c.layer_norm_eps)?,
            fc1: Linear::load(w, &format!("{prefix}.mlp.fc1"), d, c.intermediate_size, true)?,
            fc2: Linear::load(w, &format!("{prefix}.mlp.fc2"), c.intermediate_size, d, true)?,
            heads: c.num_attention_heads,
            activation: c.activation,
        })
    }

    fn dim(&self) -> usize {
        self.out_proj.weight.dim(0).unwrap_or(0)
    }

    /// Plain forward: `x [B, T, D]` → `[B, T, D]`.
    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        Ok(self.forward_impl(x, causal, Rows::All, false)?.0)
    }

    /// Forward that records a tape for [`Block::backward`]. With [`Rows::One`], the output is
    /// `[B, D]` (only that token).
    pub fn forward_tape(&self, x: &Tensor, causal: bool, rows: Rows) -> Result<(Tensor, BlockTape)> {
        let (y, tape) = self.forward_impl(x, causal, rows, true)?;
        Ok((y, tape.expect("keep = true records both LayerNorm tapes")))
    }

    fn forward_impl(&self, x: &Tensor, causal: bool, rows: Rows, keep: bool) -> Result<(Tensor, Option<BlockTape>)> {
        let (b, t, d) = x.dims3()?;
        let h = self.heads;
        let hd = d / h;
        let scale = 1.0 / (hd as f64).sqrt();
        let x2 = x.reshape((b * t, d))?;
        let (a, ln1_tape) = if keep {
            let (a, tp) = self.ln1.forward_tape(&x2)?;
            (a, Some(tp))
        } else {
            (self.ln1.forward(&x2)?, None)
        };
        // Queries for the requested rows, keys/values for the tokens they may attend to.
        let (q, k, v) = match rows {
            Rows::All => {
                let qkv = self.qkv.forward(&a)?.reshape((b, t, 3, h, hd))?.permute((2, 0, 3, 1, 4))?;
                let q = (qkv.get(0)?.contiguous()? * scale)?;
                (q, qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?)
            }
            Rows::One(tok) => {
                let tk = if causal { tok + 1 } else { t };
                let a3 = a.reshape((b, t, d))?;
                let akv = a3.narrow(1, 0, tk)?.reshape((b * tk, d))?;
                let kv =
                    self.qkv.rows(d, 2 * d)?.forward(&akv)?.reshape((b, tk, 2, h, hd))?.permute((2, 0, 3, 1, 4))?;
                let aq = a3.narrow(1, tok, 1)?.reshape((b, d))?;
                let q = self.qkv.rows(0, d)?.forward(&aq)?.reshape((b, h, 1, hd))?;
                ((q * scale)?, kv.get(0)?.contiguous()?, kv.get(1)?.contiguous()?)
            }
        };
        let tq = q.dim(2)?;
        let mut s = q.matmul(&k.t()?)?;
        if causal && rows == Rows::All {
            s = s.broadcast_add(&causal_mask(t, x.device())?.to_dtype(s.dtype())?)?;
        }
        let p = candle_nn::ops::softmax_last_dim(&s)?;
        let o = p.matmul(&v)?.transpose(1, 2)?.reshape((b * tq, d))?;
        let attn = self.out_proj.forward(&o)?;
        let resid = match rows {
            Rows::All => x2,
            Rows::One(tok) => x.narrow(1, tok, 1)?.reshape((b, d))?,
        };
        let x1 = (resid + attn)?;
        let (bn, ln2_tape) = if keep {
            let (y, tp) = self.ln2.forward_tape(&x1)?;
            (y, Some(tp))
        } else {
            (self.ln2.forward(&x1)?, None)
        };
        let f = self.fc1.forward(&bn)?;
        let g = act_forward(self.activation, &f)?;
        let y = (x1 + self.fc2.forward(&g)?)?;
        let y = match rows {
            Rows::All => y.reshape((b, t, d))?,
            Rows::One(_) => y,
        };
        let tape = match (ln1_tape, ln2_tape) {
            (Some(ln1), Some(ln2)) => Some(BlockTape { rows, tokens: t, ln1, q, k, v, p, ln2, f }),
            _ => None,
        };
        Ok((y, tape))
    }

    /// Vector-Jacobian product: given `dy` (shape of the output), returns `dx [B, T, D]`.
    pub fn backward(&self, tape: &BlockTape, dy: &Tensor) -> Result<Tensor> {
        let d = self.dim();
        let h = self.heads;
        let hd = d / h;
        let t = tape.tokens;
        let (b, tq, tk) = (tape.p.dim(0)?, tape.p.dim(2)?, tape.p.dim(3)?);
        let scale = 1.0 / (hd as f64).sqrt();
        let dy2 = dy.reshape((b * tq, d))?;
        // MLP branch
        let dg = self.fc2.backward_input(&dy2)?;
        let df = (dg * act_derivative(self.activation, &tape.f)?)?;
        let dbn = self.fc1.backward_input(&df)?;
        let dx1 = (dy2 + self.ln2.backward(&tape.ln2, &dbn)?)?;
        // attention branch
        let dout = self.out_proj.backward_input(&dx1)?; // [B*Tq, D]
        let dout = dout.reshape((b, tq, h, hd))?.transpose(1, 2)?.contiguous()?; // [B,H,Tq,d]
        let dp = dout.matmul(&tape.v.t()?)?;
        let dv = tape.p.t()?.matmul(&dout)?;
        let ds = (&tape.p * dp.broadcast_sub(&(&dp * &tape.p)?.sum_keepdim(D::Minus1)?)?)?;
        let dq = (ds.matmul(&tape.k)? * scale)?; // d wrt unscaled q
        let dk = ds.t()?.matmul(&tape.q)?;
        let da = match tape.rows {
            Rows::All => {
                let dqkv = Tensor::stack(&[dq, dk, dv], 0)?.permute((1, 3, 0, 2, 4))?.reshape((b * t, 3 * d))?;
                self.qkv.backward_input(&dqkv)?
            }
            Rows::One(tok) => {
                let dkv = Tensor::stack(&[dk, dv], 0)?.permute((1, 3, 0, 2, 4))?.reshape((b * tk, 2 * d))?;
                let da_kv = self.qkv.rows(d, 2 * d)?.backward_input(&dkv)?.reshape((b, tk, d))?;
                let da_q = self.qkv.rows(0, d)?.backward_input(&dq.reshape((b, d))?)?.reshape((b, 1, d))?;
                let da = add_at_token(&da_kv, tok, &da_q)?;
                let da = if tk < t { pad_tokens(&da, t)? } else { da };
                da.reshape((b * t, d))?
            }
        };
        let dx = self.ln1.backward(&tape.ln1, &da)?;
        Ok(match tape.rows {
            Rows::All => (dx + dx1)?.reshape((b, t, d))?,
            Rows::One(tok) => add_at_token(&dx.reshape((b, t, d))?, tok, &dx1.reshape((b, 1, d))?)?,
        })
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

/// Additive causal mask `[T, T]`: 0 on and below the diagonal, a large negative number above.
pub fn causal_mask(t: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::MIN } else { 0.0 })).collect();
    Ok(Tensor::from_vec(mask, (t, t), device)?)
}
