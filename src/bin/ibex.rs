//! `ibex` — command-line front end of the ibex library.
//!
//! `ibex explain IMAGE` explains a classifier's prediction (default: the bundled ImageNet
//! EfficientNet-Lite0 with IBA) or, with a CLIP model and `--text`, an image–caption match;
//! `ibex m2ib --image FILE --text "…"` is M2IB on the bundled demo CLIP. Both print a summary
//! and write an overlay PNG (on the original image) and a JSON report on request.

use clap::{Args, Parser, Subcommand};
use ibex::explain::m2ib::{M2ib, M2ibConfig, M2ibExplanation};
use ibex::explain::{Explanation, Method, Target};
use ibex::imaging::colormap::Colormap;
use ibex::imaging::image::RgbImage;
use ibex::imaging::overlay::{overlay_on_original, write_png};
use ibex::models::clip::ClipBundle;
use ibex::models::Model;
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
    /// Explain what a model looks at: a classifier's class (IBA, Grad-CAM) or a CLIP
    /// image–caption match (M2IB). Default: the bundled ImageNet EfficientNet-Lite0 with IBA.
    Explain(ExplainArgs),
    /// M2IB: which image regions and caption tokens carry the image–text alignment (CLIP).
    M2ib(M2ibArgs),
    /// Load a model and describe it: kind, taps (for --layer), classes, load time.
    Info(InfoArgs),
    /// Estimate IBA feature statistics of a tap over a folder of images (Welford, the IBA
    /// reference's augmentation recipe).
    Stats(StatsArgs),
    /// The amortised IBA: `ibex iba fit-readout` trains the readout network over a folder.
    #[command(subcommand)]
    Iba(IbaCommand),
    /// Dual-IB: `ibex dual-ib fit` trains the infer network and the InfoNCE critic over a folder.
    #[command(subcommand, name = "dual-ib")]
    DualIb(DualIbCommand),
    /// PIP-Net: `ibex pipnet convert` makes a model directory from an official checkpoint.
    #[command(subcommand)]
    Pipnet(PipnetCommand),
    /// Score a method's maps over a folder: deletion (MoRF) / LeRF AUCs against a random
    /// order, and the pointing game and energy in box where boxes are given.
    Eval(EvalArgs),
    /// M2IB: choose a dual encoder's vision layer, text layer and beta from image-caption
    /// pairs by a label-free faithfulness score, and write the best into the model's ibex.json.
    Tune(TuneArgs),
    /// What ibex reads from a DICOM file: geometry, transfer syntax, photometric
    /// interpretation, rescale, window, frames, and the decoded values' min / max / mean after
    /// rescale per frame and overall.
    Dicom(DicomCmdArgs),
}

