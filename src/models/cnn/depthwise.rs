//! Depthwise convolution (one k×k filter per channel, `groups = channels`) with arbitrary
//! stride and asymmetric zero padding: forward, input gradient and weight gradient.
//!
//! candle 0.11 runs a grouped convolution as one convolution per channel followed by a
//! concatenation, and its backward builds a zero tensor per group; neither is usable for
//! MBConv blocks with 1152 channels. On the CPU this module runs a direct loop over channel
//! planes (threads over planes); on other devices it runs the same arithmetic as k² shifted,
//! strided slices with candle ops. The two paths are checked against each other and against
//! finite differences in the tests.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// Padding `[top, bottom, left, right]` in pixels.
pub type Pads = [usize; 4];

/// Geometry of one depthwise convolution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DwGeometry {
    pub kernel: usize,
    pub stride: usize,
    pub pads: Pads,
}

impl DwGeometry {
    /// Output height and width for an `h × w` input.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let [t, b, l, r] = self.pads;
        let (hp, wp) = (h + t + b, w + l + r);
        if hp < self.kernel || wp < self.kernel || self.stride == 0 {
            return Err(Error::invalid(format!(
                "a {}x{} input (padded {hp}x{wp}) is too small for a {k}x{k} depthwise convolution",
                h,
                w,
                k = self.kernel
            )));
        }
        Ok(((hp - self.kernel) / self.stride + 1, (wp - self.kernel) / self.stride + 1))
    }
}

/// Runs `f(plane_index, out_plane)` for every plane of `out` (chunks of `plane` elements), on
/// candle's CPU worker pool when the work is large enough (so it neither oversubscribes the
/// cores nor waits behind candle's spinning workers).
fn for_planes<T: Send>(out: &mut [T], plane: usize, work: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let planes = out.len() / plane.max(1);
    if work < 100_000 || planes < 2 {
        for (i, p) in out.chunks_mut(plane).enumerate() {
            f(i, p);
        }
        return;
    }
    let base = out.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(planes, |range| {
        for i in range {
            // SAFETY: each plane index is handed to exactly one call, so the slices are
            // disjoint, and `out` outlives `execute_chunked`, which returns after all calls.
            let p = unsafe { std::slice::from_raw_parts_mut((base as *mut T).add(i * plane), plane) };
            f(i, p);
        }
    });
}

/// For each kernel column `b`: the output columns `j0..j1` whose input column
/// `j·s + b − pad_left` lies inside the row, and the input column of `j0`.
struct Columns {
    range: Vec<(usize, usize, usize)>,
}

impl Columns {
    fn new(k: usize, s: usize, pl: usize, w: usize, wo: usize) -> Self {
        let range = (0..k)
            .map(|b| {
                // ix = j·s + b − pl ∈ [0, w)
                let j0 = if b >= pl { 0 } else { (pl - b).div_ceil(s) }.min(wo);
                let j1 = if w + pl > b { ((w + pl - b - 1) / s + 1).min(wo) } else { 0 };
                let j1 = j1.max(j0);
                (j0, j1, (j0 * s + b).saturating_sub(pl))
            })
            .collect();
        Columns { range }
    }
}

trait Float: Copy + Send + Sync + Default + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> {
    fn from_tensor(t: &Tensor) -> Result<Vec<Self>>;
    fn to_tensor(v: Vec<Self>, dims: &[usize], dev: &Device) -> Result<Tensor>;
}
impl Float for f32 {
    fn from_tensor(t: &Tensor) -> Result<Vec<Self>> {
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }
    fn to_tensor(v: Vec<Self>, dims: &[usize], dev: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(v, dims, dev)?)
    }
}
impl Float for f64 {
    fn from_tensor(t: &Tensor) -> Result<Vec<Self>> {
        Ok(t.flatten_all()?.to_vec1::<f64>()?)
    }
    fn to_tensor(v: Vec<Self>, dims: &[usize], dev: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(v, dims, dev)?)
    }
}

