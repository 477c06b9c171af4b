//! Choosing the compute device from a user string (`cpu`, `cuda`, `cuda:N`).

use crate::error::{Error, Result};
use candle_core::Device;

/// Parses `cpu`, `cuda` or `cuda:N` into a candle [`Device`].
///
/// `cuda` needs a build with the `cuda` feature; without it the error says so.
pub fn parse_device(spec: &str) -> Result<Device> {
    let s = spec.trim().to_ascii_lowercase();
    if s.is_empty() || s == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = if s == "cuda" || s == "gpu" {
        0
    } else if let Some(n) = s.strip_prefix("cuda:") {
        n.parse::<usize>().map_err(|_| Error::invalid(format!("device '{spec}': expected cuda:N with N a number")))?
    } else {
        return Err(Error::invalid(format!("unknown device '{spec}': use cpu, cuda or cuda:N")));
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(Error::Unsupported(format!(
            "device '{spec}': this build of ibex has no CUDA support (rebuild with --features cuda)"
        )));
    }
    Ok(Device::new_cuda(ordinal)?)
}

/// A short human-readable name of a device (`cpu`, `cuda:0`).
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("").unwrap().is_cpu());
        let e = parse_device("tpu:0").unwrap_err().to_string();
        assert!(e.contains("unknown device"), "{e}");
        assert!(parse_device("cuda:x").is_err());
        if !candle_core::utils::cuda_is_available() {
            let e = parse_device("cuda:0").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
