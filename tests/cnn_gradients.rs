//! Finite-difference checks (float64) of the written-out backward passes of the CNN layers and
//! of the IBA bottleneck (smoothed mask, active-neuron mask) through a small random
//! EfficientNet-Lite with every block kind: no expansion, stride 2 with TF-SAME asymmetric
//! padding, 5x5 and 3x3 depthwise kernels, residual blocks.

use candle_core::{DType, Device, Tensor};
use ibex::bottleneck::{capacity::capacity, loss_and_grad, Mask, Objective, Smoothing};
use ibex::models::cnn::{efficientnet_lite, Network};
use ibex::models::weights::Weights;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

fn rand(dims: &[usize], seed: u64, scale: f64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0) * scale).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// A small EfficientNet-Lite in float64 with random weights; returns it and its strides.
fn tiny_net() -> Network {
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut seed = 0;
    let mut put = |name: &str, dims: &[usize], scale: f64| {
        seed += 1;
        t.insert(name.to_string(), rand(dims, seed, scale));
    };
    let bn = |t: &mut dyn FnMut(&str, &[usize], f64), p: &str, c: usize| {
        t(&format!("{p}.weight"), &[c], 0.5);
        t(&format!("{p}.bias"), &[c], 0.5);
        t(&format!("{p}.running_mean"), &[c], 0.2);
        t(&format!("{p}.running_var"), &[c], 0.1);
    };
    put("_conv_stem.weight", &[8, 3, 3, 3], 0.5);
    bn(&mut put, "_bn0", 8);
    // block 0: no expansion, 3x3, stride 1, 8 -> 8 (residual)
    put("_blocks.0._depthwise_conv.weight", &[8, 1, 3, 3], 0.5);
    bn(&mut put, "_blocks.0._bn1", 8);
    put("_blocks.0._project_conv.weight", &[8, 8, 1, 1], 0.4);
    bn(&mut put, "_blocks.0._bn2", 8);
    // block 1: expand 8 -> 24, 5x5, stride 2, project -> 12
    put("_blocks.1._expand_conv.weight", &[24, 8, 1, 1], 0.4);
    bn(&mut put, "_blocks.1._bn0", 24);
    put("_blocks.1._depthwise_conv.weight", &[24, 1, 5, 5], 0.3);
    bn(&mut put, "_blocks.1._bn1", 24);
    put("_blocks.1._project_conv.weight", &[12, 24, 1, 1], 0.3);
    bn(&mut put, "_blocks.1._bn2", 12);
    // block 2: expand 12 -> 36, 3x3, stride 1, project -> 12 (residual)
    put("_blocks.2._expand_conv.weight", &[36, 12, 1, 1], 0.3);
    bn(&mut put, "_blocks.2._bn0", 36);
    put("_blocks.2._depthwise_conv.weight", &[36, 1, 3, 3], 0.4);
    bn(&mut put, "_blocks.2._bn1", 36);
    put("_blocks.2._project_conv.weight", &[12, 36, 1, 1], 0.3);
    bn(&mut put, "_blocks.2._bn2", 12);
    put("_conv_head.weight", &[16, 12, 1, 1], 0.4);
    bn(&mut put, "_bn1", 16);
    put("_fc.weight", &[5, 16], 0.5);
    put("_fc.bias", &[5], 0.1);
    // running_var must be positive
    for (k, v) in t.iter_mut() {
        if k.ends_with("running_var") {
            *v = (v.abs().unwrap() + 0.5).unwrap();
        }
    }
    efficientnet_lite::build(&Weights::from_tensors(t), &[1, 2, 1]).unwrap()
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    (a * b).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn suffix_backward_matches_finite_differences_from_every_tap() {
    let net = tiny_net();
    // odd sizes: TF-SAME pads asymmetrically; 41x37 gives 21x19 maps after the stem, so the
    // depthwise convolutions run both their per-plane (wide) and channels-last (narrow) paths
    let x = rand(&[2, 3, 41, 37], 100, 1.0);
    let x_even = rand(&[1, 3, 40, 36], 99, 1.0);
    let w = rand(&[2, 5], 101, 1.0);
    for (tap, x) in [
        ("input", &x),
        ("input", &x_even),
        ("stem", &x),
        ("blocks.0", &x),
        ("blocks.1", &x),
        ("blocks.2", &x),
        ("head", &x),
        ("pooled", &x),
    ] {
        let w = w.narrow(0, 0, x.dim(0).unwrap()).unwrap();
        let h = net.forward_until(tap, x).unwrap();
        let (logits, tape) = net.suffix_forward(tap, &h).unwrap();
        let plain = net.forward_from(tap, &h).unwrap();
        assert!(
            (logits.clone() - &plain).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() < 1e-12
        );
        let g = net.suffix_backward(&tape, &w).unwrap();
        assert_eq!(g.dims(), h.dims(), "{tap}");
        let hv = h.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let gv = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let f = |v: &[f64]| {
            dot(&net.forward_from(tap, &Tensor::from_vec(v.to_vec(), h.dims(), &Device::Cpu).unwrap()).unwrap(), &w)
        };
        let eps = 1e-6;
        let step = (hv.len() / 40).max(1);
        let mut worst = 0f64;
        for i in (0..hv.len()).step_by(step) {
            let mut p = hv.clone();
            p[i] += eps;
            let mut m = hv.clone();
            m[i] -= eps;
            let fd = (f(&p) - f(&m)) / (2.0 * eps);
            let err = (fd - gv[i]).abs() / (1e-6 + fd.abs().max(gv[i].abs()));
            worst = worst.max(if (fd - gv[i]).abs() < 1e-8 { 0.0 } else { err });
        }
        assert!(worst < 1e-5, "{tap}: worst relative error {worst}");
    }
}

struct Suffix<'a> {
    net: &'a Network,
    w: Tensor,
}

