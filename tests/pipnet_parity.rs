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

/// Pillow's bilinear resize, reproduced: the fixture's 28×28 originals resized to 64×64 equal
/// the `_64.png` files the official preprocessing made.
#[test]
fn bilinear_resize_matches_pillow() {
    use ibex::imaging::image::RgbImage;
    use ibex::imaging::resize::{resize_with, Filter, PassOrder};
    let json = common::json_at(&pip("fmnist/expected_public.json"));
    let mut worst = 0f32;
    for item in json["items"].as_array().unwrap() {
        let small = RgbImage::load(&pip(&format!("fmnist/{}", item["image"].as_str().unwrap()))).unwrap();
        let want = RgbImage::load(&pip(&format!("fmnist/{}", item["image_resized"].as_str().unwrap()))).unwrap();
        assert_eq!((small.width, want.width), (28, 64));
        let ours = resize_with(&small, 64, 64, Filter::Bilinear, PassOrder::default());
        worst = ours.data.iter().zip(&want.data).fold(worst, |m, (a, b)| m.max((a - b).abs()));
    }
    assert_eq!(worst, 0.0, "levels differ by up to {worst}");
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
    // the official checkpoint's thresholds came along with its config: every public (test)
    // image is in distribution, and `ibex pipnet thresholds` on them keeps ≥ 95 % in
    assert_eq!(ex_ood(&model, &m, "fmnist/images/test_00000_64.png"), Some(false));
    let imgs = tmp.path().join("id");
    std::fs::create_dir(&imgs).unwrap();
    for item in json["items"].as_array().unwrap() {
        let f = item["image_resized"].as_str().unwrap();
        std::fs::copy(pip(&format!("fmnist/{f}")), imgs.join(f.trim_start_matches("images/"))).unwrap();
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ibex"))
        .args(["pipnet", "thresholds", "-q", "--model"])
        .arg(&dir)
        .arg("--images")
        .arg(&imgs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = ibex::models::Model::load(None, &dir, &Device::Cpu).unwrap();
    let inside = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|it| ex_ood(&model, &m, &format!("fmnist/{}", it["image_resized"].as_str().unwrap())) == Some(false))
        .count();
    assert!(inside >= 19, "{inside} of 20 in distribution");

    // the scoring sheet's size as the official evaluation counts it (static figures of the
    // saved W in the fixture's config)
    let Model::PipNet(b) = &model else { unreachable!() };
    let sheet = b.model.sheet_size().unwrap();
    let stat = &common::json_at(&pip("fmnist/config.json"))["eval_static_saved_checkpoint"];
    assert_eq!(sheet.relevant.len() as u64, stat["global_size"].as_u64().unwrap());
    assert_eq!(sheet.relevant_weights as u64, stat["num_relevant_weights"].as_u64().unwrap());
    assert!((sheet.sparsity - stat["sparsity_ratio"].as_f64().unwrap()).abs() < 1e-9);

    // the local explanation sheet: the input zoomed 4x with a box per listed prototype (8 for
    // the first public image), their patches and contribution bars below
    let sheet = tmp.path().join("sheet.png");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ibex"))
        .args(["explain", "--model"])
        .arg(&dir)
        .arg(pip("fmnist/images/test_00000_64.png"))
        .arg("--sheet")
        .arg(&sheet)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = ::image::open(&sheet).unwrap();
    assert_eq!((png.width(), png.height()), (8 * (128 + 8), 256 + 8 + 128 + 8 + 16));

    // the global explanation: a patch sheet per relevant prototype; each top image is the one
    // where the prototype is most present
    let out = tmp.path().join("protos");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ibex"))
        .args(["pipnet", "prototypes", "-q", "--top", "3", "--model"])
        .arg(&dir)
        .arg("--images")
        .arg(&imgs)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let index = common::json_at(&out.join("index.json"));
    let protos = index["prototypes"].as_array().unwrap();
    assert_eq!(protos.len(), 151);
    assert!(out.join("prototype_0113.png").is_file());
    let names: Vec<String> = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();
    let p_all = load("fmnist/expected_public.safetensors")["p"].to_vec2::<f32>().unwrap();
    let order: Vec<String> = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| it["image_resized"].as_str().unwrap().trim_start_matches("images/").to_string())
        .collect();
    for g in protos {
        let d = g["index"].as_u64().unwrap() as usize;
        let top = &g["top"][0];
        let name = &names[top[0].as_u64().unwrap() as usize];
        let best = (0..20).max_by(|&a, &b| p_all[a][d].total_cmp(&p_all[b][d])).unwrap();
        let want = p_all[best][d];
        let got = p_all[order.iter().position(|n| n == name).unwrap()][d];
        assert!((got - want).abs() < 1e-5, "prototype {d}: top image {name} has p {got}, the best {want}");
    }
}