fn check(x: &Tensor, weight: &Tensor, g: &DwGeometry) -> Result<(usize, usize, usize, usize)> {
    let (n, c, h, w) = x.dims4()?;
    let wd = weight.dims();
    if wd != [c, 1, g.kernel, g.kernel] {
        return Err(Error::invalid(format!(
            "depthwise weight {wd:?} does not fit {c} channels and kernel {}",
            g.kernel
        )));
    }
    Ok((n, c, h, w))
}

/// `y[n, c] = Σ_ab w[c, a, b] · x_pad[n, c, s·i + a, s·j + b]` for `x [N, C, H, W]` and
/// `weight [C, 1, k, k]`.
pub fn forward(x: &Tensor, weight: &Tensor, g: &DwGeometry) -> Result<Tensor> {
    let (n, c, h, w) = check(x, weight, g)?;
    let (ho, wo) = g.output_size(h, w)?;
    match (x.device(), x.dtype()) {
        (Device::Cpu, DType::F32) if wo < SMALL => small_forward::<f32>(x, weight, g, (n, c, h, w), (ho, wo)),
        (Device::Cpu, DType::F64) if wo < SMALL => small_forward::<f64>(x, weight, g, (n, c, h, w), (ho, wo)),
        (Device::Cpu, DType::F32) => cpu_forward::<f32>(x, weight, g, (n, c, h, w), (ho, wo)),
        (Device::Cpu, DType::F64) => cpu_forward::<f64>(x, weight, g, (n, c, h, w), (ho, wo)),
        _ => generic_forward(x, weight, g, (ho, wo)),
    }
}

/// The gradient with respect to the input: `dy [N, C, Ho, Wo]` → `dx [N, C, H, W]`.
pub fn backward_input(dy: &Tensor, weight: &Tensor, g: &DwGeometry, h: usize, w: usize) -> Result<Tensor> {
    let (n, c, ho, wo) = dy.dims4()?;
    if g.output_size(h, w)? != (ho, wo) || weight.dims() != [c, 1, g.kernel, g.kernel] {
        return Err(Error::invalid(format!(
            "depthwise backward: gradient {:?} does not fit input {h}x{w} and weight {:?}",
            dy.dims(),
            weight.dims()
        )));
    }
    match (dy.device(), dy.dtype()) {
        (Device::Cpu, DType::F32) if wo < SMALL => small_backward::<f32>(dy, weight, g, (n, c, h, w), (ho, wo)),
        (Device::Cpu, DType::F64) if wo < SMALL => small_backward::<f64>(dy, weight, g, (n, c, h, w), (ho, wo)),
        (Device::Cpu, DType::F32) => cpu_backward::<f32>(dy, weight, g, (n, c, h, w), (ho, wo)),
        (Device::Cpu, DType::F64) => cpu_backward::<f64>(dy, weight, g, (n, c, h, w), (ho, wo)),
        _ => generic_backward(dy, weight, g, (h, w)),
    }
}

fn cpu_forward<T: Float>(
    x: &Tensor,
    weight: &Tensor,
    g: &DwGeometry,
    (n, c, h, w): (usize, usize, usize, usize),
    (ho, wo): (usize, usize),
) -> Result<Tensor> {
    let xs = T::from_tensor(x)?;
    let ws = T::from_tensor(&weight.to_dtype(x.dtype())?)?;
    let (k, s, [pt, _, pl, _]) = (g.kernel, g.stride, g.pads);
    let mut out = vec![T::default(); n * c * ho * wo];
    let cols = Columns::new(k, s, pl, w, wo);
    for_planes(&mut out, ho * wo, n * c * ho * wo * k * k, |p, op| {
        let ch = p % c;
        let xp = &xs[p * h * w..(p + 1) * h * w];
        let wk = &ws[ch * k * k..(ch + 1) * k * k];
        for i in 0..ho {
            let orow = &mut op[i * wo..(i + 1) * wo];
            for a in 0..k {
                let iy = (i * s + a) as isize - pt as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let row = &xp[iy as usize * w..(iy as usize + 1) * w];
                for b in 0..k {
                    let (j0, j1, x0) = cols.range[b];
                    let wv = wk[a * k + b];
                    if s == 1 {
                        for (o, &v) in orow[j0..j1].iter_mut().zip(&row[x0..x0 + (j1 - j0)]) {
                            *o = *o + wv * v;
                        }
                    } else {
                        for (jj, o) in orow[j0..j1].iter_mut().enumerate() {
                            *o = *o + wv * row[x0 + jj * s];
                        }
                    }
                }
            }
        }
    });
    T::to_tensor(out, &[n, c, ho, wo], x.device())
}