impl Objective for Suffix<'_> {
    fn evaluate(&self, z: &Tensor, grad: bool) -> ibex::Result<(Vec<f32>, Option<Tensor>)> {
        let n = z.dim(0)?;
        let w = self.w.broadcast_as((n, 5))?;
        let (logits, tape) = self.net.suffix_forward("blocks.0", z)?;
        let fits = (&logits * &w)?.sum(1)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let dz = if grad { Some(self.net.suffix_backward(&tape, &w.contiguous()?)?) } else { None };
        Ok((fits, dz))
    }
}

#[test]
fn iba_bottleneck_gradient_with_smoothing_and_active_mask_matches_finite_differences() {
    let net = tiny_net();
    let x = rand(&[1, 3, 15, 13], 7, 1.0);
    let h = net.forward_until("blocks.0", &x).unwrap().squeeze(0).unwrap(); // [8, 8, 7]
    let dims = h.dims().to_vec();
    let (c, hh, ww) = (dims[0], dims[1], dims[2]);
    let alpha = (rand(&dims, 8, 2.0) + 1.0).unwrap();
    let eps = rand(&[3, c, hh, ww], 9, 1.5);
    let mut act = vec![1f64; c * hh * ww];
    for i in (0..act.len()).step_by(7) {
        act[i] = 0.0;
    }
    let active = Tensor::from_vec(act, dims.as_slice(), &Device::Cpu).unwrap();
    let smoothing = Smoothing::new(1.0, hh, ww, DType::F64, &Device::Cpu).unwrap();
    let mask = Mask { smoothing: Some(&smoothing), active: Some(&active) };
    let obj = Suffix { net: &net, w: rand(&[1, 5], 10, 1.0) };
    let beta = 0.7;
    let (_, g) = loss_and_grad(&h, &alpha, &eps, beta, &mask, &obj).unwrap();
    let gv = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let av = alpha.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    // the loss from its definition: β·mean(C·active) − mean_i fit(λh + (1−λ)ε_i), λ = S(σ(α))
    let loss = |a: &[f64]| -> f64 {
        let alpha = Tensor::from_vec(a.to_vec(), dims.as_slice(), &Device::Cpu).unwrap();
        let lam = smoothing.apply(&candle_nn::ops::sigmoid(&alpha).unwrap()).unwrap();
        let cap = (capacity(&h, &lam).unwrap() * &active).unwrap().mean_all().unwrap().to_scalar::<f64>().unwrap();
        let z = h
            .unsqueeze(0)
            .unwrap()
            .broadcast_mul(&lam)
            .unwrap()
            .broadcast_add(&eps.broadcast_mul(&lam.affine(-1.0, 1.0).unwrap()).unwrap())
            .unwrap();
        let logits = net.forward_from("blocks.0", &z).unwrap();
        let fit = logits.broadcast_mul(&obj.w).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap() / 3.0;
        beta * cap - fit
    };
    let e = 1e-6;
    let mut worst = 0f64;
    for i in (0..av.len()).step_by(9) {
        let mut p = av.clone();
        p[i] += e;
        let mut m = av.clone();
        m[i] -= e;
        let fd = (loss(&p) - loss(&m)) / (2.0 * e);
        let err = (fd - gv[i]).abs() / (1e-7 + fd.abs().max(gv[i].abs()));
        worst = worst.max(if (fd - gv[i]).abs() < 1e-9 { 0.0 } else { err });
    }
    assert!(worst < 1e-5, "worst relative error {worst}");
}

#[test]
fn kl_is_zero_when_everything_passes_and_at_lambda_zero() {
    // λ = 1 would need ln 0; the capacity's limit at λ → 0 is exactly 0 (z is the prior), and
    // it grows with λ for fixed h.
    let h = rand(&[4, 3, 3], 3, 2.0);
    let zero = capacity(&h, &h.zeros_like().unwrap()).unwrap().abs().unwrap().max_all().unwrap();
    assert!(zero.to_scalar::<f64>().unwrap() < 1e-12);
    let c1 =
        capacity(&h, &(h.ones_like().unwrap() * 0.3).unwrap()).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
    let c2 =
        capacity(&h, &(h.ones_like().unwrap() * 0.9).unwrap()).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
    assert!(0.0 < c1 && c1 < c2, "{c1} {c2}");
}
