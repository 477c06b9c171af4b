use candle_core::{Device, Tensor};
use std::time::Instant;
fn main() {
    for (n, c, o, l) in [(256usize, 192usize, 768usize, 36usize), (256, 24, 96, 256), (256, 96, 24, 256)] {
        let x = Tensor::randn(0f32, 1.0, (n, c, l), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 1.0, (o, c), &Device::Cpu).unwrap();
        let a = || w.broadcast_as((n, o, c)).unwrap().matmul(&x).unwrap();
        let b = || {
            let xt = x.transpose(0, 1).unwrap().contiguous().unwrap().reshape((c, n * l)).unwrap();
            w.matmul(&xt).unwrap().reshape((o, n, l)).unwrap().transpose(0, 1).unwrap().contiguous().unwrap()
        };
        let _ = (a(), b());
        let s = Instant::now();
        for _ in 0..5 {
            a();
        }
        let ta = s.elapsed() / 5;
        let s = Instant::now();
        for _ in 0..5 {
            b();
        }
        let tb = s.elapsed() / 5;
        let flops = 2.0 * (n * c * o * l) as f64;
        println!(
            "n{n} c{c} o{o} l{l}: batched {ta:?} ({:.1} GFLOPS), one gemm {tb:?} ({:.1} GFLOPS)",
            flops / ta.as_secs_f64() / 1e9,
            flops / tb.as_secs_f64() / 1e9
        );
    }
}
