//! A small trainable network applied to every row of a `[P, C]` matrix: dense layers with ReLU
//! between them (PyTorch's stack of 1×1 convolutions over a feature map's `P = H·W` positions,
//! or of linear layers over `P` vectors). It is what ibex itself trains: the IBA readout (the
//! amortised bottleneck's "infer network") and Dual-IB's two critic heads. The backward pass is
//! written out and returns the weight gradients beside `∂loss/∂input`; [`MlpAdam`] updates it.

use crate::bottleneck::adam::Adam;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use std::collections::HashMap;

/// `y = x·Wᵀ + b` with `W [out, in]`, `b [out]`.
#[derive(Clone, Debug)]
pub struct Dense {
    pub weight: Tensor,
    pub bias: Tensor,
}

/// Dense layers with ReLU between consecutive layers (none after the last).
#[derive(Clone, Debug)]
pub struct Mlp {
    pub layers: Vec<Dense>,
}

/// What [`Mlp::backward`] needs: the input of every layer (and the shared row of a split input).
pub struct MlpTape {
    inputs: Vec<Tensor>,
    shared: Option<Tensor>,
}

/// Gradients of one [`Mlp`], layer by layer: `(∂W, ∂b)`.
pub struct MlpGrads(pub Vec<(Tensor, Tensor)>);

impl Mlp {
    /// Layers of widths `widths[0] → widths[1] → …`, initialised like PyTorch's `Conv2d`/`Linear`
    /// (uniform in ±1/√fan_in for weights and biases), reproducibly from `rng`.
    pub fn new(widths: &[usize], rng: &mut impl Rng, device: &Device) -> Result<Self> {
        if widths.len() < 2 || widths.contains(&0) {
            return Err(Error::invalid(format!("an MLP needs at least two non-zero widths, got {widths:?}")));
        }
        let mut layers = Vec::with_capacity(widths.len() - 1);
        for w in widths.windows(2) {
            let (cin, cout) = (w[0], w[1]);
            let bound = 1.0 / (cin as f32).sqrt();
            let mut u = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
            let weight = Tensor::from_vec(u(cout * cin), (cout, cin), device)?;
            let bias = Tensor::from_vec(u(cout), cout, device)?;
            layers.push(Dense { weight, bias });
        }
        Ok(Mlp { layers })
    }

    /// Input width.
    pub fn inputs(&self) -> usize {
        self.layers[0].weight.dims()[1]
    }

    /// Output width.
    pub fn outputs(&self) -> usize {
        self.layers.last().expect("at least one layer").weight.dims()[0]
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        let (_, c) = x.dims2()?;
        if c != self.inputs() {
            return Err(Error::invalid(format!("an MLP for {} inputs was given {c}", self.inputs())));
        }
        Ok(())
    }

