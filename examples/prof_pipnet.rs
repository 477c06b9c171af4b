use candle_core::{Device, Tensor};
use ibex::models::pipnet::PipNet;
use ibex::models::weights::Weights;
use ibex::train::pipnet::{init_weights, BackboneSpec};
use std::time::Instant;
fn main() {
    let spec =
        BackboneSpec { widths: vec![24, 48, 96, 192], depths: vec![1, 1, 1, 1], stride_threshold: 30, init: None };
    let net = PipNet::convnext(&Weights::from_tensors(init_weights(&spec, 10, 1).unwrap()), 30).unwrap();
    let x = Tensor::randn(0f32, 1.0, (256, 3, 64, 64), &Device::Cpu).unwrap();
    let t = Instant::now();
    let (f, tape) = net.backbone.suffix_forward_train("input", &x).unwrap();
    println!("forward_train all: {:?}", t.elapsed());
    let t = Instant::now();
    let _ = net.backbone.forward(&x).unwrap();
    println!("forward plain: {:?}", t.elapsed());
    let dy = f.ones_like().unwrap();
    let t = Instant::now();
    let _ = net.backbone.suffix_backward_params(&tape, &dy).unwrap();
    println!("backward_params all: {:?}", t.elapsed());
    let t = Instant::now();
    let _ = net.backbone.suffix_backward(&tape, &dy).unwrap();
    println!("backward input only: {:?}", t.elapsed());
    let y = [0u32; 128];
    let lw = ibex::train::pipnet_loss::LossWeights { align: 5.0, tanh: 2.0, class: 2.0 };
    let t = Instant::now();
    let _ = ibex::train::pipnet::gradients(&net, &x, &y, &lw, true, Some(0)).unwrap();
    println!("gradients: {:?}", t.elapsed());
}
