//! The C# binding (bindings/csharp/Ibex.cs): its console test program compiled with Debian's
//! Mono compiler (`mcs`, C# 7.2) and run with `mono` against this build's libibex.so.

mod common;

use common::{lib_dir, run_ok};
use std::path::Path;
use std::process::Command;

#[test]
fn csharp_binding_tests_pass_on_mono() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("Tests.exe");
    run_ok(
        Command::new("mcs")
            .args(["-langversion:7.2", "-warnaserror+", "-r:System.Core"])
            .arg(format!("-out:{}", exe.display()))
            .arg(root.join("bindings/csharp/Ibex.cs"))
            .arg(root.join("bindings/csharp/tests/Tests.cs")),
        "mcs (Debian mono-mcs must be installed: .ci/run installs it)",
    );
    let out = run_ok(Command::new("mono").arg(&exe).arg(root).env("LD_LIBRARY_PATH", lib_dir()), "mono Tests.exe");
    let last = out.lines().rfind(|l| l.contains(" passed, ")).unwrap_or("").to_string();
    assert!(last.ends_with(" passed, 0 failed") && !last.starts_with("0 "), "{out}");
    eprintln!("C#: {last}");
}