    /// `[P, in] → [P, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_tape(x)?.0)
    }

    /// The forward pass and what the backward pass needs.
    pub fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, MlpTape)> {
        self.check(x)?;
        self.run(x.matmul(&self.layers[0].weight.t()?)?, vec![x.clone()], None)
    }

    /// The forward pass on rows `[x_p, s]` whose last columns `s [1, F_s]` are the same for
    /// every row (a vector broadcast over a feature map): the first layer computes `s`'s part
    /// once instead of once per row.
    pub fn forward_tape_split(&self, x: &Tensor, shared: &Tensor) -> Result<(Tensor, MlpTape)> {
        let (_, fx) = x.dims2()?;
        let (one, fs) = shared.dims2()?;
        if one != 1 || fx + fs != self.inputs() {
            return Err(Error::invalid(format!(
                "an MLP for {} inputs was given {fx} + {fs} (shared row of {one})",
                self.inputs()
            )));
        }
        let w = &self.layers[0].weight;
        let h = x.matmul(&w.narrow(1, 0, fx)?.t()?)?.broadcast_add(&shared.matmul(&w.narrow(1, fx, fs)?.t()?)?)?;
        self.run(h, vec![x.clone()], Some(shared.clone()))
    }

    /// Layers from the first layer's product `h` (bias not yet added) on.
    fn run(&self, h: Tensor, mut inputs: Vec<Tensor>, shared: Option<Tensor>) -> Result<(Tensor, MlpTape)> {
        let mut h = h.broadcast_add(&self.layers[0].bias)?;
        for l in self.layers.iter().skip(1) {
            h = h.relu()?;
            inputs.push(h.clone());
            h = h.matmul(&l.weight.t()?)?.broadcast_add(&l.bias)?;
        }
        Ok((h, MlpTape { inputs, shared }))
    }

    /// `∂loss/∂x` (for a split input: the per-row part) and the weight gradients from `∂loss/∂y`.
    pub fn backward(&self, tape: &MlpTape, dy: &Tensor) -> Result<(Tensor, MlpGrads)> {
        let mut g = dy.clone();
        let mut grads = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate().rev() {
            let x = &tape.inputs[i];
            let gw = match (&tape.shared, i) {
                // the shared row met every row's gradient: its weight gradient is Σ_rows g · s
                (Some(s), 0) => Tensor::cat(&[g.t()?.matmul(x)?, g.sum_keepdim(0)?.t()?.matmul(s)?], 1)?,
                _ => g.t()?.matmul(x)?,
            };
            grads.push((gw, g.sum(0)?));
            let w = match (&tape.shared, i) {
                (Some(_), 0) => l.weight.narrow(1, 0, x.dim(1)?)?,
                _ => l.weight.clone(),
            };
            g = g.matmul(&w)?;
            if i > 0 {
                // x is the ReLU output of the layer before: it passes gradient where it is > 0
                g = (g * x.gt(0f32)?.to_dtype(x.dtype())?)?;
            }
        }
        grads.reverse();
        Ok((g, MlpGrads(grads)))
    }

    /// Adds the tensors to `map` as `{prefix}.{i}.weight` / `{prefix}.{i}.bias`.
    pub fn save_into(&self, prefix: &str, map: &mut HashMap<String, Tensor>) {
        for (i, l) in self.layers.iter().enumerate() {
            map.insert(format!("{prefix}.{i}.weight"), l.weight.clone());
            map.insert(format!("{prefix}.{i}.bias"), l.bias.clone());
        }
    }

    /// Reads the layers [`Mlp::save_into`] wrote (shapes checked: each layer's input is the
    /// previous one's output).
    pub fn load_from(prefix: &str, map: &HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        let mut layers = Vec::new();
        while let Some(w) = map.get(&format!("{prefix}.{}.weight", layers.len())) {
            let i = layers.len();
            let b = map
                .get(&format!("{prefix}.{i}.bias"))
                .ok_or_else(|| Error::invalid(format!("'{prefix}.{i}.weight' has no bias")))?;
            let (cout, cin) = w.dims2().map_err(|_| Error::invalid(format!("'{prefix}.{i}.weight' is not 2-D")))?;
            if b.dims() != [cout] {
                return Err(Error::invalid(format!("'{prefix}.{i}.bias' is {:?}, expected [{cout}]", b.dims())));
            }
            if let Some(prev) = layers.last().map(|l: &Dense| l.weight.dims()[0]) {
                if prev != cin {
                    return Err(Error::invalid(format!(
                        "'{prefix}.{i}.weight' takes {cin} inputs, the layer before gives {prev}"
                    )));
                }
            }
            let f = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.to_device(device)?) };
            layers.push(Dense { weight: f(w)?, bias: f(b)? });
        }
        if layers.is_empty() {
            return Err(Error::invalid(format!("no '{prefix}.0.weight' tensor")));
        }
        Ok(Mlp { layers })
    }
}

/// Adam for every tensor of one [`Mlp`].
pub struct MlpAdam(Vec<(Adam, Adam)>);

impl MlpAdam {
    pub fn new(mlp: &Mlp, lr: f64) -> Result<Self> {
        Ok(MlpAdam(
            mlp.layers
                .iter()
                .map(|l| Ok((Adam::new(&l.weight, lr)?, Adam::new(&l.bias, lr)?)))
                .collect::<Result<_>>()?,
        ))
    }

    /// One update of `mlp` with `grads`.
    pub fn step(&mut self, mlp: &mut Mlp, grads: &MlpGrads) -> Result<()> {
        for ((l, (gw, gb)), (aw, ab)) in mlp.layers.iter_mut().zip(&grads.0).zip(&mut self.0) {
            l.weight = aw.step(&l.weight, gw)?;
            l.bias = ab.step(&l.bias, gb)?;
        }
        Ok(())
    }

    /// Adds the optimiser state to `map` under `{prefix}` (for resuming).
    pub fn save_into(&self, prefix: &str, map: &mut HashMap<String, Tensor>) -> Result<()> {
        for (i, (aw, ab)) in self.0.iter().enumerate() {
            aw.save_into(&format!("{prefix}.{i}.weight"), map)?;
            ab.save_into(&format!("{prefix}.{i}.bias"), map)?;
        }
        Ok(())
    }

    /// Restores the state [`MlpAdam::save_into`] wrote, for `mlp`.
    pub fn load_from(prefix: &str, map: &HashMap<String, Tensor>, mlp: &Mlp, lr: f64) -> Result<Self> {
        let mut out = MlpAdam::new(mlp, lr)?;
        for (i, (aw, ab)) in out.0.iter_mut().enumerate() {
            aw.load_from(&format!("{prefix}.{i}.weight"), map, &mlp.layers[i].weight)?;
            ab.load_from(&format!("{prefix}.{i}.bias"), map, &mlp.layers[i].bias)?;
        }
        Ok(out)
    }
}

