//! Reading named tensors from safetensors or PyTorch (`.bin`/`.pt`/`.pth`) checkpoints, with
//! errors that name the file and the tensor.
//!
//! Loading is lean: a safetensors file is memory-mapped and converted tensor by tensor, and
//! each tensor's pages are released as soon as it is converted, so the peak memory stays near
//! one copy of the model (not the file read whole plus a copy of every tensor). A PyTorch
//! checkpoint may hold its `state_dict` at the top level or under `model_state_dict` /
//! `state_dict`, with or without the `module.` prefix that `DataParallel` adds.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// All tensors of one checkpoint, converted to f32 on one device.
pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
}

fn to_f32(t: Tensor, device: &Device) -> Result<Tensor> {
    let t = if t.dtype() == DType::F32 { t } else { t.to_dtype(DType::F32)? };
    Ok(t.to_device(device)?)
}

/// Reads a safetensors file through a memory map, one tensor at a time.
fn load_safetensors(path: &Path, device: &Device) -> Result<Vec<(String, Tensor)>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and private; a file truncated under us can fault, as with
    // any mmap-based loader (candle, safetensors); checkpoints are not modified while loading.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&mmap)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file ({e})")))?;
    let base = mmap.as_ptr() as usize;
    let mut out = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)
            .map_err(|e| Error::format(path, format!("tensor '{name}': {e}")))?;
        out.push((name, to_f32(t, device)?));
        // give the converted tensor's file pages back (whole pages inside its byte range)
        #[cfg(unix)]
        {
            let data = view.data();
            let page = 4096;
            let start = (data.as_ptr() as usize - base).div_ceil(page) * page;
            let end = (data.as_ptr() as usize - base + data.len()) / page * page;
            if end > start {
                // SAFETY: DONTNEED on a read-only private file mapping only drops clean pages;
                // a later read would fault them back in from the file. No reference into this
                // range is used again (the tensor was copied out above).
                let _ = unsafe { mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
            }
        }
    }
    Ok(out)
}

/// Reads a PyTorch checkpoint: a bare state dict, or one nested under a common key.
fn load_pickle(path: &Path, device: &Device) -> Result<Vec<(String, Tensor)>> {
    // the first error (from the top level) says most; a file that read but held no tensors
    // under any of the keys gets its own message
    let mut first_err = None;
    let mut readable = false;
    for key in [None, Some("model_state_dict"), Some("state_dict"), Some("model")] {
        match candle_core::pickle::read_all_with_key(path, key) {
            Ok(list) if !list.is_empty() => {
                return list.into_iter().map(|(n, t)| Ok((n, to_f32(t, device)?))).collect();
            }
            Ok(_) => readable = true,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(Error::format(
        path,
        match first_err {
            Some(e) if !readable => format!("not a readable PyTorch checkpoint ({e})"),
            _ => "no tensors found (looked at the top level and under model_state_dict, state_dict, model)".into(),
        },
    ))
}

impl Weights {
    /// Loads a `.safetensors` file, or a PyTorch pickle (`.bin`, `.pt`, `.pth`) through candle's
    /// pickle reader. A `module.` prefix on every name is removed.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")));
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let list = if ext == "safetensors" { load_safetensors(path, device)? } else { load_pickle(path, device)? };
        let strip = !list.is_empty() && list.iter().all(|(n, _)| n.starts_with("module."));
        let tensors =
            list.into_iter().map(|(n, t)| (if strip { n["module.".len()..].to_string() } else { n }, t)).collect();
        Ok(Weights { path: path.to_path_buf(), tensors })
    }

    /// Builds from tensors in memory (tests, random-weight benchmarks).
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Self {
        Weights { path: PathBuf::from("<memory>"), tensors }
    }

    /// The file these weights came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a tensor of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The shape of tensor `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.dims())
    }

    /// The shape of tensor `name`; an error naming the tensor (and what it was needed for)
    /// when the checkpoint has none.
    pub fn dims(&self, name: &str, what: &str) -> Result<Vec<usize>> {
        let s = self
            .shape(name)
            .map(<[usize]>::to_vec)
            .ok_or_else(|| Error::format(&self.path, format!("missing tensor '{name}' ({what})")))?;
        if s.is_empty() || s.contains(&0) {
            return Err(Error::format(&self.path, format!("tensor '{name}' has shape {s:?} ({what})")));
        }
        Ok(s)
    }

    /// The number of layers `{prefix}0.` … `{prefix}{n-1}.` of a checkpoint: an error naming
    /// the prefix when there are none, or when the numbering has a gap (a missing layer).
    pub fn layer_count(&self, prefix: &str) -> Result<usize> {
        let seen = self.indices(prefix);
        let n = (0..).take_while(|i| seen.contains(i)).count();
        let max = seen.last().copied();
        match max {
            None => Err(Error::format(&self.path, format!("no layers '{prefix}N.*' in the checkpoint"))),
            Some(m) if m + 1 != n => Err(Error::format(
                &self.path,
                format!("layer '{prefix}{m}.' exists but '{prefix}{n}.' is missing: the checkpoint is incomplete"),
            )),
            Some(_) => Ok(n),
        }
    }

    fn indices(&self, prefix: &str) -> std::collections::BTreeSet<usize> {
        let mut seen = std::collections::BTreeSet::new();
        for n in self.tensors.keys() {
            if let Some(rest) = n.strip_prefix(prefix) {
                if let Some((i, _)) = rest.split_once('.') {
                    if let Ok(i) = i.parse::<usize>() {
                        seen.insert(i);
                    }
                }
            }
        }
        seen
    }

    /// The first tensor name that starts with `prefix` and contains any of `parts`: a
    /// feature of the checkpoint this version does not implement (layer scale, …).
    pub fn find_any(&self, prefix: &str, parts: &[&str]) -> Option<&str> {
        let mut names: Vec<&str> = self.names().filter(|n| n.starts_with(prefix)).collect();
        names.sort_unstable();
        names.into_iter().find(|n| parts.iter().any(|p| n.contains(p)))
    }

    /// Removes a tensor (a stale buffer such as BERT's `position_ids`).
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    /// The tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor `name`, checked to have exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::format(&self.path, format!("missing tensor '{name}' (expected shape {shape:?})")))?;
        if t.dims() != shape {
            return Err(Error::format(
                &self.path,
                format!("tensor '{name}' has shape {:?}, expected {shape:?}", t.dims()),
            ));
        }
        let t = t.clone();
        if !crate::numerics::all_finite(&t)? {
            return Err(Error::format(&self.path, format!("tensor '{name}' contains NaN or infinity")));
        }
        Ok(t)
    }
}

impl Weights {
    /// The tensors under `prefix` (e.g. `_net.`), with the prefix removed: a sub-module's
    /// weights, as the loaders of its parts expect them.
    pub fn scoped(&self, prefix: &str) -> Weights {
        let tensors = self
            .tensors
            .iter()
            .filter_map(|(n, t)| n.strip_prefix(prefix).map(|rest| (rest.to_string(), t.clone())))
            .collect();
        Weights { path: self.path.clone(), tensors }
    }

    /// Writes all tensors to a safetensors file (test models, converted checkpoints).
    pub fn save(&self, path: &Path) -> Result<()> {
        candle_core::safetensors::save(&self.tensors, path)
            .map_err(|e| Error::format(path, format!("cannot write: {e}")))
    }
}
