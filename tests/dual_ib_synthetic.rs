//! Dual-IB on a task with planted ground truth. Every 32×32 image has a **label patch**
//! (top-left, horizontal stripes = class 0, vertical = class 1) that decides the class and a
//! **style patch** (bottom-right, a random ±1 colour pattern drawn per image, independent of
//! the label) on a faint noise background. A small CNN is trained here (candle autograd) to
//! 100 % accuracy, then Dual-IB is fitted on its feature map at stride 4 (an 8×8 grid: the label
//! patch reaches cells 1–3, the style patch cells 5–7 in both directions: the cells whose 7×7
//! receptive field overlaps the patch).
//!
//! What must come out: the sufficient map (what the decision needs) sits on the label patch;
//! the general map (what the local features tell about the global embedding) also covers the
//! style patch, which identifies an image among many while the label patch tells only its
//! class; so the redundancy (general − sufficient) peaks on the style patch.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use ibex::control::RunControl;
use ibex::explain::dual_ib::{Critic, DualIb, DualIbConfig, DualIbExplainConfig, DualIbTrainer};
use ibex::explain::fit::{self, FitSettings, Views};
use ibex::models::cnn::layers::{Activation, Conv2d, GlobalAvgPool, Linear, Padding, Sequence};
use ibex::models::cnn::Network;
use rand::{Rng, SeedableRng};

const S: usize = 32;

/// `n` images `[3, 32, 32]` and their labels.
fn dataset(n: usize, seed: u64) -> (Vec<Tensor>, Vec<u32>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut images = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let label = rng.random_range(0..2u32);
        let mut px = vec![0f32; 3 * S * S];
        for v in px.iter_mut() {
            *v = rng.random_range(-0.1f32..0.1);
        }
        for c in 0..3 {
            for y in 4..12 {
                for x in 4..12 {
                    let on = if label == 0 { (y / 2) % 2 == 0 } else { (x / 2) % 2 == 0 };
                    px[c * S * S + y * S + x] = if on { 1.0 } else { -1.0 };
                }
            }
        }
        // the style: 2×2 blocks of 4×4 pixels, each channel a random level in [−1, 1]
        for by in 0..2 {
            for bx in 0..2 {
                for c in 0..3 {
                    let v: f32 = rng.random_range(-1.0..1.0);
                    for dy in 0..4 {
                        for dx in 0..4 {
                            px[c * S * S + (20 + 4 * by + dy) * S + 20 + 4 * bx + dx] = v;
                        }
                    }
                }
            }
        }
        images.push(Tensor::from_vec(px, (3, S, S), &Device::Cpu).unwrap());
        labels.push(label);
    }
    (images, labels)
}

/// Trains conv(3→16, 3×3/2) → ReLU → conv(16→32, 3×3/2) → ReLU → mean → linear(32→2) and returns
/// it as an ibex network with taps `conv1`, `conv2`, `pooled`, `logits`.
fn train_cnn(images: &[Tensor], labels: &[u32]) -> Network {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let cfg = candle_nn::Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
    let c1 = candle_nn::conv2d(3, 16, 3, cfg, vb.pp("c1")).unwrap();
    let c2 = candle_nn::conv2d(16, 32, 3, cfg, vb.pp("c2")).unwrap();
    let fc = candle_nn::linear(32, 2, vb.pp("fc")).unwrap();
    // candle's initialisers draw from an unseeded generator: re-draw every parameter from a
    // seeded one (the same uniform ±1/√fan_in), so the CNN, and the test, is the same each run.
    {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let vars = varmap.data().lock().unwrap();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            let var = &vars[name];
            let dims = var.dims().to_vec();
            let fan_in: usize = match dims.len() {
                4 => dims[1] * dims[2] * dims[3],
                2 => dims[1],
                _ => {
                    if name.starts_with("fc") {
                        32
                    } else if name.starts_with("c1") {
                        27
                    } else {
                        144
                    }
                }
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            let v: Vec<f32> = (0..var.elem_count()).map(|_| rng.random_range(-bound..bound)).collect();
            var.set(&Tensor::from_vec(v, dims, &dev).unwrap()).unwrap();
        }
    }
    let forward = |x: &Tensor| {
        let h = c2.forward(&c1.forward(x).unwrap().relu().unwrap()).unwrap().relu().unwrap();
        fc.forward(&h.mean((2, 3)).unwrap()).unwrap()
    };
    let mut opt =
        candle_nn::AdamW::new(varmap.all_vars(), candle_nn::ParamsAdamW { lr: 3e-3, ..Default::default() }).unwrap();
    let x = Tensor::stack(images, 0).unwrap();
    let y = Tensor::new(labels, &dev).unwrap();
    let n = images.len();
    for step in 0..120 {
        let start = (step * 64) % n;
        let m = 64.min(n - start);
        let loss =
            candle_nn::loss::cross_entropy(&forward(&x.narrow(0, start, m).unwrap()), &y.narrow(0, start, m).unwrap())
                .unwrap();
        opt.backward_step(&loss).unwrap();
    }
    let conv = |c: &candle_nn::Conv2d| Conv2d {
        weight: c.weight().clone(),
        bias: c.bias().cloned(),
        stride: 2,
        padding: Padding::Fixed(1),
        groups: 1,
    };
    let stages: Vec<(String, Box<dyn ibex::models::cnn::layers::Layer>)> = vec![
        ("conv1".into(), Box::new(Sequence(vec![Box::new(conv(&c1)), Box::new(Activation::Relu)]))),
        ("conv2".into(), Box::new(Sequence(vec![Box::new(conv(&c2)), Box::new(Activation::Relu)]))),
        ("pooled".into(), Box::new(GlobalAvgPool)),
        ("logits".into(), Box::new(Linear { weight: fc.weight().clone(), bias: fc.bias().cloned() })),
    ];
    Network::new(stages, 2).unwrap()
}