use ibex::models::Model;

fn ex_ood(model: &ibex::models::Model, m: &ibex::explain::Method, rel: &str) -> Option<bool> {
    let img = ibex::imaging::image::RgbImage::load(&pip(rel)).unwrap();
    let ex = m.explain(model, &img, &ibex::explain::Target::default(), &mut ibex::RunControl::default()).unwrap();
    ex.summary["ood"].as_bool()
}

/// OOD with the checkpoint's official FPR95 thresholds: the fractions of the two OOD sets the
/// model accepts as in-distribution equal the official `eval_ood`'s (digits 0.4257, uniform
/// noise 0.181), through our preprocessing (28×28 → PIL-bilinear 64×64 → normalise).
#[test]
fn ood_sets_are_accepted_as_often_as_by_the_official_code() {
    use ibex::models::pipnet::PipNetBundle;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(pip("fmnist/net_trained.safetensors"), tmp.path().join("model.safetensors")).unwrap();
    std::fs::copy(pip("fmnist/config.json"), tmp.path().join("config.json")).unwrap();
    let bundle = PipNetBundle::load(tmp.path(), &Device::Cpu).unwrap();
    assert!(bundle.ood_thresholds.is_some());
    let sets = load("fmnist/ood_images.safetensors");
    let cfg = common::json_at(&pip("fmnist/config.json"));
    for (name, key) in [("digits", "digits_ood"), ("noise", "noise_ood")] {
        let raw = sets[name].flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let n = raw.len() / (28 * 28);
        let mut accepted = 0usize;
        for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
            let mut px = Vec::new();
            for &i in chunk {
                let img = common::grey28(&raw[i * 784..(i + 1) * 784]);
                px.extend(bundle.preprocessor.preprocess(&img).unwrap().pixel_values);
            }
            let x = Tensor::from_vec(px, (chunk.len(), 3, 64, 64), &Device::Cpu).unwrap();
            let o = bundle.model.forward(&x).unwrap().o.to_vec2::<f32>().unwrap();
            accepted += o.iter().filter(|o| bundle.is_ood(o) == Some(false)).count();
        }
        let ours = accepted as f64 / n as f64;
        let official = cfg["ood_fpr95_on_checkpoint"]["ood"][key]["fpr95"].as_f64().unwrap();
        eprintln!("{name}: accepted as in-distribution {ours:.4} (official {official:.4}, n = {n})");
        assert!((ours - official).abs() <= 1.0 / n as f64 + 1e-9, "{name}: {ours} vs {official}");
    }
    let mean = [0.485f32, 0.456, 0.406];
    let std = [0.229f32, 0.224, 0.225];
    let black: Vec<f32> = (0..3 * 64 * 64).map(|i| -mean[i / 4096] / std[i / 4096]).collect();
    let o = bundle.model.forward(&Tensor::from_vec(black, (1, 3, 64, 64), &Device::Cpu).unwrap()).unwrap();
    let (unclamped, clamped) =
        (o.o.to_vec2::<f32>().unwrap().remove(0), o.o_clamped.to_vec2::<f32>().unwrap().remove(0));
    let best = (0..10).max_by(|&a, &b| unclamped[a].total_cmp(&unclamped[b])).unwrap();
    eprintln!(
        "all-black image: best class {best} score {:.3} (threshold {:.3}), clamped max {:.3}, ood {:?}",
        unclamped[best],
        bundle.ood_thresholds.as_ref().unwrap()[best],
        clamped.iter().fold(0f32, |m, &v| m.max(v)),
        bundle.is_ood(&unclamped)
    );
}
