//! Shared helpers for the integration tests: fixture paths, loading references, statistics.
#![allow(dead_code, unused_imports)]

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// `../shared/fixtures` next to the repository (or `IBEX_FIXTURES`).
pub fn fixtures() -> PathBuf {
    if let Some(p) = std::env::var_os("IBEX_FIXTURES") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("shared").join("fixtures");
    assert!(p.is_dir(), "fixtures not found at {} (set IBEX_FIXTURES)", p.display());
    p
}

pub fn clip_dir() -> PathBuf {
    fixtures().join("clip")
}

pub fn fmnist_model() -> PathBuf {
    clip_dir().join("fmnist-clip")
}

/// All tensors of a safetensors fixture.
pub fn load_st(rel: &str) -> HashMap<String, Tensor> {
    let p = clip_dir().join(rel);
    candle_core::safetensors::load(&p, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn vec_f32(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

pub fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<i64>().unwrap().into_iter().map(|v| v as u32).collect()
}

pub fn json(rel: &str) -> serde_json::Value {
    json_at(&clip_dir().join(rel))
}

/// A JSON file, parsed.
pub fn json_at(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub use ibex::metrics::correlation::{pearson, spearman};

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A model directory under `parent` holding only the small random-weight ResNet checkpoint
/// `tests/data/resnet/{name}.pth` ("another model" for state and signature checks).
pub fn resnet_model_dir(parent: &std::path::Path, name: &str) -> PathBuf {
    let dir = parent.join(format!("resnet-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/resnet/{name}.pth"));
    std::fs::copy(&src, dir.join("checkpoint.pth")).unwrap();
    dir
}

/// The bundled EfficientNet-Lite0 model directory.
pub fn efficientnet_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models").join("efficientnet-lite0")
}

/// All tensors of a safetensors file under the fixtures.
pub fn load_fixture(rel: &str) -> HashMap<String, Tensor> {
    let p = fixtures().join(rel);
    candle_core::safetensors::load(&p, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The 12 photo names in the order of `reference_logits`.
pub const PHOTOS: [&str; 12] = [
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "coins",
    "china",
    "dog",
    "eagle",
    "giraffe",
    "person",
    "kite",
];

/// The 224x224 network input of a fixture photo.
pub fn photo224(name: &str) -> ibex::imaging::image::RgbImage {
    let p = fixtures().join("images/photos/input224").join(format!("{name}.png"));
    ibex::imaging::image::RgbImage::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The mean over the first axis of `[n, …]` values like numpy's float32 `mean(axis=0)` (the
/// reference's seed mean): rows added in order, then divided by n.
pub fn numpy_mean0(t: &Tensor) -> Vec<f32> {
    let n = t.dim(0).unwrap();
    let v = vec_f32(t);
    let plane = v.len() / n;
    let mut sum = v[..plane].to_vec();
    for row in v[plane..].chunks_exact(plane) {
        sum.iter_mut().zip(row).for_each(|(a, &b)| *a += b);
    }
    sum.into_iter().map(|x| x / n as f32).collect()
}

/// The worst relative error between the written-out backward pass of `net`'s suffix from
/// `tap` and central finite differences (float64, step 1e-6) of `Σ w · logits`, over about
/// `samples` evenly spaced elements of the tap's output for input `x`.
pub fn suffix_fd_worst(net: &ibex::models::cnn::Network, tap: &str, x: &Tensor, w: &Tensor, samples: usize) -> f64 {
    let h = net.forward_until(tap, x).unwrap();
    let (_, tape) = net.suffix_forward(tap, &h).unwrap();
    let g = net.suffix_backward(&tape, w).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let hv = h.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let f = |v: &[f64]| -> f64 {
        let t = Tensor::from_vec(v.to_vec(), h.dims(), &Device::Cpu).unwrap();
        (net.forward_from(tap, &t).unwrap() * w).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
    };
    let e = 1e-6;
    let mut worst = 0f64;
    for i in (0..hv.len()).step_by((hv.len() / samples).max(1)) {
        let (mut p, mut m) = (hv.clone(), hv.clone());
        p[i] += e;
        m[i] -= e;
        let fd = (f(&p) - f(&m)) / (2.0 * e);
        if (fd - g[i]).abs() > 1e-8 {
            worst = worst.max((fd - g[i]).abs() / fd.abs().max(g[i].abs()));
        }
    }
    worst
}

/// Where Debian's `dataset-fashion-mnist` puts the IDX files (or `IBEX_FASHION_MNIST`).
pub fn fashion_mnist_dir() -> PathBuf {
    let dir = std::env::var_os("IBEX_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"));
    assert!(
        dir.join("t10k-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST not found in {} (apt install dataset-fashion-mnist, or set IBEX_FASHION_MNIST)",
        dir.display()
    );
    dir
}

/// The Fashion-MNIST class directory names of the fixture (label order).
pub const FASHION_CLASSES: [&str; 10] = [
    "0_tshirt_top",
    "1_trouser",
    "2_pullover",
    "3_dress",
    "4_coat",
    "5_sandal",
    "6_shirt",
    "7_sneaker",
    "8_bag",
    "9_ankle_boot",
];

/// A 28×28 grey 8-bit image (784 bytes) as RGB, as Pillow's `convert("RGB")` gives it.
pub fn grey28(px: &[u8]) -> ibex::imaging::image::RgbImage {
    let rgb: Vec<f32> = px.iter().flat_map(|&g| [g as f32; 3]).collect();
    ibex::imaging::image::RgbImage::new(28, 28, rgb, true).unwrap()
}

fn gunzip(path: &std::path::Path) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

/// A Fashion-MNIST split (`train` or `t10k`) as 28×28 grey images (three equal channels) and
/// labels, in file order; with `per_class`, the first that many of each class (the fixture's
/// training subset is the first 1000 per class).
pub fn fashion_mnist(split: &str, per_class: Option<usize>) -> ibex::imaging::folder::ImageFolder {
    let dir = fashion_mnist_dir();
    let images = gunzip(&dir.join(format!("{split}-images-idx3-ubyte.gz")));
    let labels = gunzip(&dir.join(format!("{split}-labels-idx1-ubyte.gz")));
    assert_eq!(&images[..4], &[0, 0, 8, 3], "IDX image magic");
    assert_eq!(&labels[..4], &[0, 0, 8, 1], "IDX label magic");
    let n = u32::from_be_bytes(images[4..8].try_into().unwrap()) as usize;
    let mut counts = [0usize; 10];
    let mut folder = ibex::imaging::folder::ImageFolder {
        classes: FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
        images: Vec::new(),
        labels: Vec::new(),
        paths: Vec::new(),
    };
    for i in 0..n {
        let label = labels[8 + i] as usize;
        if per_class.is_some_and(|k| counts[label] >= k) {
            continue;
        }
        counts[label] += 1;
        folder.images.push(grey28(&images[16 + i * 784..16 + (i + 1) * 784]));
        folder.labels.push(label as u32);
        folder.paths.push(PathBuf::from(format!("{split}_{i:05}")));
    }
    folder
}

/// Runs the `ibex` binary in the repository root: (success, stdout, stderr, exit code).
pub fn run_cli(args: &[&str]) -> (bool, String, String, i32) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ibex"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// Where `cargo test` put this build's `libibex.so` / `libibex.a`: next to the test binary
/// (`target/<profile>/deps`), the same build as the tests.
pub fn lib_dir() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().to_path_buf()
}

/// Runs a command that must succeed; returns its stdout and stderr together.
pub fn run_ok(cmd: &mut std::process::Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed ({}):\n{text}", out.status);
    text
}

/// `pip install`s the Python binding from a copy of `bindings/python` (setuptools writes
/// build/ and *.egg-info next to the sources) into a temporary directory for PYTHONPATH.
pub fn install_python_binding() -> tempfile::TempDir {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = tempfile::tempdir().unwrap();
    for rel in ["pyproject.toml", "ibex/__init__.py"] {
        let to = src.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join("bindings/python").join(rel), &to).unwrap();
    }
    let site = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target"])
        .arg(site.path())
        .arg(src.path())
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "pip install failed:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(site.path().join("ibex/__init__.py").is_file());
    site
}
