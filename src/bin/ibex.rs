//! `ibex` — command-line front end of the ibex library.
//!
//! `ibex m2ib --image FILE --text "…"` explains an image–caption pair with M2IB on the bundled
//! demo model (or `--model DIR|HF_ID`), prints per-token scores, and writes an overlay PNG and
//! a JSON report on request.

use clap::{Args, Parser, Subcommand};
use ibex::explain::m2ib::{M2ib, M2ibConfig, M2ibExplanation};
use ibex::imaging::colormap::Colormap;
use ibex::imaging::image::RgbImage;
use ibex::imaging::overlay::{overlay, write_png};
use ibex::models::clip::ClipBundle;
use ibex::{Error, Result, RunControl};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "ibex", version, about = "Information-bottleneck explanations for vision and vision-language models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// M2IB: which image regions and caption tokens carry the image–text alignment (CLIP).
    M2ib(M2ibArgs),
}

#[derive(Args)]
struct M2ibArgs {
    /// Model directory (HF CLIP layout) or Hugging Face id; default: the bundled demo model.
    #[arg(long)]
    model: Option<String>,
    /// Image file (PNG, JPEG, WebP, BMP, TIFF).
    #[arg(long)]
    image: PathBuf,
    /// Caption to explain; repeat for several captions of the same image.
    #[arg(long = "text", required = true)]
    texts: Vec<String>,
    /// Bottleneck layer for both towers (0-based output of that encoder layer).
    #[arg(long)]
    layer: Option<usize>,
    /// Bottleneck layer of the vision tower (overrides --layer).
    #[arg(long)]
    vision_layer: Option<usize>,
    /// Bottleneck layer of the text tower (overrides --layer).
    #[arg(long)]
    text_layer: Option<usize>,
    /// Compression weight β (larger: sparser maps). Default 0.1, or the model's ibex.json.
    #[arg(long)]
    beta: Option<f64>,
    /// Optimisation steps (default 10).
    #[arg(long)]
    steps: Option<usize>,
    /// Adam learning rate (default 1).
    #[arg(long)]
    lr: Option<f64>,
    /// Noise samples per step (default 10).
    #[arg(long)]
    samples: Option<usize>,
    /// At most this many samples per pass, to bound memory (default: all).
    #[arg(long)]
    samples_per_pass: Option<usize>,
    /// Noise seed (default 0): the same seed gives the same maps.
    #[arg(long)]
    seed: Option<u64>,
    /// Compute device: cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write the heatmap over the (preprocessed) image to this PNG; with several captions,
    /// NAME_0.png, NAME_1.png, ….
    #[arg(long)]
    overlay: Option<PathBuf>,
    /// Colormap of the overlay: turbo, jet, viridis, gray.
    #[arg(long, default_value = "turbo")]
    colormap: String,
    /// Opacity of the heatmap in the overlay (0..1).
    #[arg(long, default_value_t = 0.5)]
    opacity: f32,
    /// Write a JSON report (maps, token scores, settings, timing) to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// The bundled demo model: `IBEX_DEMO_MODEL`, else `models/fmnist-clip` of the source tree.
fn demo_model() -> PathBuf {
    std::env::var_os("IBEX_DEMO_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join("fmnist-clip"))
}

fn indexed_path(base: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return base.to_path_buf();
    }
    let stem = base.file_stem().and_then(|s| s.to_str()).unwrap_or("overlay");
    let ext = base.extension().and_then(|s| s.to_str()).unwrap_or("png");
    base.with_file_name(format!("{stem}_{i}.{ext}"))
}

fn run_m2ib(a: M2ibArgs) -> Result<()> {
    let device = ibex::device::parse_device(&a.device)?;
    let dir = match &a.model {
        Some(m) => ibex::hub::resolve_model(m)?,
        None => demo_model(),
    };
    let bundle = ClipBundle::load(&dir, &device)?;
    let mut overrides = serde_json::Map::new();
    let mut set = |k: &str, v: serde_json::Value| {
        overrides.insert(k.to_string(), v);
    };
    if let Some(l) = a.layer {
        set("layer", l.into());
    }
    if let Some(l) = a.vision_layer {
        set("vision_layer", l.into());
    }
    if let Some(l) = a.text_layer {
        set("text_layer", l.into());
    }
    if let Some(v) = a.beta {
        set("beta", v.into());
    }
    if let Some(v) = a.steps {
        set("steps", v.into());
    }
    if let Some(v) = a.lr {
        set("lr", v.into());
    }
    if let Some(v) = a.samples {
        set("samples", v.into());
    }
    if let Some(v) = a.samples_per_pass {
        set("samples_per_pass", v.into());
    }
    if let Some(v) = a.seed {
        set("seed", v.into());
    }
    // `layer` first so that vision_layer / text_layer override it
    let mut cfg = M2ibConfig::for_bundle(&bundle)?;
    if let Some(l) = overrides.remove("layer") {
        cfg = cfg.merged(&serde_json::json!({ "layer": l }))?;
    }
    let cfg = cfg.merged(&serde_json::Value::Object(overrides))?;
    let cmap: Colormap = a.colormap.parse()?;
    if !(0.0..=1.0).contains(&a.opacity) {
        return Err(Error::invalid(format!("--opacity must be in 0..1, got {}", a.opacity)));
    }
    let image = RgbImage::load(&a.image)?;
    let m2ib = M2ib::new(cfg)?;
    let captions: Vec<&str> = a.texts.iter().map(String::as_str).collect();
    let show = !a.quiet && std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(m2ib.total_steps(captions.len()) as u64);
    if show {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} M2IB [{bar:30}] {pos}/{len} steps {elapsed_precise}")
                .expect("template")
                .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut control = RunControl::with_progress(|done, _| {
        bar.set_position(done as u64);
        true
    });
    let ex = m2ib.explain(&bundle, &image, &captions, &mut control)?;
    drop(control);
    bar.finish_and_clear();
    print_report(&ex);
    if let Some(base) = &a.overlay {
        for (i, c) in ex.captions.iter().enumerate() {
            let path = indexed_path(base, i, ex.captions.len());
            write_png(&overlay(&ex.image, &c.image_map, cmap, a.opacity)?, &path)?;
            println!("overlay: {}", path.display());
        }
    }
    if let Some(path) = &a.json {
        let report = json_report(&ex, &dir, &ibex::device::device_name(&device));
        let text = serde_json::to_string(&report).expect("report serialises");
        std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
        println!("json: {}", path.display());
    }
    Ok(())
}

fn print_report(ex: &M2ibExplanation) {
    for (i, c) in ex.captions.iter().enumerate() {
        println!("caption {i}: {:?}  (image-text cosine {:.4})", c.caption, c.similarity);
        for ((tok, s), cap) in c.tokens.text.iter().zip(&c.text_scores).zip(&c.text_capacity) {
            let bar = "#".repeat((s * 20.0).round() as usize);
            println!("  {tok:>18}  {s:5.3}  {bar:<20}  {cap:9.3} nats");
        }
        let (x, y) = c.image_map.argmax();
        println!("  image map peak at (x={x}, y={y}) of {}x{}", c.image_map.width, c.image_map.height);
    }
    println!("elapsed: {:.0} ms", ex.elapsed_ms);
}

fn json_report(ex: &M2ibExplanation, model: &Path, device: &str) -> serde_json::Value {
    let texts: Vec<serde_json::Value> = ex
        .captions
        .iter()
        .map(|c| {
            serde_json::json!({
                "caption": c.caption,
                "tokens": c.tokens.text,
                "token_ids": c.tokens.ids,
                "scores": c.text_scores,
                "capacity_nats": c.text_capacity,
                "similarity": c.similarity,
                "image_heatmap": c.image_map.data,
                "image_capacity_nats": { "width": c.image_capacity.width, "height": c.image_capacity.height, "data": c.image_capacity.data },
                "trace": { "vision": c.vision_trace, "text": c.text_trace },
            })
        })
        .collect();
    let first = &ex.captions[0];
    serde_json::json!({
        "method": "m2ib",
        "model": model.display().to_string(),
        "device": device,
        "image": {
            "width": ex.image.width,
            "height": ex.image.height,
            "heatmap": first.image_map.data,
            "source_region": ex.source_region,
        },
        "text": texts,
        "config": ex.config,
        "elapsed_ms": ex.elapsed_ms,
    })
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::M2ib(a) => run_m2ib(a),
    };
    if let Err(e) = r {
        eprintln!("ibex: error: {e}");
        std::process::exit(match e {
            Error::InvalidArgument(_) => 2,
            Error::Cancelled => 130,
            _ => 1,
        });
    }
}