/// The gradient with respect to the weight: `dw[c, 0, a, b] = Σ_{n,i,j} dy[n, c, i, j] ·
/// x_pad[n, c, s·i + a, s·j + b]` for `x [N, C, H, W]` and `dy [N, C, Ho, Wo]`.
pub fn backward_weight(x: &Tensor, dy: &Tensor, g: &DwGeometry) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = g.output_size(h, w)?;
    if dy.dims() != [n, c, ho, wo] {
        return Err(Error::invalid(format!(
            "depthwise weight gradient: gradient {:?} does not fit input {:?}",
            dy.dims(),
            x.dims()
        )));
    }
    match (x.device(), x.dtype()) {
        (Device::Cpu, DType::F32) => cpu_backward_weight::<f32>(x, dy, g, (n, c, h, w), (ho, wo)),
        (Device::Cpu, DType::F64) => cpu_backward_weight::<f64>(x, dy, g, (n, c, h, w), (ho, wo)),
        _ => generic_backward_weight(x, dy, g, (ho, wo)),
    }
}

fn cpu_backward_weight<T: Float>(
    x: &Tensor,
    dy: &Tensor,
    g: &DwGeometry,
    (n, c, h, w): (usize, usize, usize, usize),
    (ho, wo): (usize, usize),
) -> Result<Tensor> {
    let xs = T::from_tensor(x)?;
    let ds = T::from_tensor(&dy.to_dtype(x.dtype())?)?;
    let (k, s, [pt, _, pl, _]) = (g.kernel, g.stride, g.pads);
    let cols = Columns::new(k, s, pl, w, wo);
    let mut out = vec![T::default(); c * k * k];
    // one channel's k×k taps per task, summed over the batch
    for_planes(&mut out, k * k, n * c * ho * wo * k * k, |ch, taps| {
        for b in 0..n {
            let p = b * c + ch;
            let (xp, dp) = (&xs[p * h * w..(p + 1) * h * w], &ds[p * ho * wo..(p + 1) * ho * wo]);
            for i in 0..ho {
                let drow = &dp[i * wo..(i + 1) * wo];
                for a in 0..k {
                    let iy = (i * s + a) as isize - pt as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let xrow = &xp[iy as usize * w..(iy as usize + 1) * w];
                    for bb in 0..k {
                        let (j0, j1, x0) = cols.range[bb];
                        let mut acc = T::default();
                        for (jj, &d) in drow[j0..j1].iter().enumerate() {
                            acc = acc + d * xrow[x0 + jj * s];
                        }
                        taps[a * k + bb] = taps[a * k + bb] + acc;
                    }
                }
            }
        }
    });
    T::to_tensor(out, &[c, 1, k, k], x.device())
}

fn generic_backward_weight(x: &Tensor, dy: &Tensor, g: &DwGeometry, (ho, wo): (usize, usize)) -> Result<Tensor> {
    let [t, b, l, r] = g.pads;
    let xp = x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)?;
    let c = x.dim(1)?;
    let mut taps = Vec::with_capacity(g.kernel * g.kernel);
    for a in 0..g.kernel {
        let rows = strided(&xp, 2, a, ho, g.stride)?;
        for bb in 0..g.kernel {
            let tap = strided(&rows, 3, bb, wo, g.stride)?;
            taps.push((tap * dy)?.sum((0, 2, 3))?);
        }
    }
    Ok(Tensor::stack(&taps, 1)?.reshape((c, 1, g.kernel, g.kernel))?)
}

