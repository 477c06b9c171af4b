//! The Python binding (`bindings/python`): `pip install` of the package from this checkout into
//! a temporary directory, then its pytest suite against this build's `libibex.so` (found through
//! `IBEX_LIBRARY`). Needs `python3` with `numpy`, `pytest` and `setuptools` (`.ci/run` installs them).

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn python_binding_installs_and_passes_its_tests() {
    let lib = common::lib_dir().join("libibex.so");
    assert!(lib.is_file(), "{} missing", lib.display());
    let site = common::install_python_binding();
    let (ok, text) = pytest(site.path(), &lib, &[]);
    assert!(ok, "pytest failed:\n{text}");
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

/// The same suite with AddressSanitizer's runtime preloaded into Python (the library is not
/// instrumented, but every malloc/free, its own and the binding's, goes through ASan, which
/// catches double frees, frees of foreign pointers and use of freed handles' memory on the
/// intercepted paths). Python's own allocator is switched to malloc so ASan sees it; leak
/// checking is off because CPython keeps interned objects alive at exit by design.
#[test]
fn python_binding_tests_pass_with_asan_preloaded() {
    let lib = common::lib_dir().join("libibex.so");
    let asan = common::run_ok(Command::new("gcc").arg("-print-file-name=libasan.so"), "gcc -print-file-name");
    let asan = asan.trim();
    assert!(Path::new(asan).is_file(), "libasan.so not found ({asan}): gcc's sanitizer runtime is needed");
    let site = common::install_python_binding();
    let env = [("LD_PRELOAD", asan), ("PYTHONMALLOC", "malloc"), ("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1")];
    let (ok, text) = pytest(site.path(), &lib, &env);
    assert!(ok && text.contains(" passed") && !text.contains("ERROR: AddressSanitizer"), "{text}");
}

/// Runs the binding's pytest suite against the installed copy in `site` and `lib`.
fn pytest(site: &Path, lib: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("bindings/python/tests"))
        .current_dir(cache.path())
        .env("PYTHONPATH", site)
        .env("IBEX_LIBRARY", lib)
        .envs(env.iter().copied())
        .output()
        .expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    (out.status.success(), text)
}
