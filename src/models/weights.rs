//! Reading named tensors from safetensors or PyTorch (`.bin`/`.pt`) checkpoints, with errors
//! that name the file and the tensor.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// All tensors of one checkpoint, converted to f32 on one device.
pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Loads a `.safetensors` file, or a PyTorch pickle (`.bin`, `.pt`, `.pth`) through candle's
    /// pickle reader.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")));
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let list: Vec<(String, Tensor)> = if ext == "safetensors" {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .map_err(|e| Error::format(path, format!("not a valid safetensors file ({e})")))?;
            let mut out = Vec::with_capacity(st.len());
            for (name, view) in st.tensors() {
                let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)
                    .map_err(|e| Error::format(path, format!("tensor '{name}': {e}")))?;
                out.push((name, t));
            }
            out
        } else {
            candle_core::pickle::read_all(path)
                .map_err(|e| Error::format(path, format!("not a readable PyTorch checkpoint ({e})")))?
        };
        let mut tensors = HashMap::with_capacity(list.len());
        for (name, t) in list {
            let t = if t.dtype() == DType::F32 { t } else { t.to_dtype(DType::F32)? };
            tensors.insert(name, t.to_device(device)?);
        }
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

    /// The tensor `name`, checked to have exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::format(&self.path, format!("missing tensor '{name}' (expected shape {shape:?})")))?;
        if t.dims() != shape {
            return Err(Error::format(
                &self.path,
                format!("tensor '{name}' has shape {:?}, expected {shape:?} from config.json", t.dims()),
            ));
        }
        let t = t.clone();
        if t.elem_count() > 0 {
            let finite = t.flatten_all()?.abs()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?.is_finite();
            if !finite {
                return Err(Error::format(&self.path, format!("tensor '{name}' contains NaN or infinity")));
            }
        }
        Ok(t)
    }
}

impl Weights {
    /// Writes all tensors to a safetensors file (test models, converted checkpoints).
    pub fn save(&self, path: &Path) -> Result<()> {
        candle_core::safetensors::save(&self.tensors, path)
            .map_err(|e| Error::format(path, format!("cannot write: {e}")))
    }
}