fn cpu_backward<T: Float>(
    dy: &Tensor,
    weight: &Tensor,
    g: &DwGeometry,
    (n, c, h, w): (usize, usize, usize, usize),
    (ho, wo): (usize, usize),
) -> Result<Tensor> {
    let ds = T::from_tensor(dy)?;
    let ws = T::from_tensor(&weight.to_dtype(dy.dtype())?)?;
    let (k, s, [pt, _, pl, _]) = (g.kernel, g.stride, g.pads);
    let mut out = vec![T::default(); n * c * h * w];
    let cols = Columns::new(k, s, pl, w, wo);
    for_planes(&mut out, h * w, n * c * ho * wo * k * k, |p, xp| {
        let ch = p % c;
        let dp = &ds[p * ho * wo..(p + 1) * ho * wo];
        let wk = &ws[ch * k * k..(ch + 1) * k * k];
        for i in 0..ho {
            let drow = &dp[i * wo..(i + 1) * wo];
            for a in 0..k {
                let iy = (i * s + a) as isize - pt as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let xrow = &mut xp[iy as usize * w..(iy as usize + 1) * w];
                for b in 0..k {
                    let (j0, j1, x0) = cols.range[b];
                    let wv = wk[a * k + b];
                    if s == 1 {
                        for (x, &d) in xrow[x0..x0 + (j1 - j0)].iter_mut().zip(&drow[j0..j1]) {
                            *x = *x + wv * d;
                        }
                    } else {
                        for (jj, &d) in drow[j0..j1].iter().enumerate() {
                            let x = &mut xrow[x0 + jj * s];
                            *x = *x + wv * d;
                        }
                    }
                }
            }
        }
    });
    T::to_tensor(out, &[n, c, h, w], dy.device())
}

/// Output width below which the CPU path works channels-last: on small maps (7×7, 14×14) the
/// per-plane rows are too short to vectorise, while the channel dimension (hundreds) is long.
const SMALL: usize = 16;

/// `[N, C, H, W]` values → `[N, H, W, C]`.
fn to_channels_last<T: Float>(v: &[T], n: usize, c: usize, hw: usize) -> Vec<T> {
    let mut out = vec![T::default(); v.len()];
    for b in 0..n {
        let (src, dst) = (&v[b * c * hw..(b + 1) * c * hw], &mut out[b * c * hw..(b + 1) * c * hw]);
        for ch in 0..c {
            for (p, &x) in src[ch * hw..(ch + 1) * hw].iter().enumerate() {
                dst[p * c + ch] = x;
            }
        }
    }
    out
}

/// `[N, H, W, C]` values → `[N, C, H, W]`.
fn to_channels_first<T: Float>(v: &[T], n: usize, c: usize, hw: usize) -> Vec<T> {
    let mut out = vec![T::default(); v.len()];
    for b in 0..n {
        let (src, dst) = (&v[b * c * hw..(b + 1) * c * hw], &mut out[b * c * hw..(b + 1) * c * hw]);
        for (p, px) in src.chunks_exact(c).enumerate() {
            for (ch, &x) in px.iter().enumerate() {
                dst[ch * hw + p] = x;
            }
        }
    }
    out
}

/// The weight `[C, 1, k, k]` as `[k·k, C]`.
fn taps_channels_last<T: Float>(weight: &Tensor, dtype: DType, c: usize, k: usize) -> Result<Vec<T>> {
    let w = T::from_tensor(&weight.to_dtype(dtype)?)?;
    Ok(to_channels_last(&w, 1, c, k * k))
}

/// `acc[..] += w[..] · x[..]` over channels.
#[inline]
fn axpy<T: Float>(acc: &mut [T], w: &[T], x: &[T]) {
    for ((a, &wv), &xv) in acc.iter_mut().zip(w).zip(x) {
        *a = *a + wv * xv;
    }
}

