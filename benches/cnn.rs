//! Classifier methods on the bundled EfficientNet-Lite0 (CPU, fp32), per heatmap on one
//! 224×224 photo: IBA at `blocks.10` (paper defaults: 10 steps × 10 samples), Grad-CAM, and
//! a plain forward pass (a batch of 17, what a deletion curve scores per call).
//!
//! Also PIP-Net's forward pass on the fixture's Fashion-MNIST model, one image and a batch, and
//! one training step (forward + backward with weight gradients).
//!
//! `cargo bench --bench cnn`; compare with the official IBA timed on the same machine
//! (`tools/time_official_iba.py`, see README "Performance").

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use ibex::explain::{GradCam, GradCamConfig, Iba, IbaConfig};
use ibex::models::cnn::ClassifierBundle;
use ibex::RunControl;
use std::path::Path;

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let b = ClassifierBundle::load(&root.join("models/efficientnet-lite0"), None, &dev).expect("bundled model");
    let image = ibex::imaging::image::RgbImage::load(&root.join("examples/images/chelsea.png")).expect("image");
    let iba = Iba::new(&b, IbaConfig::for_bundle(&b).unwrap()).unwrap();
    let gc = GradCam::new(&b, GradCamConfig { layer: Some("blocks.10".into()) }).unwrap();
    let mut g = c.benchmark_group("efficientnet_lite0");
    g.sample_size(10);
    g.bench_function("iba_per_heatmap", |bn| {
        bn.iter(|| iba.explain_batch(&b, std::slice::from_ref(&image), None, &mut RunControl::default()).unwrap())
    });
    g.bench_function("gradcam_per_image", |bn| {
        bn.iter(|| gc.explain_batch(&b, std::slice::from_ref(&image), None, &mut RunControl::default()).unwrap())
    });
    let x = Tensor::randn(0f32, 1.0, (17, 3, 224, 224), &dev).unwrap();
    g.bench_function("forward_batch17", |bn| bn.iter(|| b.network.forward(&x).unwrap()));
    g.finish();

    // PIP-Net inference on the fixture's trained Fashion-MNIST model (64×64), if present: the
    // official code took 1.95 ms per image with 1 torch thread where the fixture was made
    let pip = root.join("../shared/fixtures/pipnet/fmnist/net_trained.safetensors");
    if pip.is_file() {
        let w = ibex::models::weights::Weights::load(&pip, &dev).unwrap();
        let net = ibex::models::pipnet::PipNet::convnext(&w, 30).unwrap();
        let mut g = c.benchmark_group("pipnet_fmnist");
        let x1 = Tensor::randn(0f32, 1.0, (1, 3, 64, 64), &dev).unwrap();
        g.bench_function("forward_1", |bn| bn.iter(|| net.forward(&x1).unwrap()));
        let x64 = Tensor::randn(0f32, 1.0, (64, 3, 64, 64), &dev).unwrap();
        g.bench_function("forward_batch64", |bn| bn.iter(|| net.forward(&x64).unwrap()));
        // one training step's forward + backward (all layers, the stage-2 loss) on a
        // pretraining batch (128 images = 256 views); tools/time_pipnet_train_torch.py times
        // PyTorch's
        let x256 = Tensor::randn(0f32, 1.0, (256, 3, 64, 64), &dev).unwrap();
        let labels: Vec<u32> = (0..128).map(|i| i % 10).collect();
        let lw = ibex::train::pipnet_loss::LossWeights { align: 5.0, tanh: 2.0, class: 2.0 };
        g.sample_size(10);
        g.bench_function("train_step_256_views", |bn| {
            bn.iter(|| ibex::train::pipnet::gradients(&net, &x256, &labels, &lw, true, Some(0)).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
