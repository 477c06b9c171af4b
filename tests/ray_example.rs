//! The Ray example (examples/ray): a Ray Data pipeline over the twelve fixture photos on a local
//! Ray with 2 CPUs, every row equal to the plain single-process loop for the same seed. Needs
//! Python with `ray[data]` (ray, pyarrow) from PyPI, which `.ci/run` installs.

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn ray_pipeline_equals_the_plain_loop() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let site = common::install_python_binding();
    let lib = common::lib_dir().join("libibex.so");
    let cache = tempfile::tempdir().unwrap();
    let photos = common::fixtures().join("images/photos/original");
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"])
        .arg(root.join("examples/ray/test_explain_archive.py"))
        .current_dir(cache.path())
        .env("PYTHONPATH", site.path())
        .env("IBEX_LIBRARY", &lib)
        .env("IBEX_PHOTOS", &photos)
        .env("RAY_USAGE_STATS_ENABLED", "0")
        .output()
        .expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let summary: Vec<&str> = text.lines().filter(|l| l.contains("plain loop") || l.contains(" passed")).collect();
    eprintln!("{}", summary.join("\n"));
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}