fn small_forward<T: Float>(
    x: &Tensor,
    weight: &Tensor,
    g: &DwGeometry,
    (n, c, h, w): (usize, usize, usize, usize),
    (ho, wo): (usize, usize),
) -> Result<Tensor> {
    let xs = to_channels_last(&T::from_tensor(x)?, n, c, h * w);
    let wt = taps_channels_last::<T>(weight, x.dtype(), c, g.kernel)?;
    let (k, s, [pt, _, pl, _]) = (g.kernel, g.stride, g.pads);
    let cols = Columns::new(k, s, pl, w, wo);
    let mut out = vec![T::default(); n * ho * wo * c];
    // one output row (all its columns and channels) per task
    for_planes(&mut out, wo * c, n * c * ho * wo * k * k, |r, orow| {
        let (b, i) = (r / ho, r % ho);
        let img = &xs[b * h * w * c..(b + 1) * h * w * c];
        for a in 0..k {
            let iy = (i * s + a) as isize - pt as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            let row = &img[iy as usize * w * c..(iy as usize + 1) * w * c];
            for bb in 0..k {
                let (j0, j1, x0) = cols.range[bb];
                let wv = &wt[(a * k + bb) * c..(a * k + bb + 1) * c];
                for (jj, j) in (j0..j1).enumerate() {
                    let ix = x0 + jj * s;
                    axpy(&mut orow[j * c..(j + 1) * c], wv, &row[ix * c..(ix + 1) * c]);
                }
            }
        }
    });
    T::to_tensor(to_channels_first(&out, n, c, ho * wo), &[n, c, ho, wo], x.device())
}

fn small_backward<T: Float>(
    dy: &Tensor,
    weight: &Tensor,
    g: &DwGeometry,
    (n, c, h, w): (usize, usize, usize, usize),
    (ho, wo): (usize, usize),
) -> Result<Tensor> {
    let ds = to_channels_last(&T::from_tensor(dy)?, n, c, ho * wo);
    let wt = taps_channels_last::<T>(weight, dy.dtype(), c, g.kernel)?;
    let (k, s, [pt, _, pl, _]) = (g.kernel, g.stride, g.pads);
    let cols = Columns::new(k, s, pl, w, wo);
    let mut out = vec![T::default(); n * h * w * c];
    // one input image per task (rows of one image receive from several output rows)
    for_planes(&mut out, h * w * c, n * c * ho * wo * k * k, |b, img| {
        let d = &ds[b * ho * wo * c..(b + 1) * ho * wo * c];
        for i in 0..ho {
            for a in 0..k {
                let iy = (i * s + a) as isize - pt as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let row = &mut img[iy as usize * w * c..(iy as usize + 1) * w * c];
                for bb in 0..k {
                    let (j0, j1, x0) = cols.range[bb];
                    let wv = &wt[(a * k + bb) * c..(a * k + bb + 1) * c];
                    for (jj, j) in (j0..j1).enumerate() {
                        let ix = x0 + jj * s;
                        axpy(&mut row[ix * c..(ix + 1) * c], wv, &d[(i * wo + j) * c..(i * wo + j + 1) * c]);
                    }
                }
            }
        }
    });
    T::to_tensor(to_channels_first(&out, n, c, h * w), &[n, c, h, w], dy.device())
}

/// Rows `start, start + s, …` (`count` of them) of dimension `dim` (no copy of the rest).
fn strided(x: &Tensor, dim: usize, start: usize, count: usize, s: usize) -> Result<Tensor> {
    if s == 1 {
        return Ok(x.narrow(dim, start, count)?);
    }
    let idx: Vec<u32> = (0..count).map(|i| (start + i * s) as u32).collect();
    let idx = Tensor::from_vec(idx, count, x.device())?;
    Ok(x.index_select(&idx, dim)?)
}

fn generic_forward(x: &Tensor, weight: &Tensor, g: &DwGeometry, (ho, wo): (usize, usize)) -> Result<Tensor> {
    let [t, b, l, r] = g.pads;
    let xp = x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)?;
    let c = x.dim(1)?;
    let wk = weight.to_dtype(x.dtype())?.reshape((c, g.kernel * g.kernel))?;
    let mut acc: Option<Tensor> = None;
    for a in 0..g.kernel {
        let rows = strided(&xp, 2, a, ho, g.stride)?;
        for bb in 0..g.kernel {
            let tap = strided(&rows, 3, bb, wo, g.stride)?;
            let wv = wk.narrow(1, a * g.kernel + bb, 1)?.reshape((1, c, 1, 1))?;
            let term = tap.broadcast_mul(&wv)?;
            acc = Some(match acc {
                Some(s) => (s + term)?,
                None => term,
            });
        }
    }
    Ok(acc.expect("kernel >= 1"))
}

