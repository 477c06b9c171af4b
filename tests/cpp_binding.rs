//! The C++ binding (bindings/cpp/ibex.hpp): its test program compiled warning-free with g++ and
//! clang++ (`-std=c++17 -Wall -Wextra -Wpedantic -Werror`) and run, again under
//! AddressSanitizer and UndefinedBehaviorSanitizer; then installed with `install.sh` and used
//! through `find_package(ibex)` (CMake) and `pkg-config --cflags --libs ibex`.

mod common;

use common::{lib_dir, run_ok};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const WARNINGS: [&str; 5] = ["-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror"];

/// Compiles the binding's test program with `compiler` and `extra` flags against this build's
/// libibex.so; returns the binary.
fn build(compiler: &str, extra: &[&str], out: &Path) -> PathBuf {
    let lib = lib_dir();
    let bin = out.join(format!("test_ibex_{}", compiler.replace('+', "p")));
    run_ok(
        Command::new(compiler)
            .args(WARNINGS)
            .args(extra)
            .arg("-o")
            .arg(&bin)
            .arg(root().join("bindings/cpp/tests/test_ibex.cpp"))
            .arg("-I")
            .arg(root().join("include"))
            .arg("-I")
            .arg(root().join("bindings/cpp"))
            .arg("-L")
            .arg(&lib)
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .args(["-libex", "-lpthread"]),
        &format!("{compiler} {}", extra.join(" ")),
    );
    bin
}

fn run_tests(bin: &Path, env: &[(&str, &str)]) -> String {
    let out = run_ok(Command::new(bin).arg(root()).envs(env.iter().copied()), &bin.display().to_string());
    let last = out.lines().rfind(|l| l.contains(" passed, ")).unwrap_or("").to_string();
    assert!(last.ends_with(" passed, 0 failed") && !last.starts_with("0 "), "{out}");
    eprintln!("{}: {last}", bin.display());
    out
}

#[test]
fn cpp_binding_tests_pass_with_gcc_and_clang() {
    let tmp = tempfile::tempdir().unwrap();
    for compiler in ["g++", "clang++"] {
        let bin = build(compiler, &["-O1"], tmp.path());
        run_tests(&bin, &[]);
    }
}

#[test]
fn cpp_binding_tests_pass_under_asan_and_ubsan() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = build(
        "g++",
        &["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"],
        tmp.path(),
    );
    // Leak checking on: every handle the binding owns must be freed. The Rust library itself
    // is not instrumented; its allocations go through the intercepted malloc.
    run_tests(&bin, &[("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1"), ("UBSAN_OPTIONS", "print_stacktrace=1")]);
}

#[test]
fn installed_library_works_with_cmake_and_pkg_config() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    run_ok(Command::new("bash").arg(root().join("bindings/cpp/install.sh")).arg(&prefix).arg(lib_dir()), "install.sh");
    let cat = root().join("examples/images/chelsea.png");
    let model = root().join("models/efficientnet-lite0");
    // CMake: find_package(ibex 0.1) and the imported target.
    let build = tmp.path().join("build");
    run_ok(
        Command::new("cmake")
            .arg("-S")
            .arg(root().join("bindings/cpp/example"))
            .arg("-B")
            .arg(&build)
            .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display())),
        "cmake configure",
    );
    run_ok(Command::new("cmake").arg("--build").arg(&build), "cmake build");
    let png = tmp.path().join("cmake.png");
    // No LD_LIBRARY_PATH: the imported target gives the executable its RPATH.
    let out = run_ok(Command::new(build.join("explain_cat")).arg(&model).arg(&cat).arg(&png), "explain_cat (CMake)");
    assert!(out.contains("saliency (bits_per_pixel) 224x224"), "{out}");
    assert_eq!(image::open(&png).unwrap().width(), 224);
    // pkg-config: ibex.pc links libibex.so; ibex-static.pc links libibex.a, so the program
    // needs no libibex at run time.
    for (pc, shared) in [("ibex", true), ("ibex-static", false)] {
        let flags = run_ok(
            Command::new("pkg-config")
                .args(["--cflags", "--libs", pc])
                .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")),
            &format!("pkg-config {pc}"),
        );
        let bin = tmp.path().join(format!("explain_cat_{pc}"));
        run_ok(
            Command::new("g++")
                .args(WARNINGS)
                .arg("-o")
                .arg(&bin)
                .arg(root().join("bindings/cpp/example/explain_cat.cpp"))
                .args(flags.split_whitespace()),
            &format!("g++ with {pc} flags"),
        );
        let ldd = run_ok(Command::new("ldd").arg(&bin), "ldd");
        assert_eq!(ldd.contains("libibex"), shared, "{pc}: {ldd}");
        let out = run_ok(
            Command::new(&bin).arg(&model).arg(&cat).arg(tmp.path().join(format!("{pc}.png"))),
            &format!("explain_cat ({pc})"),
        );
        assert!(out.contains("224x224"), "{out}");
    }
}
