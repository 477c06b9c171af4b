//! Finite-difference checks (float64, tiny random CLIP) of the hand-written backward pass, so a
//! silently cut or wrong gradient cannot come back.

use candle_core::{DType, Device, Tensor, D};
use ibex::bottleneck::{loss_and_grad, Mask, Objective};
use ibex::models::clip::{random::random_weights, ClipConfig, ClipModel, Tower};
use ibex::Result;

fn tiny(act: &str, layers: usize) -> ClipModel {
    let json = format!(
        r#"{{"model_type":"clip","projection_dim":8,
        "text_config":{{"hidden_size":16,"intermediate_size":24,"num_hidden_layers":{layers},"num_attention_heads":2,"vocab_size":60,"max_position_embeddings":12,"hidden_act":"{act}"}},
        "vision_config":{{"hidden_size":16,"intermediate_size":24,"num_hidden_layers":{layers},"num_attention_heads":4,"image_size":12,"patch_size":4,"hidden_act":"{act}"}}}}"#
    );
    let cfg = ClipConfig::from_json(&json).unwrap();
    let w = random_weights(&cfg, 0.3, 11, DType::F64, &Device::Cpu).unwrap();
    ClipModel::from_weights(cfg, &w, &Device::Cpu).unwrap()
}

/// fit = Σ_i ⟨w_i, e_i⟩ with fixed random w: a generic linear read-out of the embedding.
struct Probe<'a> {
    tower: &'a Tower,
    layer: usize,
    pool: usize,
    w: Tensor,
}

impl Objective for Probe<'_> {
    fn evaluate(&self, z: &Tensor, grad: bool) -> Result<(Vec<f32>, Option<Tensor>)> {
        let (e, tape) = self.tower.suffix_forward(self.layer, z, self.pool)?;
        let w = self.w.broadcast_as(e.shape())?.contiguous()?;
        let fits = (&e * &w)?.sum(D::Minus1)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let dz = if grad { Some(self.tower.suffix_backward(self.layer, &tape, &w)?) } else { None };
        Ok((fits, dz))
    }
}

fn rand(shape: &[usize], seed: u64) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn fit_sum(p: &Probe, z: &Tensor) -> f64 {
    let (e, _) = p.tower.suffix_forward(p.layer, z, p.pool).unwrap();
    e.broadcast_mul(&p.w).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
}

/// Checks ∂(Σ fit)/∂z against central differences on a sample of coordinates.
fn check_suffix(model: &ClipModel, tower: &Tower, layer: usize, tokens: usize, pool: usize) {
    let width = tower.layers[0].ln1.weight.dim(0).unwrap();
    let n = 2;
    let z = rand(&[n, tokens, width], 1);
    let p = Probe { tower, layer, pool, w: rand(&[n, model.config.projection_dim], 2) };
    let (_, g) = p.evaluate(&z, true).unwrap();
    let g = g.unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let zf = z.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let h = 1e-5;
    let mut max_err = 0f64;
    let mut nonzero = 0;
    for i in (0..zf.len()).step_by(3) {
        let mut plus = zf.clone();
        plus[i] += h;
        let mut minus = zf.clone();
        minus[i] -= h;
        let fp = fit_sum(&p, &Tensor::from_vec(plus, z.shape(), &Device::Cpu).unwrap());
        let fm = fit_sum(&p, &Tensor::from_vec(minus, z.shape(), &Device::Cpu).unwrap());
        let fd = (fp - fm) / (2.0 * h);
        let err = (fd - g[i]).abs() / (1.0 + fd.abs());
        max_err = max_err.max(err);
        if fd.abs() > 1e-6 {
            nonzero += 1;
        }
        assert!(
            err < 1e-6,
            "{:?} layer {layer} coordinate {i}: finite difference {fd}, backward {}",
            tower.modality,
            g[i]
        );
    }
    // with no block after the tap only the pooled token reaches the embedding
    let want = if layer + 1 < tower.depth() { 20 } else { 2 };
    assert!(nonzero >= want, "{:?} layer {layer}: only {nonzero} non-zero gradient coordinates", tower.modality);
}

#[test]
fn suffix_backward_matches_finite_differences() {
    for act in ["quick_gelu", "gelu", "gelu_new"] {
        let m = tiny(act, 3);
        let tv = m.config.vision.num_tokens();
        for layer in 0..3 {
            check_suffix(&m, &m.vision, layer, tv, 0);
            // text: causal mask, pooled token in the middle of the sequence
            check_suffix(&m, &m.text, layer, 7, 4);
            check_suffix(&m, &m.text, layer, 7, 6);
        }
    }
}

#[test]
fn bottleneck_gradient_matches_finite_differences() {
    let m = tiny("quick_gelu", 3);
    let t = m.config.vision.num_tokens();
    let h = rand(&[t, 16], 3);
    let alpha = (rand(&[t, 16], 4) + 1.0).unwrap();
    let eps = rand(&[3, t, 16], 5);
    let p = Probe { tower: &m.vision, layer: 0, pool: 0, w: rand(&[1, 8], 6) };
    let beta = 0.3;
    let (_, g) = loss_and_grad(&h, &alpha, &eps, beta, &Mask::default(), &p).unwrap();
    let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let a = alpha.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    // the loss in f64, recomputed independently from the definition
    let loss = |a: &[f64]| -> f64 {
        let alpha = Tensor::from_vec(a.to_vec(), (t, 16), &Device::Cpu).unwrap();
        let lam = candle_nn::ops::sigmoid(&alpha).unwrap();
        let c = ibex::bottleneck::capacity::capacity(&h, &lam).unwrap().mean_all().unwrap().to_scalar::<f64>().unwrap();
        let z = h
            .unsqueeze(0)
            .unwrap()
            .broadcast_mul(&lam)
            .unwrap()
            .broadcast_add(&eps.broadcast_mul(&lam.affine(-1.0, 1.0).unwrap()).unwrap())
            .unwrap();
        beta * c - fit_sum(&p, &z) / 3.0
    };
    let hstep = 1e-5;
    for i in (0..a.len()).step_by(5) {
        let mut ap = a.clone();
        ap[i] += hstep;
        let mut am = a.clone();
        am[i] -= hstep;
        let fd = (loss(&ap) - loss(&am)) / (2.0 * hstep);
        assert!((fd - g[i]).abs() < 1e-7 * (1.0 + fd.abs()), "alpha {i}: finite difference {fd}, analytic {}", g[i]);
    }
}