fn generic_backward(dy: &Tensor, weight: &Tensor, g: &DwGeometry, (h, w): (usize, usize)) -> Result<Tensor> {
    // dx_pad[s·i + a, s·j + b] += w[a, b] · dy[i, j]: scatter each tap with index_add.
    let [t, b, l, r] = g.pads;
    let (n, c, ho, wo) = dy.dims4()?;
    let (hp, wp) = (h + t + b, w + l + r);
    let wk = weight.to_dtype(dy.dtype())?.reshape((c, g.kernel * g.kernel))?;
    let mut dxp = Tensor::zeros((n, c, hp, wp), dy.dtype(), dy.device())?;
    for a in 0..g.kernel {
        let ridx: Vec<u32> = (0..ho).map(|i| (a + i * g.stride) as u32).collect();
        let ridx = Tensor::from_vec(ridx, ho, dy.device())?;
        let mut rows = Tensor::zeros((n, c, ho, wp), dy.dtype(), dy.device())?;
        for bb in 0..g.kernel {
            let cidx: Vec<u32> = (0..wo).map(|j| (bb + j * g.stride) as u32).collect();
            let cidx = Tensor::from_vec(cidx, wo, dy.device())?;
            let wv = wk.narrow(1, a * g.kernel + bb, 1)?.reshape((1, c, 1, 1))?;
            rows = rows.index_add(&cidx, &dy.broadcast_mul(&wv)?, 3)?;
        }
        dxp = dxp.index_add(&ridx, &rows, 2)?;
    }
    Ok(dxp.narrow(2, t, h)?.narrow(3, l, w)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(dims: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = dims.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn loops_match_candle_ops_and_the_adjoint_identity() {
        // small maps run channels-last, larger ones per plane: both are covered
        for (k, s, pads, hw) in [
            (3, 1, [1, 1, 1, 1], 7),
            (3, 2, [0, 1, 0, 1], 8),
            (5, 2, [1, 2, 1, 2], 14),
            (5, 1, [2, 2, 2, 2], 5),
            (3, 1, [1, 1, 1, 1], 19),
            (5, 2, [1, 2, 1, 2], 40),
        ] {
            let g = DwGeometry { kernel: k, stride: s, pads };
            let x = rand(&[2, 3, hw, hw], 1);
            let wt = rand(&[3, 1, k, k], 2);
            let y = forward(&x, &wt, &g).unwrap();
            let y2 = generic_forward(&x, &wt, &g, g.output_size(hw, hw).unwrap()).unwrap();
            assert!(max_diff(&y, &y2) < 1e-12, "forward k{k} s{s}");
            let dy = rand(y.dims(), 3);
            let dx = backward_input(&dy, &wt, &g, hw, hw).unwrap();
            let dx2 = generic_backward(&dy, &wt, &g, (hw, hw)).unwrap();
            assert!(max_diff(&dx, &dx2) < 1e-12, "backward k{k} s{s}");
            // <dy, J x> = <J^T dy, x> (the map is linear in x)
            let lhs = (&dy * &y).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
            let rhs = (&dx * &x).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
            assert!((lhs - rhs).abs() < 1e-10, "adjoint k{k} s{s}: {lhs} vs {rhs}");
            // the map is linear in the weight too: <dy, y> = <dw, w>
            let dw = backward_weight(&x, &dy, &g).unwrap();
            let dw2 = generic_backward_weight(&x, &dy, &g, g.output_size(hw, hw).unwrap()).unwrap();
            assert!(max_diff(&dw, &dw2) < 1e-12, "weight gradient k{k} s{s}");
            let rhs = (&dw * &wt).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
            assert!((lhs - rhs).abs() < 1e-10, "weight adjoint k{k} s{s}: {lhs} vs {rhs}");
        }
    }

    #[test]
    fn matches_a_dense_grouped_convolution() {
        // candle's own grouped conv2d with symmetric padding is the reference here
        let g = DwGeometry { kernel: 3, stride: 2, pads: [1, 1, 1, 1] };
        let x = rand(&[1, 4, 9, 9], 5);
        let wt = rand(&[4, 1, 3, 3], 6);
        let ours = forward(&x, &wt, &g).unwrap();
        let theirs = x.conv2d(&wt, 1, 2, 1, 4).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-12);
    }
}
