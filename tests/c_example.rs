//! Builds `examples/c/m2ib.c` against the shared and the static library and runs both.

mod common;
use common::{lib_dir, run_ok as run};
use std::path::Path;
use std::process::Command;

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

#[test]
fn c_example_runs_with_shared_and_static_library() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = lib_dir();
    let so = lib.join("libibex.so");
    let a = lib.join("libibex.a");
    assert!(so.is_file() && a.is_file(), "libibex.so / libibex.a missing: {} / {}", so.display(), a.display());
    let tmp = tempfile::tempdir().unwrap();
    let src = root.join("examples/c/m2ib.c");
    let inc = root.join("include");
    let shared = tmp.path().join("m2ib_shared");
    run(
        Command::new(cc())
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&shared)
            .arg(&src)
            .arg("-I")
            .arg(&inc)
            .arg("-L")
            .arg(&lib)
            .args(["-libex", "-lm"]),
        "compile against libibex.so",
    );
    let static_bin = tmp.path().join("m2ib_static");
    run(
        Command::new(cc())
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&static_bin)
            .arg(&src)
            .arg("-I")
            .arg(&inc)
            .arg(&a)
            .args(["-lpthread", "-ldl", "-lm", "-lstdc++"]),
        "compile against libibex.a",
    );
    for (bin, what) in [(&shared, "shared"), (&static_bin, "static")] {
        let png = tmp.path().join(format!("{what}.png"));
        let out = run(
            Command::new(bin)
                .current_dir(root)
                .env("LD_LIBRARY_PATH", &lib)
                .args(["models/fmnist-clip", "examples/images/four_items.png", "a sandal"])
                .arg(&png),
            &format!("m2ib example ({what})"),
        );
        assert!(out.contains("sandal"), "{out}");
        assert!(out.contains("\nok\n"), "{out}");
        let img = image::open(&png).unwrap();
        assert_eq!((img.width(), img.height()), (64, 64));
    }
}
