//! ROAD and MPRT on EfficientNet-Lite0 with Grad-CAM at `blocks.10`. ROAD agrees in sign with
//! the reference's tile-deletion LeRF − MoRF: positive on giraffe (reference +0.315), negative
//! on coffee (−0.259: Grad-CAM is anti-faithful there by both protocols), and a random map
//! scores about 0. Cascading randomisation destroys the map from the first (logits)
//! layer on, while a copy with nothing randomised gives it back exactly.

mod common;
use candle_core::Device;
use common::*;
use ibex::explain::{classifier, evaluation, Method, Target};
use ibex::imaging::heatmap::Heatmap;
use ibex::metrics::RoadSettings;
use ibex::models::Model;
use ibex::RunControl;

#[test]
fn road_and_mprt_on_gradcam() {
    let model = Model::load(None, &efficientnet_dir(), &Device::Cpu).unwrap();
    let Model::Classifier(bundle) = &model else { unreachable!() };
    let m = Method::create(&model, "gradcam", &serde_json::json!({"layer": "blocks.10"})).unwrap();
    let image = photo224("giraffe");
    let mut ex = m.explain(&model, &image, &Target::default(), &mut RunControl::default()).unwrap();
    let input = classifier::input(bundle, &image).unwrap();
    let px = &input.pre.pixel_values;
    let road = evaluation::road_of(bundle, &ex, px, &RoadSettings::default()).unwrap();
    let conf = evaluation::confidence_of(bundle, &ex, px).unwrap();

    let mprt = evaluation::mprt(&m, bundle, &image, &ex, 3, 0).unwrap();
    let same = bundle.with_network(bundle.network.with_top_randomised(0, 0).unwrap());
    let again = m
        .explain(
            &Model::Classifier(same),
            &image,
            &Target { class_index: Some(ex.prediction.as_ref().unwrap().target.index), texts: vec![] },
            &mut RunControl::default(),
        )
        .unwrap();
    assert_eq!(spearman(&again.maps[0].map.data, &ex.maps[0].map.data), 1.0);

    // a random map (seeded): its ROAD curves are the same in expectation, gap ≈ 0
    let turned = &mut ex.maps[0].map;
    let noise: Vec<f32> = (0..turned.data.len()).map(|i| ((i as u64 * 2654435761) % 1000) as f32).collect();
    *turned = Heatmap::new(turned.width, turned.height, noise).unwrap();
    let road_turned = evaluation::road_of(bundle, &ex, px, &RoadSettings::default()).unwrap();
    eprintln!(
        "Grad-CAM on giraffe: ROAD MoRF {:.3} LeRF {:.3} gap {:.3} (random map {:.3}); drop {:.1} %; MPRT {:?}",
        road.morf_mean,
        road.lerf_mean,
        road.gap,
        road_turned.gap,
        100.0 * conf.drop,
        mprt.iter().map(|s| (s.randomised_down_to.as_str(), s.spearman)).collect::<Vec<_>>()
    );
    assert_eq!(road.morf.len(), 9);
    assert!(road.gap > 0.05, "ROAD gap {}", road.gap);
    assert!(
        road_turned.gap.abs() < 0.1 && road_turned.gap < road.gap - 0.1,
        "random map {} vs {}",
        road_turned.gap,
        road.gap
    );
    assert_eq!(mprt[0].randomised_down_to, "logits");
    // random class weights: the class-specific map is gone
    assert!(mprt[0].spearman.unwrap() < 0.5, "{mprt:?}");
    assert!(mprt.iter().all(|s| s.spearman.unwrap() < 0.5), "{mprt:?}");
    // pooling has no weights: the cascade goes on to the next stage with some
    assert!(mprt.iter().all(|s| s.randomised_down_to != "pooled"), "{mprt:?}");

    let coffee = photo224("coffee");
    let ex = m.explain(&model, &coffee, &Target::default(), &mut RunControl::default()).unwrap();
    let input = classifier::input(bundle, &coffee).unwrap();
    let road_coffee = evaluation::road_of(bundle, &ex, &input.pre.pixel_values, &RoadSettings::default()).unwrap();
    eprintln!("Grad-CAM on coffee: ROAD gap {:.3} (reference tile deletion -0.259)", road_coffee.gap);
    assert!(road_coffee.gap < 0.0, "{road_coffee:?}");
}
