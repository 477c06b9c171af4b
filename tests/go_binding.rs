//! The Go binding (bindings/go): `go test` with Debian's Go, offline (standard library only,
//! GOPROXY=off), linked against this build's libibex.so, with the strict cgo pointer checks
//! on (GODEBUG=cgocheck=2).

mod common;

use common::{lib_dir, run_ok};
use std::path::Path;
use std::process::Command;

#[test]
fn go_binding_tests_pass_offline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = lib_dir();
    let cache = lib.parent().unwrap().join("go");
    let out = run_ok(
        Command::new("go")
            .args(["test", "-count=1", "-v", "./..."])
            .current_dir(root.join("bindings/go"))
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("GOCACHE", cache.join("cache"))
            .env("GOPATH", cache.join("path"))
            .env("GODEBUG", "cgocheck=2")
            .env("CGO_LDFLAGS", format!("-L{0} -Wl,-rpath,{0}", lib.display()))
            .env("IBEX_ROOT", root),
        "go test (Debian golang-go must be installed: .ci/run installs it)",
    );
    let passes = out.lines().filter(|l| l.starts_with("--- PASS")).count();
    assert!(out.contains("\nok ") && passes >= 9 && !out.contains("--- FAIL"), "{out}");
    eprintln!("Go: {passes} tests passed");
}