fn accuracy(net: &Network, images: &[Tensor], labels: &[u32]) -> f64 {
    let x = Tensor::stack(images, 0).unwrap();
    let pred = net.forward(&x).unwrap().argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap();
    pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
}

/// Fraction of a map's positive mass in cells `cells²` of the 8×8 grid.
fn fraction_in(map: &[f32], cells: [usize; 3]) -> f64 {
    let pos = |v: f32| v.max(0.0) as f64;
    let total: f64 = map.iter().map(|&v| pos(v)).sum();
    let inside: f64 = cells.iter().flat_map(|&y| cells.iter().map(move |&x| pos(map[y * 8 + x]))).sum();
    inside / total.max(1e-12)
}

#[test]
fn dual_ib_separates_the_label_patch_from_the_style_patch() {
    let dev = Device::Cpu;
    let (train, train_labels) = dataset(384, 1);
    let net = train_cnn(&train, &train_labels);
    let (test, test_labels) = dataset(48, 2);
    let acc = accuracy(&net, &test, &test_labels);
    assert!(acc >= 0.99, "the CNN should learn the label patch: held-out accuracy {acc}");

    let config = DualIbConfig {
        local: Some("conv2".into()),
        global: Some("pooled".into()),
        critic_hidden: 64,
        critic_dim: 32,
        // two classes: keeping the decision is worth at most ln 2 nats, so the compression
        // weight must be below ImageNet's β = 10 for anything to pass at all
        beta2: 0.5,
        beta1: 3.0,
        // an 8×8 grid: IBA's σ = 1 smoothing would spread λ two cells past each patch
        sigma: 0.0,
        samples: 4,
        augment: false,
        fit: FitSettings { epochs: 30, batch: 16, lr: 3e-3, seed: 0 },
        ..DualIbConfig::default()
    };
    let fit_images = &train[..];
    let views = Views::fixed(fit_images);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dual.safetensors");
    let mut trainer = DualIbTrainer::new(&net, config, &views, &views, &dev).unwrap();
    let settings = trainer.settings().clone();
    let logs = fit::run(&views, &settings, &mut trainer, &state, 0, &mut RunControl::default()).unwrap();
    let last = &logs.last().unwrap().terms;
    let term = |k: &str| last.iter().find(|(n, _)| n == k).unwrap().1;
    let nce_bits = term("infonce_bits");
    // InfoNCE over a batch of 16 can never exceed log2 16 = 4 bits
    assert!(nce_bits > 0.0 && nce_bits <= 4.0 + 1e-4, "InfoNCE estimate {nce_bits} bits");

    let per_sample = DualIbExplainConfig { state: Some(state.clone()), alpha: "per-sample".into(), seed: 0 };
    let per_sample = DualIb::new(&net, per_sample, &dev).unwrap();
    let mut ps_label = 0.0;
    for img in &test {
        let m = per_sample.maps(&net, &img.unsqueeze(0).unwrap(), None, &mut RunControl::default()).unwrap();
        ps_label += fraction_in(&m.sufficient.data, [1, 2, 3]) / test.len() as f64;
    }
    let dual =
        DualIb::new(&net, DualIbExplainConfig { state: Some(state.clone()), ..Default::default() }, &dev).unwrap();
    let (mut label_suff, mut style_suff, mut style_gen, mut red_on_style) = (0.0, 0.0, 0.0, 0);
    let mut mean_red = vec![0f32; 64];
    let mut mean_gen = vec![0f32; 64];
    for img in &test {
        let m = dual.maps(&net, &img.unsqueeze(0).unwrap(), None, &mut RunControl::default()).unwrap();
        // the InfoNCE bound, per position
        assert!(m.general.data.iter().all(|&g| g <= m.bound_bits + 1e-4), "general map above log2 K");
        assert!(m.sufficient.data.iter().all(|&s| s >= 0.0));
        label_suff += fraction_in(&m.sufficient.data, [1, 2, 3]);
        style_suff += fraction_in(&m.sufficient.data, [5, 6, 7]);
        style_gen += fraction_in(&m.general.data, [5, 6, 7]);
        for (a, v) in mean_red.iter_mut().zip(&m.redundancy.data) {
            *a += v / test.len() as f32;
        }
        for (a, v) in mean_gen.iter_mut().zip(&m.general.data) {
            *a += v / test.len() as f32;
        }
        let (x, y) = m.redundancy.argmax();
        red_on_style += ((5..=7).contains(&x) && (5..=7).contains(&y)) as usize;
    }
    for (name, m) in [("redundancy", &mean_red), ("general", &mean_gen)] {
        eprintln!("mean {name} map (bits per cell):");
        for row in m.chunks(8) {
            eprintln!("  {:?}", row.iter().map(|v| (v * 100.0).round() / 100.0).collect::<Vec<_>>());
        }
    }
    let mean_peak = mean_red.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    let n = test.len() as f64;
    let (label_suff, style_suff, style_gen) = (label_suff / n, style_suff / n, style_gen / n);
    let red_on_style = red_on_style as f64 / n;
    eprintln!(
        "Dual-IB synthetic: sufficient mass in label patch {label_suff:.3} (per-sample α {ps_label:.3}), in style patch {style_suff:.3}; \
         general mass in style patch {style_gen:.3}; redundancy peak on style patch in {red_on_style:.3} of images; \
         final InfoNCE {nce_bits:.2} bits of 4"
    );
    assert!(label_suff >= 0.9, "sufficient map mass in the label patch: {label_suff}");
    assert!(ps_label >= 0.9, "per-sample sufficient map mass in the label patch: {ps_label}");
    assert!(
        style_gen > 5.0 * style_suff && style_gen > style_suff + 0.1,
        "general {style_gen} vs sufficient {style_suff} on the style patch"
    );
    // the average redundancy map peaks on the style patch; single maps are noisier (±1 bit on
    // the background) but still peak there far more often than the 9/64 of chance
    let (px, py) = (mean_peak % 8, mean_peak / 8);
    assert!((5..=7).contains(&px) && (5..=7).contains(&py), "mean redundancy peaks at cell ({px}, {py})");
    assert!(red_on_style >= 0.4, "redundancy peaks on the style patch in {red_on_style} of the images");

    // a resumed fit continues from the saved epoch and the state refuses another model
    let (_, done) = DualIbTrainer::resume(&net, &state, &dev).unwrap();
    assert_eq!(done, 30);
    let other = train_cnn(&train[..64], &train_labels[..64]);
    let err =
        DualIb::new(&other, DualIbExplainConfig { state: Some(state), ..Default::default() }, &dev).err().unwrap();
    assert!(err.to_string().contains("another model"), "{err}");
}

