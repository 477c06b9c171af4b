//! Adam on one parameter tensor, with PyTorch's update rule (`torch.optim.Adam`, single tensor
//! path) so trajectories match the reference implementations; with decoupled weight decay it
//! is `torch.optim.AdamW`.

use crate::error::Result;
use candle_core::Tensor;

/// Adam state for one tensor.
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    step: i32,
    m: Tensor,
    v: Tensor,
}

impl Adam {
    /// Adam with betas (0.9, 0.999) and eps 1e-8 (PyTorch's defaults) for a parameter shaped like `like`.
    pub fn new(like: &Tensor, lr: f64) -> Result<Self> {
        Ok(Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            step: 0,
            m: like.zeros_like()?,
            v: like.zeros_like()?,
        })
    }

    /// AdamW: before each step the parameter shrinks by `lr · weight_decay` (PyTorch's
    /// `torch.optim.AdamW`; 0 is plain Adam).
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Sets the learning rate of the next steps (schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Returns the updated parameter.
    pub fn step(&mut self, param: &Tensor, grad: &Tensor) -> Result<Tensor> {
        self.step += 1;
        // m.lerp_(g, 1 - beta1); v = beta2 v + (1 - beta2) g^2
        self.m = (&self.m + ((grad - &self.m)? * (1.0 - self.beta1))?)?;
        self.v = ((&self.v * self.beta2)? + (grad.sqr()? * (1.0 - self.beta2))?)?;
        let bc1 = 1.0 - self.beta1.powi(self.step);
        let bc2 = 1.0 - self.beta2.powi(self.step);
        let step_size = self.lr / bc1;
        let denom = ((self.v.sqrt()? / bc2.sqrt())? + self.eps)?;
        let param =
            if self.weight_decay != 0.0 { (param * (1.0 - self.lr * self.weight_decay))? } else { param.clone() };
        Ok((param - ((&self.m / denom)? * step_size)?)?)
    }

    /// Adds the moments and the step count to `map` as `{prefix}.adam_m`, `.adam_v`, `.adam_step`.
    pub fn save_into(&self, prefix: &str, map: &mut std::collections::HashMap<String, Tensor>) -> Result<()> {
        map.insert(format!("{prefix}.adam_m"), self.m.clone());
        map.insert(format!("{prefix}.adam_v"), self.v.clone());
        map.insert(format!("{prefix}.adam_step"), Tensor::new(&[self.step as i64], self.m.device())?);
        Ok(())
    }

    /// Restores what [`Adam::save_into`] wrote, for a parameter shaped like `like`.
    pub fn load_from(
        &mut self,
        prefix: &str,
        map: &std::collections::HashMap<String, Tensor>,
        like: &Tensor,
    ) -> Result<()> {
        let get = |k: &str| {
            map.get(&format!("{prefix}.{k}")).ok_or_else(|| {
                crate::error::Error::invalid(format!("no optimiser state '{prefix}.{k}' to resume from"))
            })
        };
        let (m, v) = (get("adam_m")?, get("adam_v")?);
        if m.dims() != like.dims() || v.dims() != like.dims() {
            return Err(crate::error::Error::invalid(format!(
                "optimiser state '{prefix}' is not shaped like its parameter"
            )));
        }
        let step = get("adam_step")?.to_dtype(candle_core::DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
        self.step = step.first().copied().unwrap_or(0).clamp(0, i32::MAX as i64) as i32;
        self.m = m.to_dtype(like.dtype())?.to_device(like.device())?;
        self.v = v.to_dtype(like.dtype())?.to_device(like.device())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn first_step_is_a_sign_step_of_size_lr() {
        let p = Tensor::new(&[5f32, 5.0, 5.0], &Device::Cpu).unwrap();
        let g = Tensor::new(&[0.3f32, -2.0, 1e-3], &Device::Cpu).unwrap();
        let mut adam = Adam::new(&p, 1.0).unwrap();
        let p1 = adam.step(&p, &g).unwrap().to_vec1::<f32>().unwrap();
        for (x, want) in p1.iter().zip([4.0f32, 6.0, 4.0]) {
            assert!((x - want).abs() < 1e-4, "{p1:?}");
        }
        // second step with the same gradient: still ~lr in the sign direction
        let p2 = adam.step(&Tensor::new(&p1[..], &Device::Cpu).unwrap(), &g).unwrap().to_vec1::<f32>().unwrap();
        assert!((p2[0] - 3.0).abs() < 1e-3 && (p2[1] - 7.0).abs() < 1e-3, "{p2:?}");
    }
}
