//! M2IB per image–caption pair (vision map + text map, default settings) on CPU:
//! the bundled Fashion-MNIST CLIP, and with random weights a ViT-B/32-shaped CLIP, a
//! ViT-B/16-shaped SigLIP (`google/siglip-base-patch16-224`'s sizes, text padded to 64) and a
//! BiomedCLIP-shaped open_clip model (timm ViT-B/16 + BERT-base).
//!
//! `cargo bench --bench m2ib`; compare with the official implementation timed on the same
//! machine (see README, "Performance").

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use ibex::explain::m2ib::{M2ib, M2ibConfig, Noise};
use ibex::models::clip::random::{random_biomedclip_weights, random_siglip_weights, random_weights, BiomedClipShape};
use ibex::models::clip::{openclip, siglip, ClipBundle, ClipConfig, ClipModel};
use ibex::RunControl;
use std::path::Path;

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bundle = ClipBundle::load(&root.join("models/fmnist-clip"), &dev).expect("demo model");
    let image = ibex::imaging::image::RgbImage::load(&root.join("examples/images/four_items.png")).expect("image");
    let m2ib = M2ib::new(M2ibConfig::for_bundle(&bundle).unwrap()).unwrap();
    let mut g = c.benchmark_group("m2ib_pair");
    g.sample_size(10);
    g.bench_function("fmnist-clip", |b| {
        b.iter(|| m2ib.explain(&bundle, &image, &["a sandal"], &mut RunControl::default()).unwrap())
    });

    // ViT-B/32 shapes (HF CLIPConfig defaults), random weights, paper defaults (layer 9, β 0.1)
    let cfg = ClipConfig::from_json(r#"{"model_type":"clip"}"#).unwrap();
    let w = random_weights(&cfg, 0.02, 0, DType::F32, &dev).unwrap();
    let model = ClipModel::from_weights(cfg, &w, &dev).unwrap();
    let pixels = Tensor::randn(0f32, 1.0, (1, 3, 224, 224), &dev).unwrap();
    let ids: Vec<u32> = vec![49406, 320, 1125, 539, 320, 2368, 269, 49407];
    let m2ib = M2ib::new(M2ibConfig::default()).unwrap();
    g.bench_function("vit-b32-random", |b| {
        b.iter(|| {
            m2ib.explain_tensors(
                &model,
                &pixels,
                std::slice::from_ref(&ids),
                &Noise::Seeded,
                &mut RunControl::default(),
            )
            .unwrap()
        })
    });

    // SigLIP ViT-B/16 at 224 (transformers' SiglipConfig defaults), a caption padded to 64
    let (cfg, pad) = siglip::config_from_json(r#"{"model_type":"siglip"}"#).unwrap();
    let w = random_siglip_weights(&cfg, 0.02, 0, DType::F32, &dev).unwrap();
    let model = siglip::from_weights(cfg, &w, &dev).unwrap();
    let mut ids: Vec<u32> = vec![262, 266, 1304, 267, 262, 2741, 1];
    ids.resize(64, pad);
    bench_model(&mut g, "siglip-b16-random", &model, &ids);

    // BiomedCLIP: timm ViT-B/16 + BERT-base, sizes read from the tensors
    let shape = BiomedClipShape::base();
    let mut w = random_biomedclip_weights(&shape, 0.02, 0, DType::F32, &dev).unwrap();
    let cfg = openclip::OpenClipConfig::from_value(Path::new("<bench>"), &shape.config_json()).unwrap();
    let model = openclip::load_model(&cfg, Path::new("/nonexistent"), &mut w, &dev).unwrap();
    let ids: Vec<u32> = vec![2, 1037, 6302, 1997, 1037, 3899, 1012, 3];
    bench_model(&mut g, "biomedclip-b16-random", &model, &ids);
    g.finish();
}

fn bench_model(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    model: &ClipModel,
    ids: &[u32],
) {
    let s = model.config.vision.image_size;
    let pixels = Tensor::randn(0f32, 1.0, (1, 3, s, s), &model.device).unwrap();
    let m2ib = M2ib::new(M2ibConfig::default()).unwrap();
    let ids = ids.to_vec();
    g.bench_function(name, |b| {
        b.iter(|| {
            m2ib.explain_tensors(model, &pixels, std::slice::from_ref(&ids), &Noise::Seeded, &mut RunControl::default())
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
