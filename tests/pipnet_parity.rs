//! PIP-Net inference against the official code (`../shared/fixtures/pipnet`): random-weight
//! ConvNeXt parity at 26×26 and 13×13 (the stride rule at thresholds 24 and 48), and the
//! officially trained Fashion-MNIST model read from its own `torch.save` checkpoint: the same
//! presences, scores and predictions on the 20 public test images, the same from the converted
//! safetensors. Tolerances are the fixture README's (1e-4 abs; {p ≥ 0.1} exact).

mod common;
use candle_core::{Device, Tensor, D};
use ibex::models::pipnet::PipNet;
use ibex::models::weights::Weights;
use std::collections::HashMap;

fn pip(rel: &str) -> std::path::PathBuf {
    common::fixtures().join("pipnet").join(rel)
}

fn load(rel: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(pip(rel), &Device::Cpu).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// `{p ≥ 0.1}` must be identical.
fn same_support(a: &Tensor, b: &Tensor) -> bool {
    let f = |t: &Tensor| t.ge(0.1f32).unwrap().flatten_all().unwrap().to_vec1::<u8>().unwrap();
    f(a) == f(b)
}

#[test]
fn random_weight_convnext_matches_the_official_forward() {
    let w = Weights::load(&pip("parity/convnext_weights.safetensors"), &Device::Cpu).unwrap();
    let out = load("parity/convnext_outputs.safetensors");
    let x = &out["convnext.input"];
    for (prefix, threshold, grid) in [("convnext", 24, 26), ("convnext13", 48, 13)] {
        let net = PipNet::convnext(&w, threshold).unwrap();
        let o = net.forward(x).unwrap();
        assert_eq!(o.features.dims(), &[4, 128, grid, grid]);
        let key = |k: &str| &out[&format!("{prefix}.{k}")];
        let errs = [
            ("f", max_abs(&o.features, key("f"))),
            ("z", max_abs(&o.z, key("z"))),
            ("p", max_abs(&o.p, key("p"))),
            ("p_clamped", max_abs(&o.p_clamped, key("p_clamped"))),
        ];
        let o_err = max_abs(&o.o, key("o")).max(max_abs(&o.o_clamped, key("o_clamped")));
        let o_scale =
            key("o").abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().max(1.0);
        eprintln!("{prefix} ({grid}x{grid}): {errs:?}, o {o_err:.2e} (scale {o_scale:.1})");
        for (name, e) in errs {
            assert!(e < 1e-4, "{prefix}.{name}: {e}");
        }
        assert!(o_err < 1e-4 * o_scale, "{prefix}.o: {o_err}");
        assert!(same_support(&o.p, key("p")));
        let pred = o.o_clamped.argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap();
        let want: Vec<u32> = key("pred")
            .to_dtype(candle_core::DType::I64)
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&v| v as u32)
            .collect();
        assert_eq!(pred, want);
    }
}

#[test]
fn random_weight_resnet_matches_the_official_forward() {
    let w = Weights::load(&pip("parity/resnet_weights.safetensors"), &Device::Cpu).unwrap();
    let out = load("parity/resnet_outputs.safetensors");
    let x = &load("parity/convnext_outputs.safetensors")["convnext.input"];
    let net = PipNet::resnet(&w).unwrap();
    assert_eq!((net.prototypes(), net.classes()), (2048, 10));
    let o = net.forward(x).unwrap();
    assert_eq!(&o.features.dims()[2..], &[28, 28]);
    let (ep, eo) = (max_abs(&o.p, &out["resnet.p"]), max_abs(&o.o, &out["resnet.o"]));
    let o_scale =
        out["resnet.o"].abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().max(1.0);
    eprintln!("resnet (28x28): p {ep:.2e}, o {eo:.2e} (scale {o_scale:.1})");
    assert!(ep < 1e-4 && eo < 1e-4 * o_scale);
    assert!(same_support(&o.p, &out["resnet.p"]));
    // the official architecture of another backbone is named in the error
    let err = PipNet::convnext(&w, 24).err().unwrap().to_string();
    assert!(err.contains("ConvNeXt"), "{err}");
}

