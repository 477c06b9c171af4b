//! Resolving a model argument: a local directory, or a Hugging Face model id found in the local
//! HF cache (and downloaded with `hf-hub` when the network allows it).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// What a dual-encoder model directory needs: one file of each group (HF CLIP / SigLIP
/// `config.json` or open_clip's config; the weights in any of the families' formats; a
/// `tokenizer.json`, SigLIP's `spiece.model` or BERT's `vocab.txt`).
const CONFIGS: &[&str] = &["open_clip_config.json", "config.json"];
const WEIGHTS: &[&str] =
    &["open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin"];
const TOKENIZERS: &[&str] = &["tokenizer.json", "spiece.model", "vocab.txt"];
const OPTIONAL: &[&str] = &["preprocessor_config.json", "tokenizer_config.json", "special_tokens_map.json"];

/// The HF hub cache directory: `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `HF_HOME/hub`, or
/// `~/.cache/huggingface/hub`, in that order.
pub fn hf_cache_dir() -> PathBuf {
    for var in ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return PathBuf::from(v);
        }
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("huggingface").join("hub")
}

/// Whether `s` looks like an HF id (`org/name` or `name`, no path syntax).
fn looks_like_hf_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    !s.is_empty()
        && parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

fn snapshot_complete(dir: &Path) -> bool {
    [CONFIGS, WEIGHTS, TOKENIZERS].iter().all(|group| group.iter().any(|f| dir.join(f).is_file()))
}

/// Looks `id` up in the cache `cache`: the snapshot that `refs/main` names, else the most
/// recently modified complete snapshot.
pub fn find_in_cache(cache: &Path, id: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let dir = snapshots.join(rev.trim());
        if snapshot_complete(&dir) {
            return Some(dir);
        }
    }
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(&snapshots).ok()?.flatten() {
        let p = entry.path();
        if !snapshot_complete(&p) {
            continue;
        }
        let t = entry.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
        if best.as_ref().map_or(true, |(bt, _)| t > *bt) {
            best = Some((t, p));
        }
    }
    best.map(|(_, p)| p)
}

fn offline() -> bool {
    ["HF_HUB_OFFLINE", "IBEX_OFFLINE"]
        .iter()
        .any(|v| std::env::var(v).map(|s| !s.is_empty() && s != "0").unwrap_or(false))
}

fn download(cache: &Path, id: &str) -> std::result::Result<PathBuf, String> {
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(false)
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.model(id.to_string());
    let mut dir = None;
    // one file of each group, the first that exists, in order of preference
    for group in [CONFIGS, WEIGHTS, TOKENIZERS] {
        let mut last_err = String::new();
        let mut got = false;
        for f in group {
            match repo.get(f) {
                Ok(p) => {
                    dir = p.parent().map(Path::to_path_buf);
                    got = true;
                    break;
                }
                Err(e) => last_err = format!("{f}: {e}"),
            }
        }
        if !got {
            return Err(last_err);
        }
    }
    for f in OPTIONAL {
        let _ = repo.get(f);
    }
    dir.ok_or_else(|| "empty download".to_string())
}

/// Resolves a model argument to a directory: an existing directory is used as is; otherwise
/// `arg` is taken as an HF id and looked up in the HF cache, then downloaded unless offline
/// (`HF_HUB_OFFLINE=1`). When nothing works the error says what to fetch and where to put it.
pub fn resolve_model(arg: &str) -> Result<PathBuf> {
    let p = Path::new(arg);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    if p.exists() {
        return Err(Error::invalid(format!("model '{arg}' is a file: pass the model directory (with config.json)")));
    }
    if !looks_like_hf_id(arg) {
        return Err(Error::NotFound(format!("model directory '{arg}' does not exist")));
    }
    let cache = hf_cache_dir();
    if let Some(dir) = find_in_cache(&cache, arg) {
        return Ok(dir);
    }
    let how = format!(
        "download it on a connected machine (e.g. `huggingface-cli download {arg}`: config.json or open_clip_config.json, \
         the weights (model.safetensors, open_clip_model.safetensors, …), tokenizer.json / spiece.model / vocab.txt, \
         preprocessor_config.json) and copy the cache folder \
         models--{} into {}, or pass the directory that holds those files",
        arg.replace('/', "--"),
        cache.display()
    );
    if offline() {
        return Err(Error::NotFound(format!(
            "model '{arg}' is not in the Hugging Face cache {} and downloads are off (HF_HUB_OFFLINE): {how}",
            cache.display()
        )));
    }
    download(&cache, arg).map_err(|e| {
        Error::NotFound(format!(
            "model '{arg}' is not in the Hugging Face cache {} and could not be downloaded ({e}): {how}",
            cache.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_id_syntax() {
        assert!(looks_like_hf_id("openai/clip-vit-base-patch32"));
        assert!(looks_like_hf_id("gpt2"));
        assert!(!looks_like_hf_id("../models/x"));
        assert!(!looks_like_hf_id("/abs/path"));
        assert!(!looks_like_hf_id("a/b/c"));
    }
}