/// `ibex tune`.
#[derive(Args)]
struct TuneArgs {
    /// Dual-encoder model directory (CLIP, open_clip, SigLIP, BiomedCLIP) or Hugging Face id.
    #[arg(long)]
    model: String,
    /// Folder with the tuning images.
    #[arg(long)]
    images: PathBuf,
    /// The captions: a JSON list of {"file" (or "image"), "caption" (or "text")} objects, or an
    /// object mapping each image file to a caption or a list of captions.
    #[arg(long)]
    texts: PathBuf,
    /// Candidate layers for both towers (comma-separated, 0-based); default: see
    /// `tune::default_candidates`.
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<usize>>,
    /// Candidate vision layers (overrides --layers for the vision tower).
    #[arg(long, value_delimiter = ',')]
    vision_layers: Option<Vec<usize>>,
    /// Candidate text layers (overrides --layers for the text tower).
    #[arg(long, value_delimiter = ',')]
    text_layers: Option<Vec<usize>>,
    /// Candidate betas (comma-separated); default 0.1,1,10.
    #[arg(long, value_delimiter = ',')]
    betas: Option<Vec<f64>>,
    /// Other M2IB settings as JSON (steps, samples, lr, seed), on top of the model's ibex.json.
    #[arg(long)]
    options: Option<String>,
    /// Steps of the insertion / deletion curves.
    #[arg(long, default_value_t = 16)]
    curve_steps: u32,
    /// Where to write the chosen setting; default MODEL/ibex.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Score only: print the table, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also write every candidate's scores as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Compute device: cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// How to read a DICOM image (ignored for other formats).
#[derive(Args, Clone, Default)]
struct DicomReadArgs {
    /// DICOM: the frame to read (0-based; default 0, and for `ibex dicom` every frame).
    #[arg(long)]
    frame: Option<u32>,
    /// DICOM: the VOI window as CENTER,WIDTH in rescaled units (e.g. 40,400 for a CT soft
    /// tissue window); default: the file's first window, or the frame's full range.
    #[arg(long, value_name = "CENTER,WIDTH", conflicts_with = "window_index")]
    window: Option<String>,
    /// DICOM: use the file's window with this index (0-based).
    #[arg(long)]
    window_index: Option<usize>,
    /// DICOM: refuse files whose rows x columns x frames x samples exceed this (default 2^30).
    #[arg(long)]
    max_samples: Option<u64>,
}

impl DicomReadArgs {
    fn options(&self) -> Result<ibex::dicom::DicomOptions> {
        use ibex::dicom::{DicomOptions, WindowChoice, WindowLevel};
        let window = match (&self.window, self.window_index) {
            (Some(w), _) => {
                let parts: Vec<f64> =
                    w.split(',').map(|p| p.trim().parse::<f64>()).collect::<std::result::Result<_, _>>().map_err(
                        |_| Error::invalid(format!("--window takes CENTER,WIDTH as two numbers, got '{w}'")),
                    )?;
                let [center, width] = parts[..] else {
                    return Err(Error::invalid(format!("--window takes CENTER,WIDTH, got '{w}'")));
                };
                WindowChoice::Given(WindowLevel { center, width })
            }
            (None, Some(i)) => WindowChoice::FileIndex(i),
            (None, None) => WindowChoice::File,
        };
        Ok(DicomOptions {
            frame: self.frame.unwrap_or(0),
            window,
            max_samples: self.max_samples.unwrap_or(ibex::dicom::DEFAULT_MAX_SAMPLES),
        })
    }
}

#[derive(Args)]
struct DicomCmdArgs {
    /// The DICOM file.
    file: PathBuf,
    #[command(flatten)]
    read: DicomReadArgs,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// Method to evaluate: iba, iba-readout, dual-ib, gradcam, saliency, ig, occlusion.
    #[arg(long, default_value = "iba")]
    method: String,
    /// Model directory or Hugging Face id; default: the bundled EfficientNet-Lite0.
    #[arg(long)]
    model: Option<String>,
    /// Folder of images (PNG, JPEG, WebP, BMP, TIFF).
    #[arg(long)]
    images: PathBuf,
    /// Boxes as JSON: image file stem -> {"objects": [{"label", "box": [x0, y0, x1, y1]}],
    /// "target_object": label or null}, boxes in model-input pixels, half-open (the fixtures'
    /// photos.json, with its top-level "photos" key, works as is).
    #[arg(long)]
    boxes: Option<PathBuf>,
    /// Tap for methods that take one.
    #[arg(long)]
    layer: Option<String>,
    /// The trained state of iba-readout / dual-ib.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Caption for a CLIP model (M2IB, occlusion): drop / increase in confidence per image.
    #[arg(long = "text")]
    texts: Vec<String>,
    /// Also compute ROAD (noisy linear imputation at 10..90 % removed; slower).
    #[arg(long)]
    road: bool,
    /// Also run the MPRT sanity check over the top N stages (N explanations more per image).
    #[arg(long, value_name = "N")]
    mprt: Option<usize>,
    /// Seed of the method's noise and of the random baseline order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the per-image results and means as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the per-image results as CSV.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Compute device: cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn run_convert(a: ConvertArgs) -> Result<()> {
    let b = ibex::models::pipnet::convert(&a.checkpoint, &a.config, &a.out)?;
    println!(
        "{}: PIP-Net with {} prototypes, {} classes, {}x{} input; explain with `ibex explain IMAGE --model {}`",
        a.out.display(),
        b.model.prototypes(),
        b.model.classes(),
        b.image_size,
        b.image_size,
        a.out.display()
    );
    Ok(())
}

#[derive(Subcommand)]
enum PipnetCommand {
    /// Write a model directory (model.safetensors + config.json) from an official PIP-Net
    /// checkpoint (`torch.save` file) and its config.
    Convert(ConvertArgs),
    /// The global explanation: for every relevant prototype, the patches of the images where
    /// it is most present (a PNG per prototype and an index.json).
    Prototypes(PrototypesArgs),
    /// Compute per-class OOD thresholds (the official FPR95 procedure) over in-distribution
    /// images and store them in the model's config.json; explanations then report `ood`.
    Thresholds(ThresholdsArgs),
    /// Explain one image: class scores, abstention, OOD, the contributing prototypes with
    /// presence, weight and box, the maps (`ibex explain IMAGE --model DIR` does the same).
    Explain(PipnetExplainArgs),
    /// Train a PIP-Net (ConvNeXt backbone) on an ImageFolder tree: prototype pretraining, then
    /// the scoring sheet and backbone. Resumable; a loadable model after every epoch.
    Train(TrainArgs),
    /// Accuracy, abstentions, global size, sparsity and local explanation size on a labelled
    /// ImageFolder tree (the official evaluation's definitions; the model is not changed).
    Eval(PipnetEvalArgs),
}

#[derive(Args)]
struct PipnetExplainArgs {
    /// A PIP-Net model directory.
    #[arg(long)]
    model: PathBuf,
    /// Image file (PNG, JPEG, WebP, BMP, TIFF).
    #[arg(long)]
    image: PathBuf,
    /// Write the JSON report (scores, predicted, abstained, ood, prototypes, top_classes, maps).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the class-evidence map over the image to this PNG.
    #[arg(long)]
    overlay: Option<PathBuf>,
    /// Write the local explanation sheet to this PNG.
    #[arg(long)]
    sheet: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

impl From<PipnetExplainArgs> for ExplainArgs {
    fn from(a: PipnetExplainArgs) -> Self {
        ExplainArgs {
            image: a.image,
            model: Some(a.model.display().to_string()),
            method: Some("pipnet".into()),
            target: None,
            texts: vec![],
            layer: None,
            beta: None,
            steps: None,
            samples: None,
            samples_per_pass: None,
            seed: None,
            stats: None,
            state: None,
            alpha: None,
            max_pixels: None,
            report: false,
            device: "cpu".into(),
            overlay: a.overlay,
            sheet: a.sheet,
            colormap: "turbo".into(),
            opacity: 0.5,
            json: a.json,
            dicom_out: None,
            dicom: DicomReadArgs::default(),
            quiet: a.quiet,
        }
    }
}

#[derive(Args)]
struct TrainArgs {
    /// Training images: one sub-directory per class (torchvision's ImageFolder layout).
    #[arg(long)]
    data: PathBuf,
    /// Training settings (JSON; see the README for the keys and their defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output directory: model.safetensors + config.json (loadable after every epoch),
    /// train_state.safetensors, metrics.jsonl.
    #[arg(long)]
    out: PathBuf,
    /// Test images (ImageFolder, same classes), evaluated after every phase-2 epoch.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Use only the first N images (by file name) of each class.
    #[arg(long)]
    per_class: Option<usize>,
    /// Continue the run saved in --out (same data and settings).
    #[arg(long)]
    resume: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct PipnetEvalArgs {
    /// A PIP-Net model directory.
    #[arg(long)]
    model: PathBuf,
    /// Labelled images: one sub-directory per class, in the model's class order.
    #[arg(long)]
    data: PathBuf,
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn load_folder(dir: &Path, per_class: Option<usize>, quiet: bool) -> Result<ibex::imaging::folder::ImageFolder> {
    let bar = progress_bar(quiet, "loading");
    let f = ibex::imaging::folder::ImageFolder::load(dir, per_class, |i, n| {
        bar.set_length(n as u64);
        bar.set_position(i as u64);
    })?;
    bar.finish_and_clear();
    Ok(f)
}

fn run_train(a: TrainArgs) -> Result<()> {
    use ibex::train::pipnet::{TrainConfig, Trainer};
    let config = match &a.config {
        Some(p) => TrainConfig::from_file(p)?,
        None => TrainConfig::default(),
    };
    let data = load_folder(&a.data, a.per_class, a.quiet)?;
    let test = a.test.as_deref().map(|t| load_folder(t, None, a.quiet)).transpose()?;
    let mut trainer = if a.resume {
        Trainer::resume(&a.out, &config, &data)?
    } else {
        if ibex::train::pipnet::state_file(&a.out).is_some() {
            return Err(Error::invalid(format!(
                "{} already holds a training run; pass --resume to continue it, or choose another --out",
                a.out.display()
            )));
        }
        Trainer::new(config, &data)?
    };
    eprintln!(
        "{} images, {} classes, {} prototypes; {:?} after {} epochs",
        data.len(),
        data.classes.len(),
        trainer.net.prototypes(),
        trainer.position.phase,
        trainer.position.epochs_done
    );
    let bar = progress_bar(a.quiet, "train");
    let mut control = RunControl::with_progress(|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        true
    });
    let quiet = a.quiet;
    trainer.run(&data, test.as_ref(), &a.out, &mut control, |m| {
        if !quiet {
            let test = m.test.as_ref().map(|t| {
                format!(", test acc {:.2}%, global size {}, sparsity {:.4}", 100.0 * t.top1_accuracy, t.global_size, t.sparsity)
            });
            eprintln!(
                "{:?} epoch {}: loss {:.4} (LA {:.3}, LT {:.3}, LC {:.3}), train acc {:.3}, {:.1} prototypes present, {:.0} s{}",
                m.phase, m.epoch, m.loss, m.align, m.tanh, m.class, m.train_accuracy, m.present, m.seconds,
                test.unwrap_or_default()
            );
        }
    })?;
    bar.finish_and_clear();
    println!("trained model -> {} (metrics: {})", a.out.display(), a.out.join("metrics.jsonl").display());
    Ok(())
}

fn run_pipnet_eval(a: PipnetEvalArgs) -> Result<()> {
    let device = ibex::device::parse_device("cpu")?;
    let Model::PipNet(bundle) = Model::load(Some("pipnet"), &a.model, &device)? else {
        return Err(Error::Unsupported("ibex pipnet eval is for PIP-Net models".into()));
    };
    let data = load_folder(&a.data, None, a.quiet)?;
    if data.classes.len() != bundle.model.classes() {
        return Err(Error::invalid(format!(
            "{} has {} class directories, the model {} classes",
            a.data.display(),
            data.classes.len(),
            bundle.model.classes()
        )));
    }
    let r = ibex::train::pipnet_eval::evaluate(&bundle.model, &bundle.preprocessor, &data, 64)?;
    println!(
        "{} images: top-1 {:.2}%, top-5 {:.2}%, abstained {}, global size {}, sparsity {:.4}, local size (predicted class) {:.3}",
        r.images, 100.0 * r.top1_accuracy, 100.0 * r.top5_accuracy, r.abstained, r.global_size, r.sparsity,
        r.local_size_predicted_class
    );
    if let Some(j) = &a.json {
        std::fs::write(j, serde_json::to_string_pretty(&r)?).map_err(|e| Error::io(j, e))?;
    }
    Ok(())
}

#[derive(Args)]
struct ThresholdsArgs {
    /// A PIP-Net model directory (from `ibex pipnet convert`).
    #[arg(long)]
    model: PathBuf,
    /// In-distribution images (a folder, searched one level of class folders deep).
    #[arg(long)]
    images: PathBuf,
    /// The share of in-distribution images to accept, in percent.
    #[arg(long, default_value_t = 95.0)]
    percent: f64,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// The images of a folder, or of an ImageFolder tree (one level of class folders).
fn image_tree(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = image_files(dir).unwrap_or_default();
    if files.is_empty() {
        for d in ibex::imaging::folder::sub_directories(dir)? {
            files.extend(image_files(&d).unwrap_or_default());
        }
    }
    if files.is_empty() {
        return Err(Error::NotFound(format!("{}: no images", dir.display())));
    }
    Ok(files)
}

#[derive(Args)]
struct PrototypesArgs {
    /// A PIP-Net model directory (from `ibex pipnet convert`).
    #[arg(long)]
    model: PathBuf,
    /// The images to search (a folder or an ImageFolder tree).
    #[arg(long)]
    images: PathBuf,
    /// Where to write `prototype_NNNN.png` (the top patches side by side) and `index.json`.
    #[arg(long)]
    out: PathBuf,
    /// Patches per prototype.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// `ibex pipnet prototypes`: the global explanation.
fn run_prototypes(a: PrototypesArgs) -> Result<()> {
    use ibex::explain::pipnet::galleries;
    let device = ibex::device::parse_device("cpu")?;
    let Model::PipNet(bundle) = Model::load(Some("pipnet"), &a.model, &device)? else {
        return Err(Error::Unsupported("global explanations are for PIP-Net models".into()));
    };
    if a.top == 0 || a.top > 1000 {
        return Err(Error::invalid(format!("--top must be in 1..=1000, got {}", a.top)));
    }
    let files = image_tree(&a.images)?;
    let input = |f: &PathBuf| -> Result<(candle_core::Tensor, RgbImage)> {
        let pre = bundle.preprocessor.preprocess(&RgbImage::load(f)?)?;
        let shape = (1, 3, pre.height as usize, pre.width as usize);
        Ok((candle_core::Tensor::from_vec(pre.pixel_values, shape, &device)?, pre.image))
    };
    let bar = progress_bar(a.quiet, "prototypes");
    bar.set_length(files.len() as u64);
    let mut inputs = files.iter().map(|f| input(f).map(|(x, _)| x));
    let mut report = |i: usize| {
        bar.set_position(i as u64);
        Ok(())
    };
    let gals = galleries(&bundle, &mut inputs, a.top, &mut report)?;
    bar.finish_and_clear();
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let (s, p) = (bundle.image_size, bundle.patchsize);
    let gap = 2u32;
    for g in &gals {
        let width = g.top.len() as u32 * (p + gap);
        let mut sheet = ::image::RgbImage::from_pixel(width.max(1), p, ::image::Rgb([255, 255, 255]));
        for (j, &(i, _, b)) in g.top.iter().enumerate() {
            let (_, img) = input(&files[i])?;
            let img = img.to_rgb8();
            // the official patch; its last row may reach past the image (a reproduced quirk)
            for y in b[0]..b[1].min(s) {
                for x in b[2]..b[3].min(s) {
                    sheet.put_pixel(j as u32 * (p + gap) + (x - b[2]), y - b[0], *img.get_pixel(x, y));
                }
            }
        }
        write_png(&sheet, &a.out.join(format!("prototype_{:04}.png", g.index)))?;
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let index = serde_json::json!({
        "model": a.model.display().to_string(), "images": names, "sheet": bundle.model.sheet_size()?,
        "prototypes": gals,
    });
    let idx = a.out.join("index.json");
    std::fs::write(&idx, serde_json::to_string_pretty(&index).expect("serialises")).map_err(|e| Error::io(&idx, e))?;
    println!(
        "{} relevant prototypes, top {} patches each, from {} images -> {}",
        gals.len(),
        a.top,
        files.len(),
        a.out.display()
    );
    Ok(())
}

fn run_thresholds(a: ThresholdsArgs) -> Result<()> {
    let device = ibex::device::parse_device("cpu")?;
    let Model::PipNet(bundle) = Model::load(Some("pipnet"), &a.model, &device)? else {
        return Err(Error::Unsupported("thresholds are for PIP-Net models".into()));
    };
    let files = image_tree(&a.images)?;
    let bar = progress_bar(a.quiet, "thresholds");
    bar.set_length(files.len() as u64);
    let mut scores = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let pre = bundle.preprocessor.preprocess(&RgbImage::load(f)?)?;
        let x =
            candle_core::Tensor::from_vec(pre.pixel_values, (1, 3, pre.height as usize, pre.width as usize), &device)?;
        scores.push(bundle.model.forward(&x)?.o.flatten_all()?.to_vec1::<f32>()?);
        bar.set_position(i as u64 + 1);
    }
    bar.finish_and_clear();
    let t = ibex::models::pipnet::fpr_thresholds(&scores, bundle.model.classes(), a.percent)?;
    let cfg_path = a.model.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let mut cfg: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(&cfg_path, e.to_string()))?;
    cfg["ood_thresholds"] = serde_json::json!(t);
    cfg["ood_percent"] = serde_json::json!(a.percent);
    let tmp = cfg_path.with_extension("json.partial");
    std::fs::write(&tmp, serde_json::to_string_pretty(&cfg).expect("serialises")).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    println!("{} images; thresholds per class: {t:?} -> {}", files.len(), cfg_path.display());
    Ok(())
}

#[derive(Args)]
struct ConvertArgs {
    /// The official checkpoint (`torch.save` dict with `model_state_dict`) or a safetensors file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The model's config.json (backbone type and stride threshold, image_size, patchsize,
    /// mean/std, class_names).
    #[arg(long)]
    config: PathBuf,
    /// The directory to write.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Subcommand)]
enum IbaCommand {
    /// Train the readout network that predicts IBA's α in one pass (progress bar, resumable).
    FitReadout(FitReadoutArgs),
}

#[derive(Subcommand)]
enum DualIbCommand {
    /// Train Dual-IB's infer network and InfoNCE critic for a classifier (progress bar, resumable).
    Fit(FitDualIbArgs),
}

/// What every training command takes.
#[derive(Args)]
struct FitArgs {
    /// Model directory or Hugging Face id; default: the bundled EfficientNet-Lite0.
    #[arg(long)]
    model: Option<String>,
    /// Folder of training images.
    #[arg(long)]
    images: PathBuf,
    /// Where to write the state (after every epoch).
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Noise samples per view and step.
    #[arg(long)]
    samples: Option<usize>,
    /// Train on the preprocessed photos as they are (default: random resized crops and flips).
    #[arg(long)]
    no_augment: bool,
    /// Continue the run saved in --out (same settings, same views).
    #[arg(long)]
    resume: bool,
    /// Compute device: cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

impl FitArgs {
    /// The overrides these flags give, as JSON.
    fn overrides(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut o = serde_json::Map::new();
        let mut set = |k: &str, v: Option<serde_json::Value>| {
            if let Some(v) = v {
                o.insert(k.into(), v);
            }
        };
        set("epochs", self.epochs.map(Into::into));
        set("batch", self.batch.map(Into::into));
        set("lr", self.lr.map(Into::into));
        set("seed", self.seed.map(Into::into));
        set("samples", self.samples.map(Into::into));
        if self.no_augment {
            o.insert("augment".into(), false.into());
        }
        o
    }