#[test]
fn the_trained_official_checkpoint_predicts_as_the_official_code() {
    let exp = load("fmnist/expected_public.safetensors");
    let x = &exp["input"];
    // the official torch.save file (model_state_dict, 'module.' prefixes) and the converted one
    let official = PipNet::convnext(&Weights::load(&pip("fmnist/net_trained"), &Device::Cpu).unwrap(), 30).unwrap();
    let converted =
        PipNet::convnext(&Weights::load(&pip("fmnist/net_trained.safetensors"), &Device::Cpu).unwrap(), 30).unwrap();
    assert_eq!((official.prototypes(), official.classes(), official.multiplier), (192, 10, 2.0));
    let a = official.forward(x).unwrap();
    let b = converted.forward(x).unwrap();
    assert_eq!(max_abs(&a.o, &b.o), 0.0);
    assert_eq!(a.z.dims(), &[20, 192, 6, 6]);
    let errs = [
        ("z", max_abs(&a.z, &exp["z"])),
        ("p", max_abs(&a.p, &exp["p"])),
        ("p_clamped", max_abs(&a.p_clamped, &exp["p_clamped"])),
        ("o", max_abs(&a.o, &exp["o"])),
        ("o_clamped", max_abs(&a.o_clamped, &exp["o_clamped"])),
    ];
    eprintln!("fmnist, 20 public images: {errs:?}");
    for (name, e) in errs {
        assert!(e < 1e-4, "{name}: {e}");
    }
    assert!(same_support(&a.p, &exp["p"]));
    let json = common::json_at(&pip("fmnist/expected_public.json"));
    let items = json["items"].as_array().unwrap();
    let pred = a.o_clamped.argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap();
    for (i, item) in items.iter().enumerate() {
        assert_eq!(pred[i] as u64, item["pred"].as_u64().unwrap(), "image {i}");
        assert_eq!(item["abstained"], false);
    }
}

/// Through `ibex pipnet convert` (the official checkpoint) and the explanation API: for the 20
/// public images the prediction, the three top classes, and for each the listed prototypes, in
/// order, with presence, weight, grid location and both boxes, as the official `vis_pred`.
#[test]
fn explanations_list_the_official_prototypes_and_boxes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fmnist");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ibex"))
        .args(["pipnet", "convert", "--checkpoint"])
        .arg(pip("fmnist/net_trained"))
        .arg("--config")
        .arg(pip("fmnist/config.json"))
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = ibex::models::Model::load(None, &dir, &Device::Cpu).unwrap();
    assert_eq!(model.kind(), "pipnet");
    let m = ibex::explain::Method::create(&model, "pipnet", &serde_json::json!({})).unwrap();
    let json = common::json_at(&pip("fmnist/expected_public.json"));
    let (mut listed, mut worst) = (0usize, 0f64);
    for item in json["items"].as_array().unwrap() {
        let img =
            ibex::imaging::image::RgbImage::load(&pip(&format!("fmnist/{}", item["image_resized"].as_str().unwrap())))
                .unwrap();
        let ex = m.explain(&model, &img, &ibex::explain::Target::default(), &mut ibex::RunControl::default()).unwrap();
        assert_eq!(ex.summary["predicted"], item["pred"]);
        assert_eq!(ex.summary["abstained"], item["abstained"]);
        let top = ex.summary["top_classes"].as_array().unwrap();
        for (ours, theirs) in top.iter().zip(item["top3"].as_array().unwrap()) {
            assert_eq!(ours["index"], theirs["class_index"]);
            let (a, b) = (ours["prototypes"].as_array().unwrap(), theirs["prototypes"].as_array().unwrap());
            let ids =
                |v: &Vec<serde_json::Value>, k: &str| v.iter().map(|p| p[k].as_u64().unwrap()).collect::<Vec<_>>();
            assert_eq!(ids(a, "index"), ids(b, "prototype"), "class {}", theirs["class_index"]);
            for (pa, pb) in a.iter().zip(b) {
                assert_eq!(pa["latent_hw"], pb["latent_hw"]);
                assert_eq!(pa["box"], pb["rect_box_x0y0x1y1"]);
                assert_eq!(pa["patch_box"], pb["patch_box_hmin_hmax_wmin_wmax"]);
                for (ka, kb) in [("presence", "presence"), ("weight", "weight"), ("contribution", "simweight")] {
                    worst = worst.max((pa[ka].as_f64().unwrap() - pb[kb].as_f64().unwrap()).abs());
                }
                listed += 1;
            }
        }
        assert_eq!(ex.maps[0].name, "class_evidence");
        assert_eq!((ex.maps[0].map.width, ex.maps[0].map.height), (64, 64));
    }
    eprintln!("{listed} listed prototypes identical; worst presence/weight/contribution difference {worst:.2e}");
    assert_eq!(listed, 301);
    assert!(worst < 1e-3);
}
