//! M2IB from Rust: one image, several captions, with a progress callback and a cancel token.
//!
//! `cargo run --example m2ib [MODEL_DIR] [IMAGE] [CAPTION...]`

use ibex::explain::m2ib::{M2ib, M2ibConfig};
use ibex::imaging::{colormap::Colormap, image::RgbImage, overlay};
use ibex::models::clip::ClipBundle;
use ibex::{CancelToken, RunControl};

fn main() -> ibex::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "models/fmnist-clip".into());
    let image = args.next().unwrap_or_else(|| "examples/images/four_items.png".into());
    let mut captions: Vec<String> = args.collect();
    if captions.is_empty() {
        captions = vec!["a sandal".into(), "an ankle boot".into()];
    }

    let bundle = ClipBundle::load(model.as_ref(), &candle_core::Device::Cpu)?;
    // the paper's defaults, then what the model directory recommends (ibex.json), then ours
    let config = M2ibConfig::for_bundle(&bundle)?.merged(&serde_json::json!({ "seed": 1 }))?;
    let m2ib = M2ib::new(config)?;
    let img = RgbImage::load(image.as_ref())?;

    let cancel = CancelToken::new(); // another thread may call cancel.cancel()
    let mut control = RunControl {
        cancel: Some(cancel.clone()),
        progress: Some(Box::new(|done, total| {
            eprint!("\r{done}/{total} steps");
            true
        })),
    };
    let caps: Vec<&str> = captions.iter().map(String::as_str).collect();
    let ex = m2ib.explain(&bundle, &img, &caps, &mut control)?;
    eprintln!();

    for (i, c) in ex.captions.iter().enumerate() {
        let (x, y) = c.image_map.argmax();
        println!("{:?}: cosine {:.3}, image map peak at ({x}, {y})", c.caption, c.similarity);
        for (tok, score) in c.tokens.text.iter().zip(&c.text_scores) {
            println!("  {tok:>16} {score:.3}");
        }
        let path = format!("m2ib_example_{i}.png");
        overlay::write_png(&overlay::overlay(&ex.image, &c.image_map, Colormap::Viridis, 0.6)?, path.as_ref())?;
        println!("  overlay: {path}");
    }
    println!("{:.0} ms, settings {}", ex.elapsed_ms, serde_json::to_string(&ex.config).unwrap());
    Ok(())
}
