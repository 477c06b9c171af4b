use candle_core::{Device, Tensor};
use ibex::models::cnn::layers::*;
use std::time::Instant;
fn t(name: &str, l: &dyn Layer, x: &Tensor) {
    let (y, tape) = l.forward_train(x).unwrap();
    let dy = y.ones_like().unwrap();
    let _ = l.backward_params(&tape, &dy).unwrap();
    let s = Instant::now();
    for _ in 0..3 {
        let _ = l.forward_train(x).unwrap();
    }
    let f = s.elapsed() / 3;
    let s = Instant::now();
    for _ in 0..3 {
        let _ = l.backward(&tape, &dy).unwrap();
    }
    let b = s.elapsed() / 3;
    let s = Instant::now();
    for _ in 0..3 {
        let _ = l.backward_params(&tape, &dy).unwrap();
    }
    let bp = s.elapsed() / 3;
    println!("{name:30} fwd {f:>10.2?} bwd-input {b:>10.2?} bwd+params {bp:>10.2?}");
}
fn conv(cin: usize, cout: usize, k: usize, s: usize, p: usize, g: usize) -> Conv2d {
    Conv2d {
        weight: Tensor::randn(0f32, 0.1, (cout, cin / g, k, k), &Device::Cpu).unwrap(),
        bias: Some(Tensor::zeros(cout, candle_core::DType::F32, &Device::Cpu).unwrap()),
        stride: s,
        padding: Padding::Fixed(p),
        groups: g,
    }
}
fn main() {
    let r = |d: (usize, usize, usize, usize)| Tensor::randn(0f32, 1.0, d, &Device::Cpu).unwrap();
    let b = 256;
    t("stem 3->24 k4s4 64px", &conv(3, 24, 4, 4, 0, 1), &r((b, 3, 64, 64)));
    t("dw 24 7x7 16px", &conv(24, 24, 7, 1, 3, 24), &r((b, 24, 16, 16)));
    t("pw 24->96 16px", &conv(24, 96, 1, 1, 0, 1), &r((b, 24, 16, 16)));
    t("pw 96->24 16px", &conv(96, 24, 1, 1, 0, 1), &r((b, 96, 16, 16)));
    t("gelu 96 16px", &Activation::Gelu, &r((b, 96, 16, 16)));
    let ln = LayerNorm2d {
        weight: Tensor::ones(24, candle_core::DType::F32, &Device::Cpu).unwrap(),
        bias: Tensor::zeros(24, candle_core::DType::F32, &Device::Cpu).unwrap(),
        eps: 1e-6,
    };
    t("ln 24 16px", &ln, &r((b, 24, 16, 16)));
    t(
        "scale 24 16px",
        &Scale(Tensor::ones((1, 24, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap()),
        &r((b, 24, 16, 16)),
    );
    t("down 24->48 k2s2 16px", &conv(24, 48, 2, 2, 0, 1), &r((b, 24, 16, 16)));
    t("dw 48 7x7 8px", &conv(48, 48, 7, 1, 3, 48), &r((b, 48, 8, 8)));
    t("down 48->96 k2s1 8px", &conv(48, 96, 2, 1, 0, 1), &r((b, 48, 8, 8)));
    t("down 96->192 k2s1 7px", &conv(96, 192, 2, 1, 0, 1), &r((b, 96, 7, 7)));
    t("pw 192->768 6px", &conv(192, 768, 1, 1, 0, 1), &r((b, 192, 6, 6)));
}