    /// Refuses training settings beside `--resume` (a resumed run keeps the stored ones).
    fn check_resume(&self, others: bool) -> Result<()> {
        if self.resume && (others || !self.overrides().is_empty()) {
            return Err(Error::invalid(
                "--resume continues with the settings stored in the state: drop the other training options",
            ));
        }
        Ok(())
    }

    /// What the run trains on: the number of images and a hash of their file names.
    fn data(&self) -> Result<serde_json::Value> {
        let files = image_files(&self.images)?;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for f in &files {
            for b in f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().bytes().chain([0]) {
                h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
        Ok(serde_json::json!({ "images": files.len(), "names_fnv1a": format!("{h:016x}") }))
    }

    /// Fails unless a resumed state was trained on the same images.
    fn check_data(&self, stored: &serde_json::Value) -> Result<serde_json::Value> {
        let data = self.data()?;
        if !stored.is_null() && *stored != data {
            return Err(Error::invalid(format!(
                "{} was trained on other images ({} files; --images has {}): resume with the same folder",
                self.out.display(),
                stored["images"],
                data["images"]
            )));
        }
        Ok(data)
    }

    fn load(&self) -> Result<(ibex::models::cnn::ClassifierBundle, Vec<RgbImage>)> {
        let device = ibex::device::parse_device(&self.device)?;
        let dir = match &self.model {
            Some(m) => ibex::hub::resolve_model(m)?,
            None => default_model(),
        };
        let Model::Classifier(bundle) = Model::load(None, &dir, &device)? else {
            return Err(Error::Unsupported("training a readout or Dual-IB needs a classifier".into()));
        };
        let images = image_files(&self.images)?.iter().map(|p| RgbImage::load(p)).collect::<Result<Vec<_>>>()?;
        Ok((bundle, images))
    }

    /// Runs the loop with a progress bar.
    fn train(
        &self,
        views: &ibex::explain::fit::Views<'_>,
        settings: &ibex::explain::fit::FitSettings,
        learner: &mut dyn ibex::explain::fit::Learner,
        start: usize,
        label: &str,
    ) -> Result<()> {
        if start >= settings.epochs {
            println!("{} already has {start} of {} epochs", self.out.display(), settings.epochs);
            return Ok(());
        }
        let bar = progress_bar(self.quiet, label);
        let mut control = RunControl::with_progress(|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            true
        });
        let logs = ibex::explain::fit::run(views, settings, learner, &self.out, start, &mut control)?;
        drop(control);
        bar.finish_and_clear();
        for l in &logs {
            let terms: Vec<String> = l.terms.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            println!("epoch {:>3}: {}", l.epoch, terms.join(", "));
        }
        println!("state: {} ({} epochs)", self.out.display(), settings.epochs);
        Ok(())
    }
}

#[derive(Args)]
struct FitReadoutArgs {
    #[command(flatten)]
    fit: FitArgs,
    /// The bottlenecked tap; default: the model's IBA layer.
    #[arg(long)]
    layer: Option<String>,
    /// Comma-separated readout taps; default: the layer, the stage before pooling, the logits.
    #[arg(long)]
    taps: Option<String>,
    /// Compression weight (IBA's β).
    #[arg(long)]
    beta: Option<f64>,
}

fn run_fit_readout(a: FitReadoutArgs) -> Result<()> {
    use ibex::explain::fit::Views;
    use ibex::explain::iba::readout::{default_taps, Readout, ReadoutConfig, ReadoutTrainer};
    a.fit.check_resume(a.layer.is_some() || a.taps.is_some() || a.beta.is_some())?;
    let (bundle, images) = a.fit.load()?;
    let net = &bundle.network;
    if a.fit.resume {
        let (mut t, done) = ReadoutTrainer::resume(net, &a.fit.out, &bundle.device)?;
        a.fit.check_data(&t.data)?;
        let views = Views::photos(&bundle, &images, t.config.fit.seed, t.config.augment);
        let settings = t.config.fit.clone();
        return a.fit.train(&views, &settings, &mut t, done, "readout");
    }
    let iba = ibex::explain::IbaConfig::for_bundle(&bundle)?;
    let mut o = a.fit.overrides();
    if let Some(b) = a.beta {
        o.insert("beta".into(), b.into());
    }
    let mut config: ReadoutConfig =
        ibex::explain::options::merge(&ReadoutConfig::default(), &serde_json::Value::Object(o), "readout", &[])?;
    config.fit.validate()?;
    let layer = a
        .layer
        .clone()
        .or(iba.layer.clone())
        .ok_or_else(|| Error::invalid("set --layer (the model has no IBA layer)"))?;
    config.taps = match &a.taps {
        Some(t) => t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        None => default_taps(net, &layer),
    };
    // the model's IBA prior where it is for this layer, else estimated from the views
    let prior = match (&iba.statistics, iba.layer.as_deref() == Some(layer.as_str())) {
        (Some(p), true) => {
            let p = if p.is_relative() { bundle.dir.join(p) } else { p.clone() };
            config.statistics = Some(p.clone());
            Some(ibex::explain::iba::stats::FeatureStats::load(
                &p,
                config.min_std,
                config.active_threshold,
                &bundle.device,
            )?)
        }
        _ => None,
    };
    config.layer = Some(layer.clone());
    let views = Views::photos(&bundle, &images, config.fit.seed, config.augment);
    let readout = Readout::init(net, &layer, &config.taps, prior, &config, &views)?;
    let input = (bundle.preprocessor.crop_height as usize, bundle.preprocessor.crop_width as usize);
    let settings = config.fit.clone();
    let mut t = ReadoutTrainer::new(net, readout, config, input)?;
    t.data = a.fit.data()?;
    a.fit.train(&views, &settings, &mut t, 0, "readout")
}

#[derive(Args)]
struct FitDualIbArgs {
    #[command(flatten)]
    fit: FitArgs,
    /// The local representation x (a tap); default: the end of the first block group.
    #[arg(long)]
    local: Option<String>,
    /// The global representation y: pooled (default) or the logits tap.
    #[arg(long)]
    global: Option<String>,
    /// Compression weight β₂ of the bottleneck.
    #[arg(long)]
    beta2: Option<f64>,
    /// β₁: multiplies the critic's learning rate.
    #[arg(long)]
    beta1: Option<f64>,
}

fn run_fit_dual_ib(a: FitDualIbArgs) -> Result<()> {
    use ibex::explain::dual_ib::{DualIbConfig, DualIbTrainer};
    use ibex::explain::fit::Views;
    a.fit.check_resume(a.local.is_some() || a.global.is_some() || a.beta1.is_some() || a.beta2.is_some())?;
    let (bundle, images) = a.fit.load()?;
    let net = &bundle.network;
    if a.fit.resume {
        let (mut t, done) = DualIbTrainer::resume(net, &a.fit.out, &bundle.device)?;
        a.fit.check_data(t.data())?;
        let settings = t.settings().clone();
        let views = Views::photos(&bundle, &images, settings.seed, t.augment());
        return a.fit.train(&views, &settings, &mut t, done, "dual-ib");
    }
    let mut o = a.fit.overrides();
    for (k, v) in [("local", a.local.clone().map(Into::into)), ("global", a.global.clone().map(Into::into))] {
        if let Some(v) = v {
            o.insert(k.into(), v);
        }
    }
    for (k, v) in [("beta1", a.beta1), ("beta2", a.beta2)] {
        if let Some(v) = v {
            o.insert(k.into(), v.into());
        }
    }
    let config = DualIbConfig::for_bundle(&bundle, &serde_json::Value::Object(o))?;
    let views = Views::photos(&bundle, &images, config.fit.seed, config.augment);
    let plain = Views::photos(&bundle, &images, config.fit.seed, false);
    let settings = config.fit.clone();
    let mut t = DualIbTrainer::new(net, config, &views, &plain, &bundle.device)?;
    t.set_data(a.fit.data()?);
    a.fit.train(&views, &settings, &mut t, 0, "dual-ib")
}

/// The mean Spearman correlation at each MPRT step over rows.
fn print_mprt(rows: &[serde_json::Value]) {
    let steps = rows.first().and_then(|r| r["mprt"].as_array()).map_or(0, |a| a.len());
    for k in 0..steps {
        let name = rows[0]["mprt"][k]["randomised_down_to"].as_str().unwrap_or("?");
        let v: Vec<f64> = rows.iter().filter_map(|r| r["mprt"][k]["spearman"].as_f64()).collect();
        println!("MPRT randomised down to {name:<12} Spearman {:.3}", v.iter().sum::<f64>() / v.len().max(1) as f64);
    }
}

/// `ibex eval` for CLIP: drop / increase in the image–caption similarity per image.
fn eval_clip(a: &EvalArgs, bundle: &ClipBundle, model: &Model, method: &Method) -> Result<()> {
    if a.texts.is_empty() {
        return Err(Error::invalid("evaluating a CLIP model needs a caption: --text \"…\""));
    }
    if a.road || a.mprt.is_some() || a.boxes.is_some() {
        return Err(Error::invalid(
            "--road, --mprt and --boxes score classifier explanations; a CLIP model gets drop / increase",
        ));
    }
    let files = image_files(&a.images)?;
    let mut rows = Vec::new();
    let mut confs = Vec::new();
    println!("{:<16} {:<30} {:>8} {:>8} {:>6} {:>8}", "image", "caption", "full", "masked", "drop", "increase");
    for f in &files {
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
        let image = RgbImage::load(f)?;
        let target = Target { class_index: None, texts: a.texts.clone() };
        let ex = method.explain(model, &image, &target, &mut RunControl::default())?;
        for (ci, caption) in a.texts.iter().enumerate() {
            let c = ibex::explain::evaluation::clip_confidence(bundle, &ex, &image, ci)?;
            println!(
                "{stem:<16} {:<30} {:8.4} {:8.4} {:6.3} {:>8}",
                caption.chars().take(30).collect::<String>(),
                c.full,
                c.masked,
                c.drop,
                c.increase
            );
            rows.push(serde_json::json!({ "image": stem, "caption": caption, "full": c.full, "masked": c.masked, "drop": c.drop, "increase": c.increase }));
            confs.push(c);
        }
    }
    let (drop, increase) = ibex::metrics::confidence::summarise(&confs);
    println!("average drop {drop:.1} %, increase in confidence {increase:.1} % (the map weights the whole image)");
    if let Some(p) = &a.json {
        let v = serde_json::json!({ "method": a.method, "rows": rows,
            "mean": { "average_drop_percent": drop, "increase_in_confidence_percent": increase } });
        std::fs::write(p, serde_json::to_string(&v).expect("serialises")).map_err(|e| Error::io(p, e))?;
        println!("json: {}", p.display());
    }
    Ok(())
}

/// The target boxes of `stem` in a photos.json-style file, if it names a target object.
fn target_boxes(boxes: &serde_json::Value, stem: &str) -> Option<Vec<[f32; 4]>> {
    let entry = boxes.get("photos").unwrap_or(boxes).get(stem)?;
    let target = entry.get("target_object")?.as_str()?;
    let v: Vec<[f32; 4]> = entry
        .get("objects")?
        .as_array()?
        .iter()
        .filter(|o| o.get("label").and_then(|l| l.as_str()) == Some(target))
        .filter_map(|o| {
            let b: Vec<f32> = o.get("box")?.as_array()?.iter().filter_map(|x| x.as_f64().map(|x| x as f32)).collect();
            (b.len() == 4).then(|| [b[0], b[1], b[2], b[3]])
        })
        .collect();
    (!v.is_empty()).then_some(v)
}

/// Reads the tuning pairs: `texts` lists captions per image file in `images`.
fn tune_pairs(images: &Path, texts: &Path) -> Result<Vec<ibex::explain::tune::TunePair>> {
    let text = std::fs::read_to_string(texts).map_err(|e| Error::io(texts, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(texts, format!("not valid JSON ({e})")))?;
    let bad = |m: String| Error::format(texts, m);
    let mut list: Vec<(String, String)> = Vec::new();
    match &v {
        serde_json::Value::Array(items) => {
            for (i, it) in items.iter().enumerate() {
                let get = |a: &str, b: &str| it.get(a).or_else(|| it.get(b)).and_then(|x| x.as_str());
                match (get("file", "image"), get("caption", "text")) {
                    (Some(f), Some(c)) => list.push((f.to_string(), c.to_string())),
                    _ => {
                        return Err(bad(format!(
                            "item {i} needs \"file\" (or \"image\") and \"caption\" (or \"text\")"
                        )))
                    }
                }
            }
        }
        serde_json::Value::Object(map) => {
            for (f, c) in map {
                match c {
                    serde_json::Value::String(c) => list.push((f.clone(), c.clone())),
                    serde_json::Value::Array(cs) => {
                        for c in cs {
                            let c = c.as_str().ok_or_else(|| bad(format!("{f}: captions must be strings")))?;
                            list.push((f.clone(), c.to_string()));
                        }
                    }
                    _ => return Err(bad(format!("{f}: expected a caption or a list of captions"))),
                }
            }
        }
        _ => return Err(bad("expected a list of {file, caption} or an object file -> caption(s)".into())),
    }
    if list.is_empty() {
        return Err(bad("no image-caption pairs".into()));
    }
    list.into_iter()
        .map(|(f, caption)| {
            let path = images.join(&f);
            let image = RgbImage::load(&path)?;
            Ok(ibex::explain::tune::TunePair { name: f, image, caption })
        })
        .collect()
}

fn run_tune(a: TuneArgs) -> Result<()> {
    use ibex::explain::tune::{tune, write_recommendation, TuneSettings};
    let device = ibex::device::parse_device(&a.device)?;
    let dir = ibex::hub::resolve_model(&a.model)?;
    let Model::Clip(bundle) = Model::load(None, &dir, &device)? else {
        return Err(Error::invalid(format!(
            "{}: ibex tune chooses M2IB settings for a dual encoder (CLIP, open_clip, SigLIP, BiomedCLIP)",
            dir.display()
        )));
    };
    let mut base = M2ibConfig::for_bundle(&bundle)?;
    if let Some(o) = &a.options {
        let v: serde_json::Value = serde_json::from_str(o).map_err(|e| Error::invalid(format!("--options: {e}")))?;
        base = base.merged(&v)?;
    }
    let mut settings = TuneSettings::for_model(&bundle.model, base);
    if let Some(l) = &a.layers {
        settings.vision_layers = l.clone();
        settings.text_layers = l.clone();
    }
    if let Some(l) = &a.vision_layers {
        settings.vision_layers = l.clone();
    }
    if let Some(l) = &a.text_layers {
        settings.text_layers = l.clone();
    }
    if let Some(b) = &a.betas {
        settings.betas = b.clone();
    }
    settings.curve_steps = a.curve_steps;
    let pairs = tune_pairs(&a.images, &a.texts)?;
    eprintln!(
        "tuning M2IB on {} pairs: vision layers {:?} x text layers {:?} x betas {:?}",
        pairs.len(),
        settings.vision_layers,
        settings.text_layers,
        settings.betas
    );
    let bar = progress_bar(a.quiet, "tune");
    let mut control = RunControl::with_progress(|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        true
    });
    let report = tune(&bundle, &pairs, &settings, &mut control)?;
    drop(control);
    bar.finish_and_clear();
    println!("score: {}", report.score_name);
    println!(
        "{:>6} {:>6} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "vision", "text", "beta", "score", "deletion", "insert", "img drop%", "img incr%", "txt drop%", "txt incr%"
    );
    for (i, c) in report.candidates.iter().enumerate() {
        println!(
            "{:>6} {:>6} {:>7} {:>8.4} {:>8.4} {:>8.4} {:>9.2} {:>9.1} {:>9.2} {:>9.1}{}",
            c.vision_layer,
            c.text_layer,
            c.beta,
            c.score,
            c.image_deletion_auc,
            c.image_insertion_auc,
            c.image_drop,
            c.image_increase,
            c.text_drop,
            c.text_increase,
            if i == report.best { "  <- best" } else { "" }
        );
    }
    println!("best: {}", report.best_options());
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Error::invalid(e.to_string()))?;
        std::fs::write(p, text).map_err(|e| Error::io(p, e))?;
    }
    if !a.dry_run {
        let out = a.out.clone().unwrap_or_else(|| dir.join("ibex.json"));
        let data = serde_json::json!({
            "images": a.images.display().to_string(),
            "texts": a.texts.display().to_string(),
            "pairs": report.pairs,
            "vision_layers": settings.vision_layers,
            "text_layers": settings.text_layers,
            "betas": settings.betas,
            "base": serde_json::to_value(&settings.base).map_err(|e| Error::invalid(e.to_string()))?,
        });
        write_recommendation(&out, &report, &settings.base, data)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn run_eval(a: EvalArgs) -> Result<()> {
    use ibex::metrics::{energy_in_boxes, pointing_hit, CurveSettings};
    let device = ibex::device::parse_device(&a.device)?;
    let dir = match &a.model {
        Some(m) => ibex::hub::resolve_model(m)?,
        None => default_model(),
    };
    let model = Model::load(None, &dir, &device)?;
    let mut opts = serde_json::Map::new();
    if let Some(l) = &a.layer {
        opts.insert("layer".into(), l.clone().into());
    }
    if matches!(a.method.as_str(), "iba" | "m2ib") {
        opts.insert("seed".into(), a.seed.into());
    }
    if let Some(p) = &a.state {
        opts.insert("state".into(), p.display().to_string().into());
    }
    let method = Method::create(&model, &a.method, &serde_json::Value::Object(opts))?;
    let bundle = match &model {
        Model::Classifier(b) => b,
        Model::Clip(b) => return eval_clip(&a, b, &model, &method),
        Model::PipNet(_) => return Err(Error::Unsupported("ibex eval does not score PIP-Net explanations yet".into())),
    };
    if !a.texts.is_empty() {
        return Err(Error::invalid("--text is for CLIP models; a classifier explains its own classes"));
    }
    let boxes = match &a.boxes {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            Some(serde_json::from_str::<serde_json::Value>(&text).map_err(|e| Error::format(p, e.to_string()))?)
        }
        None => None,
    };
    let files = image_files(&a.images)?;
    let bar = progress_bar(a.quiet, "eval");
    bar.set_length(files.len() as u64);
    let settings = CurveSettings::default();
    let mut rows = Vec::new();
    let mut confs = Vec::new();
    println!(
        "{:<16} {:<24} {:>6} {:>6} {:>7} {:>6} {:>8}",
        "image", "target", "MoRF", "LeRF", "LeRF-M", "random", "pointing"
    );
    for (i, f) in files.iter().enumerate() {
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
        let image = RgbImage::load(f)?;
        let ex = method.explain(&model, &image, &Target::default(), &mut RunControl::default())?;
        let input = ibex::explain::classifier::input(bundle, &image)?;
        let fa = ibex::explain::evaluation::of_explanation(bundle, &ex, &input.pre.pixel_values, &settings, a.seed)?;
        let target = ex.prediction.as_ref().map(|p| p.target.clone()).expect("classifier explanation");
        let conf = ibex::explain::evaluation::confidence_of(bundle, &ex, &input.pre.pixel_values)?;
        let road = if a.road {
            let rs = ibex::metrics::RoadSettings { seed: a.seed, ..Default::default() };
            Some(ibex::explain::evaluation::road_of(bundle, &ex, &input.pre.pixel_values, &rs)?)
        } else {
            None
        };
        let mprt = match a.mprt {
            Some(n) => Some(ibex::explain::evaluation::mprt(&method, bundle, &image, &ex, n, a.seed)?),
            None => None,
        };
        let tb = boxes.as_ref().and_then(|b| target_boxes(b, &stem));
        let (hit, energy) = match &tb {
            Some(b) => (Some(pointing_hit(&ex.maps[0].map, b, 0.0)), Some(energy_in_boxes(&ex.maps[0].map, b))),
            None => (None, None),
        };
        bar.set_position(i as u64 + 1);
        bar.suspend(|| {
            println!(
                "{stem:<16} {:<24} {:6.3} {:6.3} {:7.3} {:6.3} {:>8}",
                target.label.chars().take(24).collect::<String>(),
                fa.morf,
                fa.lerf,
                fa.gap,
                fa.random,
                hit.map_or("-", |h| if h { "hit" } else { "miss" })
            )
        });
        rows.push(serde_json::json!({
            "image": stem, "target": target, "morf": fa.morf, "lerf": fa.lerf, "lerf_minus_morf": fa.gap,
            "random": fa.random, "pointing_hit": hit, "energy_in_box": energy,
            "morf_curve": fa.morf_curve, "lerf_curve": fa.lerf_curve,
            "drop": conf.drop, "increase": conf.increase, "road": road, "mprt": mprt,
        }));
        confs.push(conf);
    }
    bar.finish_and_clear();
    let mean = |k: &str| rows.iter().filter_map(|r| r[k].as_f64()).sum::<f64>() / rows.len() as f64;
    let hits: Vec<bool> = rows.iter().filter_map(|r| r["pointing_hit"].as_bool()).collect();
    println!(
        "mean: MoRF {:.3}, LeRF {:.3}, LeRF-MoRF {:.3}, random {:.3}; pointing {}/{}",
        mean("morf"),
        mean("lerf"),
        mean("lerf_minus_morf"),
        mean("random"),
        hits.iter().filter(|&&h| h).count(),
        hits.len()
    );
    let (drop, increase) = ibex::metrics::confidence::summarise(&confs);
    println!("average drop {drop:.1} %, increase in confidence {increase:.1} %");
    let road_gap = rows.iter().filter_map(|r| r["road"]["gap"].as_f64()).collect::<Vec<_>>();
    if !road_gap.is_empty() {
        println!("ROAD LeRF-MoRF {:.3}", road_gap.iter().sum::<f64>() / road_gap.len() as f64);
    }
    if a.mprt.is_some() {
        print_mprt(&rows);
    }
    if let Some(p) = &a.json {
        let v = serde_json::json!({
            "method": a.method, "model": dir.display().to_string(), "images": rows,
            "mean": { "morf": mean("morf"), "lerf": mean("lerf"), "lerf_minus_morf": mean("lerf_minus_morf"), "random": mean("random"),
                      "average_drop_percent": drop, "increase_in_confidence_percent": increase },
            "pointing": { "hits": hits.iter().filter(|&&h| h).count(), "of": hits.len() },
            "protocol": { "tile": settings.tile, "steps": settings.steps, "seed": a.seed },
        });
        std::fs::write(p, serde_json::to_string(&v).expect("serialises")).map_err(|e| Error::io(p, e))?;
        println!("json: {}", p.display());
    }
    if let Some(p) = &a.csv {
        let mut text = String::from(
            "image,target_index,target_label,probability,morf,lerf,lerf_minus_morf,random,pointing_hit,energy_in_box,drop,increase,road_lerf_minus_morf\n",
        );
        for r in &rows {
            let opt = |v: &serde_json::Value| if v.is_null() { String::new() } else { v.to_string() };
            text.push_str(&format!(
                "{},{},\"{}\",{},{},{},{},{},{},{},{},{},{}\n",
                r["image"].as_str().unwrap_or(""),
                r["target"]["index"],
                r["target"]["label"].as_str().unwrap_or("").replace('"', "'"),
                r["target"]["probability"],
                r["morf"],
                r["lerf"],
                r["lerf_minus_morf"],
                r["random"],
                opt(&r["pointing_hit"]),
                opt(&r["energy_in_box"]),
                r["drop"],
                r["increase"],
                opt(&r["road"]["gap"])
            ));
        }
        std::fs::write(p, text).map_err(|e| Error::io(p, e))?;
        println!("csv: {}", p.display());
    }
    Ok(())
}

#[derive(Args)]
struct StatsArgs {
    /// Model directory or Hugging Face id; default: the bundled EfficientNet-Lite0.
    #[arg(long)]
    model: Option<String>,
    /// The tap whose output is described (e.g. blocks.10).
    #[arg(long)]
    layer: String,
    /// Folder of images (PNG, JPEG, WebP, BMP, TIFF); augmented views cycle through them.
    #[arg(long)]
    images: PathBuf,
    /// Output safetensors file (use it with `explain --stats`).
    #[arg(long)]
    out: PathBuf,
    /// Augmented views to average over (the IBA authors recommend 10,000).
    #[arg(long, default_value_t = 10_000)]
    samples: usize,
    /// Seed of the augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Views per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Compute device: cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

use ibex::imaging::folder::image_files;

fn run_stats(a: StatsArgs) -> Result<()> {
    let device = ibex::device::parse_device(&a.device)?;
    let dir = match &a.model {
        Some(m) => ibex::hub::resolve_model(m)?,
        None => default_model(),
    };
    let Model::Classifier(bundle) = Model::load(None, &dir, &device)? else {
        return Err(Error::Unsupported("feature statistics are for classifiers (IBA)".into()));
    };
    let images = image_files(&a.images)?.iter().map(|p| RgbImage::load(p)).collect::<Result<Vec<_>>>()?;
    let bar = progress_bar(a.quiet, "stats");
    bar.set_length(a.samples as u64);
    let mut control = RunControl::with_progress(|done, _| {
        bar.set_position(done as u64);
        true
    });
    let est =
        ibex::explain::iba::stats::estimate(&bundle, &a.layer, &images, a.samples, a.seed, a.batch, &mut control)?;
    drop(control);
    bar.finish_and_clear();
    let defaults = ibex::explain::IbaConfig::default();
    est.save(&a.out, defaults.min_std, defaults.active_threshold)?;
    println!("{} samples of '{}' from {} images -> {}", est.count(), a.layer, images.len(), a.out.display());
    Ok(())
}

#[derive(Args)]
struct InfoArgs {
    /// Model directory or Hugging Face id; default: the bundled EfficientNet-Lite0.
    #[arg(long)]
    model: Option<String>,
    /// Compute device: cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn run_info(a: InfoArgs) -> Result<()> {
    let device = ibex::device::parse_device(&a.device)?;
    let dir = match &a.model {
        Some(m) => ibex::hub::resolve_model(m)?,
        None => default_model(),
    };
    let start = std::time::Instant::now();
    let model = Model::load(None, &dir, &device)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    println!("model: {} ({})", dir.display(), model.kind());
    println!("loaded in {ms:.0} ms on {}", ibex::device::device_name(&device));
    match &model {
        Model::Classifier(b) => {
            println!("classes: {} ({} … {})", b.network.num_classes, b.label(0), b.label(b.network.num_classes - 1));
            println!("taps: {}", b.network.taps().join(", "));
            let rec = &b.recommended;
            if rec.as_object().is_some_and(|o| !o.is_empty()) {
                println!("recommended settings (ibex.json): {rec}");
            }
        }
        Model::PipNet(b) => {
            let sheet = b.model.sheet_size()?;
            println!(
                "scoring sheet: {} relevant prototypes (global size), {} relevant weights, sparsity {:.4}",
                sheet.relevant.len(),
                sheet.relevant_weights,
                sheet.sparsity
            );
            println!(
                "PIP-Net: {} prototypes, {} classes ({} … {}), {}x{} input, backbone taps {}",
                b.model.prototypes(),
                b.model.classes(),
                b.labels[0],
                b.labels[b.labels.len() - 1],
                b.image_size,
                b.image_size,
                b.model.backbone.taps().join(", ")
            );
        }
        Model::Clip(b) => {
            let c = &b.model.config;
            println!(
                "vision layers: 0..={}, text layers: 0..={}, patch grid {}x{}, {}x{} input, embedding {}",
                b.model.vision.depth() - 1,
                b.model.text.depth() - 1,
                c.vision.grid(),
                c.vision.grid(),
                c.vision.image_size,
                c.vision.image_size,
                c.projection_dim
            );
            println!(
                "text: {} positions, vocabulary {}{}",
                c.text.max_position_embeddings,
                c.text.vocab_size,
                if c.text.pad_to_context.is_some() { ", captions padded to the full context" } else { "" }
            );
            let m = M2ibConfig::for_bundle(b)?;
            let (lv, lt) = m.resolve_layers(&b.model)?;
            println!("M2IB defaults: vision layer {lv}, text layer {lt}, beta {}", m.bottleneck.beta);
            if let Some(t) = &b.recommended.tuned {
                println!("tuned by ibex tune: {t}");
            }
        }
    }
    Ok(())
}

#[derive(Args)]
struct ExplainArgs {
    /// Image file (PNG, JPEG, WebP, BMP, TIFF).
    image: PathBuf,
    /// Model directory or Hugging Face id; default: the bundled EfficientNet-Lite0 (ImageNet).
    #[arg(long)]
    model: Option<String>,
    /// Method: iba, iba-readout, dual-ib, gradcam, saliency, ig, occlusion (classifiers), m2ib
    /// (CLIP). Default: iba, or m2ib for CLIP.
    #[arg(long)]
    method: Option<String>,
    /// Class to explain (index); default: the predicted class.
    #[arg(long)]
    target: Option<usize>,
    /// Caption to explain (CLIP); repeat for several.
    #[arg(long = "text")]
    texts: Vec<String>,
    /// Tap to explain at (e.g. blocks.10); default: the model's recommendation.
    #[arg(long)]
    layer: Option<String>,
    /// Compression weight β (IBA default 10, M2IB 0.1).
    #[arg(long)]
    beta: Option<f64>,
    /// Optimisation steps (default 10).
    #[arg(long)]
    steps: Option<usize>,
    /// Noise samples per step (default 10).
    #[arg(long)]
    samples: Option<usize>,
    /// At most this many samples per pass, to bound memory (default: all).
    #[arg(long)]
    samples_per_pass: Option<usize>,
    /// Noise seed (default 0): the same seed gives the same map.
    #[arg(long)]
    seed: Option<u64>,
    /// IBA feature statistics (safetensors from `ibex stats`); default: the model's.
    #[arg(long)]
    stats: Option<PathBuf>,
    /// A trained state: `ibex iba fit-readout` (iba-readout) or `ibex dual-ib fit` (dual-ib).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Dual-IB: where α comes from, `readout` (the trained infer network, one pass) or
    /// `per-sample` (IBA's optimisation; any --target).
    #[arg(long)]
    alpha: Option<String>,
    /// Refuse images with more pixels than this (default: the library's ceiling, 2^28).
    #[arg(long)]
    max_pixels: Option<u64>,
    /// Score this explanation: deletion / LeRF AUCs, ROAD, drop / increase in confidence and
    /// the MPRT sanity check (5 stages) for a classifier; drop / increase for CLIP. Printed and
    /// written into --json under "report".
    #[arg(long)]
    report: bool,
    /// Compute device: cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write the main map over the original image to this PNG.
    #[arg(long)]
    overlay: Option<PathBuf>,
    /// PIP-Net: write the local explanation sheet (the input with a box per contributing
    /// prototype, their patches, and bars for their contributions) to this PNG.
    #[arg(long)]
    sheet: Option<PathBuf>,
    /// Colormap of the overlay: turbo, jet, viridis, gray.
    #[arg(long, default_value = "turbo")]
    colormap: String,
    /// Opacity of the heatmap in the overlay (0..1).
    #[arg(long, default_value_t = 0.5)]
    opacity: f32,
    /// Write the JSON report (maps with data, target, top-5, settings, timing) to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// DICOM input: write the main map as a Parametric Map (float values at the source's size)
    /// and as a Secondary Capture overlay into this directory, in the source's study.
    #[arg(long)]
    dicom_out: Option<PathBuf>,
    #[command(flatten)]
    dicom: DicomReadArgs,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct M2ibArgs {
    /// Model directory (HF CLIP, open_clip, SigLIP or BiomedCLIP layout) or Hugging Face id;
    /// default: the bundled demo model.
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

/// The bundled classifier: `IBEX_DEFAULT_MODEL`, else `models/efficientnet-lite0` of the
/// source tree.
fn default_model() -> PathBuf {
    std::env::var_os("IBEX_DEFAULT_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join("efficientnet-lite0"))
}

fn progress_bar(quiet: bool, label: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    if !quiet && std::io::stderr().is_terminal() {
        let t = format!("{{spinner}} {label} [{{bar:30}}] {{pos}}/{{len}} steps {{elapsed_precise}}");
        bar.set_style(indicatif::ProgressStyle::with_template(&t).expect("template").progress_chars("=> "));
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

fn run_explain(a: ExplainArgs) -> Result<()> {
    let device = ibex::device::parse_device(&a.device)?;
    let dir = match &a.model {
        Some(m) => ibex::hub::resolve_model(m)?,
        None => default_model(),
    };
    let model = Model::load(None, &dir, &device)?;
    let method = match (&a.method, &model) {
        (Some(m), _) => m.to_ascii_lowercase(),
        (None, Model::Clip(_)) => "m2ib".into(),
        (None, Model::Classifier(_)) => "iba".into(),
        (None, Model::PipNet(_)) => "pipnet".into(),
    };
    let mut opts = serde_json::Map::new();
    if let Some(l) = &a.layer {
        // CLIP layers are numbers; classifier taps are names
        let v = match (&model, l.parse::<usize>()) {
            (Model::Clip(_), Ok(n)) => n.into(),
            _ => l.clone().into(),
        };
        opts.insert("layer".into(), v);
    }
    let mut set = |k: &str, v: Option<serde_json::Value>| {
        if let Some(v) = v {
            opts.insert(k.into(), v);
        }
    };
    set("beta", a.beta.map(Into::into));
    set("steps", a.steps.map(Into::into));
    set("samples", a.samples.map(Into::into));
    set("samples_per_pass", a.samples_per_pass.map(Into::into));
    set("seed", a.seed.map(Into::into));
    // relative to where the command runs (a relative path in ibex.json is relative to the model)
    let stats = a.stats.as_ref().map(|p| std::path::absolute(p).map_err(|e| Error::io(p, e))).transpose()?;
    set("statistics", stats.map(|p| p.display().to_string().into()));
    set("state", a.state.as_ref().map(|p| p.display().to_string().into()));
    set("max_pixels", a.max_pixels.map(Into::into));
    set("alpha", a.alpha.clone().map(Into::into));
    let m = Method::create(&model, &method, &serde_json::Value::Object(opts))?;
    let cmap: Colormap = a.colormap.parse()?;
    if !(0.0..=1.0).contains(&a.opacity) {
        return Err(Error::invalid(format!("--opacity must be in 0..1, got {}", a.opacity)));
    }
    let (image, dicom_source) = load_image(&a.image, &a.dicom)?;
    if a.dicom_out.is_some() && dicom_source.is_none() {
        return Err(Error::invalid(format!("--dicom-out needs a DICOM image, and {} is not one", a.image.display())));
    }
    let target = Target { class_index: a.target, texts: a.texts.clone() };
    let bar = progress_bar(a.quiet, &method);
    let mut control = RunControl::with_progress(|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        true
    });
    let ex = m.explain(&model, &image, &target, &mut control)?;
    drop(control);
    bar.finish_and_clear();
    print_summary(&ex);
    let report = if a.report { Some(explain_report(&m, &model, &image, &ex)?) } else { None };
    if let Some(path) = &a.overlay {
        write_png(&overlay_on_original(&image, &ex.maps[0].map, ex.source_region, cmap, a.opacity)?, path)?;
        println!("overlay: {}", path.display());
    }
    if let Some(path) = &a.sheet {
        let Model::PipNet(b) = &model else {
            return Err(Error::invalid("--sheet is for PIP-Net models"));
        };
        let entries: Vec<ibex::imaging::sheet::SheetEntry> = ex
            .summary
            .get("prototypes")
            .and_then(|p| p.as_array())
            .map(|a| a.as_slice())
            .unwrap_or(&[])
            .iter()
            .filter_map(|p| {
                let four = |k: &str| -> Option<[u32; 4]> { serde_json::from_value(p[k].clone()).ok() };
                Some(ibex::imaging::sheet::SheetEntry {
                    rect: four("box")?,
                    patch: four("patch_box")?,
                    contribution: p["contribution"].as_f64()? as f32,
                })
            })
            .collect();
        write_png(&ibex::imaging::sheet::prototype_sheet(&ex.image, &entries, b.patchsize)?, path)?;
        println!("sheet: {}", path.display());
    }
    if let (Some(dir), Some(source)) = (&a.dicom_out, &dicom_source) {
        use ibex::dicom::write;
        let options = write::DerivedOptions {
            method: ex.method.clone(),
            target: ex.target_description(),
            colormap: cmap,
            opacity: a.opacity,
        };
        let pm = write::parametric_map(&source.source, &ex.maps[0], ex.source_region, &options)?;
        println!("parametric map: {}", write::write_into(dir, "pm", &pm)?.display());
        let sc = write::secondary_capture(&source.source, &source.image, &ex.maps[0], ex.source_region, &options)?;
        println!("secondary capture: {}", write::write_into(dir, "sc", &sc)?.display());
    }
    if let Some(path) = &a.json {
        let mut v = ex.report(Some(&dir.display().to_string()), true);
        if let Some(r) = report {
            v["report"] = r;
        }
        let text = serde_json::to_string(&v).expect("report serialises");
        std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
        println!("json: {}", path.display());
    }
    Ok(())
}

/// An image file, or a DICOM frame (then also the DICOM source, for `--dicom-out`).
fn load_image(path: &std::path::Path, dicom: &DicomReadArgs) -> Result<(RgbImage, Option<ibex::dicom::DicomImage>)> {
    if ibex::imaging::image::is_dicom_file(path)? {
        let d = ibex::dicom::load(path, &dicom.options()?)?;
        Ok((d.image.clone(), Some(d)))
    } else {
        Ok((RgbImage::load(path)?, None))
    }
}

/// `ibex dicom`: the header as read and the decoded values' statistics.
fn run_dicom(a: DicomCmdArgs) -> Result<()> {
    let r = ibex::dicom::report(&a.file, &a.read.options()?, a.read.frame.is_some())?;
    let i = &r.info;
    println!("{}", a.file.display());
    println!("  modality {}  SOP class {}  instance {}", i.modality, i.sop_class_uid, i.sop_instance_uid);
    println!("  study {}  series {}", i.study_instance_uid, i.series_instance_uid);
    if !i.frame_of_reference_uid.is_empty() {
        println!("  frame of reference {}", i.frame_of_reference_uid);
    }
    println!("  transfer syntax {} ({})", i.transfer_syntax_uid, i.transfer_syntax_name);
    println!(
        "  {} x {} (columns x rows), {} frame{}, {} sample{} per pixel, {} bits stored of {} ({}), {}{}",
        i.columns,
        i.rows,
        i.frames,
        if i.frames == 1 { "" } else { "s" },
        i.samples_per_pixel,
        if i.samples_per_pixel == 1 { "" } else { "s" },
        i.bits_stored,
        i.bits_allocated,
        if i.pixel_representation == 1 { "signed" } else { "unsigned" },
        i.photometric_interpretation,
        if i.samples_per_pixel > 1 {
            format!(", planar configuration {}", i.planar_configuration)
        } else {
            String::new()
        }
    );
    if let Some([r, c]) = i.pixel_spacing {
        println!("  pixel spacing {r} x {c} mm (row x column)");
    }
    let rescales: Vec<String> = i.rescale.iter().map(|r| format!("x {} + {}", r.slope, r.intercept)).collect();
    println!(
        "  rescale {}{}",
        rescales.join(", "),
        if i.rescale_type.is_empty() { String::new() } else { format!(" ({})", i.rescale_type) }
    );
    let windows: Vec<String> = i.windows.iter().map(|w| format!("{}/{}", w.center, w.width)).collect();
    println!("  windows (centre/width) {}", if windows.is_empty() { "none".into() } else { windows.join(", ") });
    if let Some(w) = r.window_applied {
        println!("  window applied for display: {}/{}", w.center, w.width);
    }
    for f in &r.frames_decoded {
        println!("  frame {:>4}: min {} max {} mean {:.6}", f.frame, f.stats.min, f.stats.max, f.stats.mean);
    }
    println!("  overall:    min {} max {} mean {:.6}", r.overall.min, r.overall.max, r.overall.mean);
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&r).expect("report serialises");
        std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
        println!("json: {}", path.display());
    }
    Ok(())
}

/// `--report`: the metrics of one explanation, printed and returned as JSON.
fn explain_report(m: &Method, model: &Model, image: &RgbImage, ex: &Explanation) -> Result<serde_json::Value> {
    use ibex::explain::evaluation as ev;
    match model {
        Model::Classifier(b) => {
            let input = ibex::explain::classifier::input(b, image)?;
            let px = &input.pre.pixel_values;
            let fa = ev::of_explanation(b, ex, px, &ibex::metrics::CurveSettings::default(), 0)?;
            let road = ev::road_of(b, ex, px, &ibex::metrics::RoadSettings::default())?;
            let conf = ev::confidence_of(b, ex, px)?;
            let mprt = ev::mprt(m, b, image, ex, 5, 0)?;
            println!("report:");
            println!(
                "  deletion (MoRF) AUC {:.3}, LeRF AUC {:.3}, LeRF-MoRF {:.3} (random order: {:.3})",
                fa.morf, fa.lerf, fa.gap, fa.random
            );
            println!("  ROAD MoRF {:.3}, LeRF {:.3}, LeRF-MoRF {:.3}", road.morf_mean, road.lerf_mean, road.gap);
            println!("  drop in confidence {:.1} %, increase {}", 100.0 * conf.drop, conf.increase);
            for s in &mprt {
                let v = s.spearman.map_or("undefined (constant map)".to_string(), |v| format!("{v:.3}"));
                println!("  MPRT randomised down to {:<12} Spearman {v}", s.randomised_down_to);
            }
            Ok(serde_json::json!({ "faithfulness": fa, "road": road, "confidence": conf, "mprt": mprt }))
        }
        Model::PipNet(_) => Err(Error::Unsupported("--report is not available for PIP-Net yet".into())),
        Model::Clip(b) => {
            let mut out = Vec::new();
            println!("report:");
            for i in 0..ex.texts.len() {
                let c = ev::clip_confidence(b, ex, image, i)?;
                println!("  caption {i}: drop in confidence {:.1} %, increase {}", 100.0 * c.drop, c.increase);
                out.push(c);
            }
            Ok(serde_json::json!({ "confidence": out }))
        }
    }
}

fn print_summary(ex: &Explanation) {
    if let Some(p) = &ex.prediction {
        println!("top-5:");
        for c in &p.top5 {
            println!("  {:>4}  {:<30} {:6.2} %", c.index, c.label, 100.0 * c.probability);
        }
        println!(
            "explained: class {} ({}), p = {:.3}, method {}",
            p.target.index, p.target.label, p.target.probability, ex.method
        );
    }
    for t in &ex.texts {
        println!("caption {:?}: image-text cosine {:.4}", t.caption, t.similarity);
        for (tok, s) in t.tokens.iter().zip(&t.scores) {
            println!("  {tok:>18}  {s:5.3}  {}", "#".repeat((s * 20.0).round() as usize));
        }
    }
    let main = &ex.maps[0];
    let (x, y) = main.map.argmax();
    for (k, v) in &ex.summary {
        match v {
            serde_json::Value::Array(a) if !a.iter().all(|x| x.is_number()) => {
                println!("{k}: {} entries (see --json)", a.len())
            }
            _ => println!("{k}: {v}"),
        }
    }
    if let Some(protos) = ex.summary.get("prototypes").and_then(|p| p.as_array()) {
        for p in protos {
            println!(
                "  prototype {:>4}: presence {:.3} × weight {:.3} = {:.3} at {}",
                p["index"],
                p["presence"].as_f64().unwrap_or(0.0),
                p["weight"].as_f64().unwrap_or(0.0),
                p["contribution"].as_f64().unwrap_or(0.0),
                p["box"]
            );
        }
    }
    println!(
        "map '{}' ({}, {}x{}): peak at (x={x}, y={y}), sum {:.1}",
        main.name,
        main.units,
        main.map.width,
        main.map.height,
        main.map.sum()
    );
    println!("elapsed: {:.0} ms", ex.elapsed_ms);
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
    let bar = progress_bar(a.quiet, "M2IB");
    bar.set_length(m2ib.total_steps(captions.len()) as u64);
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
            write_png(&overlay_on_original(&image, &c.image_map, ex.source_region, cmap, a.opacity)?, &path)?;
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
        Command::Explain(a) => run_explain(a),
        Command::M2ib(a) => run_m2ib(a),
        Command::Info(a) => run_info(a),
        Command::Stats(a) => run_stats(a),
        Command::Eval(a) => run_eval(a),
        Command::Dicom(a) => run_dicom(a),
        Command::Tune(a) => run_tune(a),
        Command::Iba(IbaCommand::FitReadout(a)) => run_fit_readout(a),
        Command::Pipnet(PipnetCommand::Convert(a)) => run_convert(a),
        Command::Pipnet(PipnetCommand::Thresholds(a)) => run_thresholds(a),
        Command::Pipnet(PipnetCommand::Prototypes(a)) => run_prototypes(a),
        Command::Pipnet(PipnetCommand::Train(a)) => run_train(a),
        Command::Pipnet(PipnetCommand::Explain(a)) => run_explain(a.into()),
        Command::Pipnet(PipnetCommand::Eval(a)) => run_pipnet_eval(a),
        Command::DualIb(DualIbCommand::Fit(a)) => run_fit_dual_ib(a),
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
