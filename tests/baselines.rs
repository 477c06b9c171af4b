//! Baselines on the bundled EfficientNet-Lite0: Integrated Gradients' completeness, the input
//! gradient behind gradient saliency against a directional finite difference, and occlusion's
//! aggregation against directly occluded images.

mod common;

use candle_core::Device;
use common::*;
use ibex::explain::classifier::{self, one_hot, target_probability};
use ibex::explain::{IntegratedGradients, IntegratedGradientsConfig, Method, Occlusion, OcclusionConfig, Target};
use ibex::models::cnn::ClassifierBundle;
use ibex::models::Model;
use ibex::RunControl;

fn bundle() -> ClassifierBundle {
    ClassifierBundle::load(&efficientnet_dir(), None, &Device::Cpu).unwrap()
}

#[test]
fn integrated_gradients_are_complete_and_converge_with_steps() {
    let b = bundle();
    let img = photo224("coffee");
    let gap = |steps: usize| -> (f64, f64) {
        let ig = IntegratedGradients::new(IntegratedGradientsConfig { steps, ..Default::default() }).unwrap();
        let ex = ig.explain_batch(&b, std::slice::from_ref(&img), None, &mut RunControl::default()).unwrap();
        let s = &ex[0].summary;
        let map_sum: f64 = ex[0].maps[0].2.data.iter().map(|&v| v as f64).sum();
        assert!((map_sum - s["attribution_sum"].as_f64().unwrap()).abs() < 1e-2 * map_sum.abs().max(1.0));
        (s["completeness_gap"].as_f64().unwrap(), s["logit_difference"].as_f64().unwrap())
    };
    // The logit along the straight path is piecewise linear with a kink wherever one of the
    // network's ~10^6 ReLU6 units saturates, so its slope is very rough and the trapezoid
    // converges slowly and not monotonically; the gap must still shrink well below the
    // logit difference.
    let (g8, diff) = gap(8);
    let (g32, _) = gap(32);
    let (g128, _) = gap(128);
    eprintln!("IG completeness gap: {g8:.3} / {g32:.3} / {g128:.3} at 8 / 32 / 128 steps; f(x) - f(x0) = {diff:.3}");
    assert!(diff.abs() > 1.0, "the photo and the baseline must differ in logit");
    assert!(g32.max(g128) < 0.5 * g8, "more steps, smaller gap");
    assert!(g32.min(g128) < 0.15 * diff.abs(), "gap {g32} / {g128} vs {diff}");
}

#[test]
fn gradient_saliency_is_the_largest_absolute_input_gradient() {
    // the input gradient itself is checked against finite differences (float64, every layer
    // kind) in tests/cnn_gradients.rs and, on this model, by IG's completeness above
    let b = bundle();
    let input = classifier::input(&b, &photo224("camera")).unwrap();
    let (logits, tape) = b.network.suffix_forward("input", &input.pixels).unwrap();
    let t = classifier::predict(&b, &logits, None).unwrap().target.index;
    let g = b.network.suffix_backward(&tape, &one_hot(1000, t, &logits).unwrap()).unwrap();
    let m = Model::Classifier(b);
    let method = Method::create(&m, "saliency", &serde_json::Value::Null).unwrap();
    let ex = method.explain(&m, &photo224("camera"), &Target::default(), &mut RunControl::default()).unwrap();
    let want = vec_f32(&g.abs().unwrap().max(1).unwrap());
    assert_eq!((ex.maps[0].name.as_str(), ex.maps[0].map.width), ("saliency", 224));
    assert!(max_abs_diff(&ex.maps[0].map.data, &want) < 1e-6);
    assert!(want.iter().any(|&v| v > 0.0));
}

#[test]
fn occlusion_averages_the_probability_drop_of_the_covering_windows() {
    let b = bundle();
    let cfg = OcclusionConfig { window: 64, stride: 64, fill: 0.0, fill_rgb: None, batch: 8 };
    let occ = Occlusion::new(cfg.clone()).unwrap();
    let img = photo224("dog");
    let ex = occ.explain_batch(&b, std::slice::from_ref(&img), None, &mut RunControl::default()).unwrap();
    let map = &ex[0].maps[0].2;
    let t = ex[0].prediction.target.index;
    let p0 = ex[0].prediction.target.probability;
    // windows at 0, 64, 128 and 160 (flush with the end): pixel (10, 10) is covered by one
    // window, pixel (170, 10) by two (x offsets 128 and 160)
    let input = classifier::input(&b, &img).unwrap();
    let mut score = target_probability(&b, t, 224, 224);
    let mut occluded = |x0: usize, y0: usize| -> f32 {
        let mut v = input.pre.pixel_values.clone();
        for ch in 0..3 {
            for y in y0..y0 + 64 {
                v[ch * 224 * 224 + y * 224 + x0..ch * 224 * 224 + y * 224 + x0 + 64].fill(0.0);
            }
        }
        score(&v, 1).unwrap()[0]
    };
    let d00 = p0 - occluded(0, 0);
    assert!((map.get(10, 10).unwrap() - d00).abs() < 1e-5, "{} vs {d00}", map.get(10, 10).unwrap());
    let d2 = ((p0 - occluded(128, 0)) + (p0 - occluded(160, 0))) / 2.0;
    assert!((map.get(170, 10).unwrap() - d2).abs() < 1e-5, "{} vs {d2}", map.get(170, 10).unwrap());
    assert_eq!(ex[0].summary["windows"], 16);
    assert!(Occlusion::new(OcclusionConfig { stride: 0, ..cfg }).is_err());
}
