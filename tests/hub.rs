//! Resolving a Hugging Face id from a local cache laid out like the hub's, and the offline error.

mod common;
use common::*;
use ibex::hub::{find_in_cache, hf_cache_dir, resolve_model};

fn snapshot(cache: &std::path::Path, id: &str, rev: &str, files: &[&str]) -> std::path::PathBuf {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(&snap).unwrap();
    for f in files {
        std::fs::copy(fmnist_model().join(f), snap.join(f)).unwrap();
    }
    snap
}

// One test function: it sets process-wide environment variables.
#[test]
fn cache_layout_env_precedence_and_offline_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let full = ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"];
    let old = snapshot(&cache, "acme/tiny-clip", "1111111111", &full);
    let new = snapshot(&cache, "acme/tiny-clip", "2222222222", &full);
    // an incomplete snapshot is never chosen
    snapshot(&cache, "acme/tiny-clip", "3333333333", &["config.json"]);
    let refs = cache.join("models--acme--tiny-clip").join("refs");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::write(refs.join("main"), "1111111111\n").unwrap();
    assert_eq!(find_in_cache(&cache, "acme/tiny-clip"), Some(old.clone()), "refs/main wins");
    std::fs::remove_file(refs.join("main")).unwrap();
    let t = std::time::SystemTime::now();
    std::fs::File::open(&new).unwrap().set_modified(t).unwrap();
    std::fs::File::open(&old).unwrap().set_modified(t - std::time::Duration::from_secs(3600)).unwrap();
    assert_eq!(find_in_cache(&cache, "acme/tiny-clip"), Some(new.clone()), "newest complete snapshot");

    // environment precedence: HF_HUB_CACHE > HUGGINGFACE_HUB_CACHE > HF_HOME/hub > ~/.cache
    for v in ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"] {
        std::env::remove_var(v);
    }
    std::env::set_var("HOME", tmp.path());
    assert_eq!(hf_cache_dir(), tmp.path().join(".cache/huggingface/hub"));
    std::env::set_var("HF_HOME", tmp.path());
    assert_eq!(hf_cache_dir(), cache);
    std::env::set_var("HUGGINGFACE_HUB_CACHE", "/elsewhere");
    assert_eq!(hf_cache_dir(), std::path::PathBuf::from("/elsewhere"));
    std::env::set_var("HF_HUB_CACHE", &cache);
    assert_eq!(hf_cache_dir(), cache);

    // an id resolves to its snapshot, and the model loads from there
    assert_eq!(resolve_model("acme/tiny-clip").unwrap(), new);
    let m = ibex::models::Model::load(None, &new, &candle_core::Device::Cpu).unwrap();
    assert_eq!(m.kind(), "clip");
    // a directory argument is used as is
    assert_eq!(resolve_model(fmnist_model().to_str().unwrap()).unwrap(), fmnist_model());

    // offline and not cached: a clear error naming the files and the cache folder
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let e = resolve_model("openai/clip-vit-base-patch32").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ibex::Error::NotFound(_)), "{msg}");
    for want in [
        "openai/clip-vit-base-patch32",
        "model.safetensors",
        "models--openai--clip-vit-base-patch32",
        cache.to_str().unwrap(),
    ] {
        assert!(msg.contains(want), "missing {want:?} in: {msg}");
    }
    // not an id and not a directory
    assert!(resolve_model("./no/such/dir").unwrap_err().to_string().contains("does not exist"));
    std::env::remove_var("HF_HUB_OFFLINE");
}