impl MlpGrads {
    /// `self + other`, layer by layer.
    pub fn plus(self, other: &MlpGrads) -> Result<MlpGrads> {
        Ok(MlpGrads(
            self.0
                .into_iter()
                .zip(&other.0)
                .map(|((w, b), (ow, ob))| Ok(((w + ow)?, (b + ob)?)))
                .collect::<Result<_>>()?,
        ))
    }

    /// Every gradient times `s`.
    pub fn scale(self, s: f64) -> Result<MlpGrads> {
        Ok(MlpGrads(self.0.into_iter().map(|(w, b)| Ok(((w * s)?, (b * s)?))).collect::<Result<_>>()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The written-out backward against central differences of `Σ y·r` (f64).
    #[test]
    fn backward_matches_finite_differences() {
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut mlp = Mlp::new(&[5, 7, 3], &mut rng, &dev).unwrap();
        for l in &mut mlp.layers {
            l.weight = l.weight.to_dtype(DType::F64).unwrap();
            l.bias = l.bias.to_dtype(DType::F64).unwrap();
        }
        let x = Tensor::randn(0f64, 1.0, (4, 5), &dev).unwrap();
        let r = Tensor::randn(0f64, 1.0, (4, 3), &dev).unwrap();
        let f =
            |m: &Mlp, x: &Tensor| (m.forward(x).unwrap() * &r).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        let (_, tape) = mlp.forward_tape(&x).unwrap();
        let (dx, grads) = mlp.backward(&tape, &r).unwrap();
        let e = 1e-6;
        let xv = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let dxv = dx.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for i in 0..xv.len() {
            let mut p = xv.clone();
            p[i] += e;
            let mut m = xv.clone();
            m[i] -= e;
            let t = |v: Vec<f64>| Tensor::from_vec(v, (4, 5), &dev).unwrap();
            let fd = (f(&mlp, &t(p)) - f(&mlp, &t(m))) / (2.0 * e);
            assert!((fd - dxv[i]).abs() < 1e-6, "dx[{i}]: fd {fd} vs {}", dxv[i]);
        }
        for (li, (gw, gb)) in grads.0.iter().enumerate() {
            for (which, g) in [(0, gw), (1, gb)] {
                let gv = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                for k in 0..gv.len() {
                    let bump = |d: f64| {
                        let mut m2 = mlp.clone();
                        let t = if which == 0 { &mut m2.layers[li].weight } else { &mut m2.layers[li].bias };
                        let mut v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                        v[k] += d;
                        *t = Tensor::from_vec(v, t.dims(), &dev).unwrap();
                        f(&m2, &x)
                    };
                    let fd = (bump(e) - bump(-e)) / (2.0 * e);
                    assert!((fd - gv[k]).abs() < 1e-6, "layer {li} param {which}[{k}]: fd {fd} vs {}", gv[k]);
                }
            }
        }
    }

    /// A split input gives the output and gradients of the full rows `[x_p, s]`.
    #[test]
    fn split_input_equals_the_broadcast_rows() {
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let mlp = Mlp::new(&[5, 4, 2], &mut rng, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (6, 3), &dev).unwrap();
        let s = Tensor::randn(0f32, 1.0, (1, 2), &dev).unwrap();
        let full = Tensor::cat(&[x.clone(), s.broadcast_as((6, 2)).unwrap().contiguous().unwrap()], 1).unwrap();
        let dy = Tensor::randn(0f32, 1.0, (6, 2), &dev).unwrap();
        let (ya, ta) = mlp.forward_tape(&full).unwrap();
        let (yb, tb) = mlp.forward_tape_split(&x, &s).unwrap();
        let close = |a: &Tensor, b: &Tensor| {
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-5, "differ by {d}");
        };
        close(&ya, &yb);
        let (dxa, ga) = mlp.backward(&ta, &dy).unwrap();
        let (dxb, gb) = mlp.backward(&tb, &dy).unwrap();
        close(&dxa.narrow(1, 0, 3).unwrap(), &dxb);
        for ((wa, ba), (wb, bb)) in ga.0.iter().zip(&gb.0) {
            close(wa, wb);
            close(ba, bb);
        }
    }

    #[test]
    fn save_load_round_trip_and_shape_errors() {
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mlp = Mlp::new(&[4, 6, 2], &mut rng, &dev).unwrap();
        let mut map = HashMap::new();
        mlp.save_into("phi", &mut map);
        let back = Mlp::load_from("phi", &map, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 4), &dev).unwrap();
        let d = (mlp.forward(&x).unwrap() - back.forward(&x).unwrap()).unwrap().abs().unwrap();
        assert_eq!(d.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        map.insert("phi.1.weight".into(), Tensor::zeros((2, 5), DType::F32, &dev).unwrap());
        assert!(Mlp::load_from("phi", &map, &dev).unwrap_err().to_string().contains("phi.1.weight"));
        assert!(Mlp::load_from("other", &map, &dev).is_err());
        assert!(mlp.forward(&Tensor::zeros((3, 5), DType::F32, &dev).unwrap()).is_err());
    }
}