/// InfoNCE over a batch is at most ln B, for any critic, with equality approached only by a
/// perfect one; the written-out gradient matches finite differences.
#[test]
fn infonce_is_bounded_by_log_candidates_and_its_gradient_is_right() {
    let dev = Device::Cpu;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let critic = Critic {
        local: ibex::models::mlp::Mlp::new(&[4, 6, 3], &mut rng, &dev).unwrap(),
        global: ibex::models::mlp::Mlp::new(&[5, 6, 3], &mut rng, &dev).unwrap(),
    };
    // Seeded inputs: the check is the same on every run (candle's randn is not seeded).
    let mut normal = |dims: &[usize]| {
        let n: usize = dims.iter().product();
        let d = rand_distr::Normal::new(0f32, 3.0).unwrap();
        let v: Vec<f32> = (0..n).map(|_| rand::Rng::sample(&mut rng, d)).collect();
        Tensor::from_vec(v, dims, &dev).unwrap()
    };
    let r = normal(&[3, 4, 2, 2]);
    let y = normal(&[3, 5]);
    let bank = normal(&[9, 5]);
    let (loss, est, grads) = critic.infonce(&r, &y, true).unwrap();
    assert!(est <= (3f32).ln() + 1e-6 && loss >= 0.0, "estimate {est}, loss {loss}");
    let (_, gg) = grads.unwrap();
    // finite differences on the global head's first weight
    let g0 = gg.0[0].0.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for k in [0usize, 7, 13] {
        let bumped = |d: f32| {
            let mut c = Critic { local: critic.local.clone(), global: critic.global.clone() };
            let w = &mut c.global.layers[0].weight;
            let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v[k] += d;
            *w = Tensor::from_vec(v, w.dims(), &dev).unwrap();
            c.infonce(&r, &y, false).unwrap().0 as f64
        };
        // A small step keeps the difference inside one linear piece of the ReLU critic.
        let fd = (bumped(1e-3) - bumped(-1e-3)) / 2e-3;
        assert!((fd - g0[k] as f64).abs() < 2e-3 * (1.0 + fd.abs()), "weight {k}: fd {fd} vs {}", g0[k]);
    }
    let (bits, k) = critic.pointwise_bits(&r.narrow(0, 0, 1).unwrap(), &y.narrow(0, 0, 1).unwrap(), &bank).unwrap();
    assert_eq!(k, 10);
    assert!(bits.iter().all(|&b| b <= (10f32).log2() + 1e-5), "{bits:?}");
}
