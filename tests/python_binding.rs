//! The Python binding (`bindings/python`): `pip install` of the package from this checkout into
//! a temporary directory, then its pytest suite against this build's `libibex.so` (found through
//! `IBEX_LIBRARY`). Needs `python3` with `numpy`, `pytest` and `setuptools` (`.ci/run` installs them).

use std::path::Path;
use std::process::Command;

#[test]
fn python_binding_installs_and_passes_its_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::env::current_exe().unwrap().parent().unwrap().join("libibex.so");
    assert!(lib.is_file(), "{} missing", lib.display());
    // install from a copy: setuptools writes build/ and *.egg-info next to the sources
    let src = tempfile::tempdir().unwrap();
    for rel in ["pyproject.toml", "ibex/__init__.py"] {
        let to = src.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join("bindings/python").join(rel), &to).unwrap();
    }
    let site = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target"])
        .arg(site.path())
        .arg(src.path())
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "pip install failed:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(site.path().join("ibex/__init__.py").is_file());
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("bindings/python/tests"))
        .current_dir(cache.path())
        .env("PYTHONPATH", site.path())
        .env("IBEX_LIBRARY", &lib)
        .output()
        .expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(out.status.success(), "pytest failed:\n{text}");
    assert!(text.contains(" passed"), "{text}");
    // the tests ran against the installed copy, not the checkout
    let check = Command::new("python3")
        .args(["-c", "import ibex, sys; print(ibex.__file__)"])
        .env("PYTHONPATH", site.path())
        .env("IBEX_LIBRARY", &lib)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&check.stdout).starts_with(&site.path().display().to_string()));
}
