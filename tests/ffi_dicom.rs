//! DICOM through the C ABI: reading with options (file and memory), the info accessor and the
//! header JSON, derived Parametric Map / Secondary Capture bytes, overlay PNG bytes, and bad
//! arguments.
#![cfg(feature = "dicom")]

mod common;

use ibex::ffi::bytes::*;
use ibex::ffi::dicom::*;
use ibex::ffi::explain::*;
use ibex::ffi::image::*;
use ibex::ffi::model::*;
use ibex::ffi::options::*;
use ibex::ffi::render::*;
use ibex::ffi::result::*;
use ibex::ffi::status::*;
use std::ffi::{c_char, CStr, CString};
use std::ptr::{null, null_mut};

fn msg() -> String {
    unsafe { CStr::from_ptr(ibex_last_error_message()) }.to_string_lossy().into_owned()
}

fn cs(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn fixture(name: &str) -> CString {
    cs(common::fixtures().join("images").join("dicom").join(name).to_str().unwrap())
}

fn options() -> ibex_dicom_options {
    ibex_dicom_options {
        struct_size: std::mem::size_of::<ibex_dicom_options>() as u32,
        frame: 0,
        window_index: 0,
        use_window: 0,
        window_center: 0.0,
        window_width: 0.0,
        max_samples: 0,
    }
}

fn info_of(img: *const ibex_image) -> (i32, ibex_dicom_info) {
    let mut info: ibex_dicom_info = unsafe { std::mem::zeroed() };
    info.struct_size = std::mem::size_of::<ibex_dicom_info>() as u32;
    let st = unsafe { ibex_image_dicom_info(img, &mut info) };
    (st, info)
}

fn text(chars: &[c_char]) -> String {
    unsafe { CStr::from_ptr(chars.as_ptr()) }.to_string_lossy().into_owned()
}

fn view_of(img: *const ibex_image) -> ibex_image_view {
    let mut v: ibex_image_view = unsafe { std::mem::zeroed() };
    v.struct_size = std::mem::size_of::<ibex_image_view>() as u32;
    assert_eq!(unsafe { ibex_image_get_view(img, &mut v) }, IBEX_OK, "{}", msg());
    v
}

fn view_bytes(v: &ibex_image_view) -> Vec<u8> {
    unsafe { std::slice::from_raw_parts(v.data as *const u8, v.data_len) }.to_vec()
}

fn take(bytes: *mut ibex_bytes) -> Vec<u8> {
    let (mut p, mut n) = (null(), 0usize);
    assert_eq!(unsafe { ibex_bytes_data(bytes, &mut p, &mut n) }, IBEX_OK);
    let v = unsafe { std::slice::from_raw_parts(p, n) }.to_vec();
    unsafe { ibex_bytes_free(bytes) };
    v
}

#[test]
fn dicom_images_with_options_info_and_json() {
    unsafe {
        // Frame 3 of the multi-frame MR, with a given window.
        let mut o = options();
        o.frame = 3;
        o.use_window = 1;
        o.window_center = 100.0;
        o.window_width = 200.0;
        let mut img = null_mut();
        assert_eq!(ibex_image_load_dicom(fixture("emri_small.dcm").as_ptr(), &o, &mut img), IBEX_OK, "{}", msg());
        let (st, info) = info_of(img);
        assert_eq!(st, IBEX_OK, "{}", msg());
        assert_eq!((info.rows, info.columns, info.frames, info.frame), (64, 64, 10, 3));
        assert_eq!((info.has_window, info.window_center, info.window_width), (1, 100.0, 200.0));
        assert_eq!(text(&info.modality), "MR");
        assert_eq!(text(&info.sop_class_uid), "1.2.840.10008.5.1.4.1.1.4.1");
        assert!(text(&info.study_instance_uid).starts_with("1.2.826.0.1.3680043"));
        let v = view_of(img);
        assert_eq!((v.width, v.height, v.pixel_type), (64, 64, IBEX_PIXEL_F32));
        let mut js = null_mut();
        assert_eq!(ibex_image_dicom_json(img, &mut js), IBEX_OK);
        let json: serde_json::Value = serde_json::from_slice(&take(js)).unwrap();
        assert_eq!(json["frames"], 10);
        assert_eq!(json["frame"], 3);
        assert_eq!(json["window_applied"]["center"], 100.0);

        // The same file from memory gives the same pixels; a CT's geometry comes through.
        let bytes = std::fs::read(common::fixtures().join("images/dicom/emri_small.dcm")).unwrap();
        let mut mem = null_mut();
        let st = ibex_image_load_dicom_memory(bytes.as_ptr(), bytes.len(), cs("emri").as_ptr(), &o, &mut mem);
        assert_eq!(st, IBEX_OK, "{}", msg());
        assert_eq!(view_bytes(&view_of(mem)), view_bytes(&v));
        ibex_image_free(mem);
        ibex_image_free(img);

        let mut ct = null_mut();
        assert_eq!(ibex_image_load_file(fixture("CT_small.dcm").as_ptr(), &mut ct), IBEX_OK, "{}", msg());
        let (st, info) = info_of(ct);
        assert_eq!(st, IBEX_OK);
        assert_eq!(info.has_pixel_spacing, 1);
        assert!((info.pixel_spacing[0] - 0.661468).abs() < 1e-9);
        assert_eq!((info.has_image_position, info.has_image_orientation), (1, 1));
        assert_eq!((info.rescale_slope, info.rescale_intercept), (1.0, -1024.0));
        assert!(!text(&info.frame_of_reference_uid).is_empty());
        ibex_image_free(ct);

        // A PNG has no DICOM info.
        let mut png = null_mut();
        let p = cs(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/images/chelsea.png"));
        assert_eq!(ibex_image_load_file(p.as_ptr(), &mut png), IBEX_OK);
        assert_eq!(info_of(png).0, IBEX_ERR_INVALID_ARGUMENT);
        assert!(msg().contains("not read from a DICOM file"), "{}", msg());
        ibex_image_free(png);
    }
}

#[test]
fn bad_dicom_arguments_get_statuses_and_messages() {
    unsafe {
        let mut img = null_mut();
        let st = ibex_image_load_dicom(fixture("corrupt/corrupt_bad_length_MR_small.dcm").as_ptr(), null(), &mut img);
        assert_eq!(st, IBEX_ERR_FORMAT);
        assert!(msg().contains("declares 4278198272 bytes"), "{}", msg());
        assert!(img.is_null());
        let junk = [0u8; 200];
        let st = ibex_image_load_dicom_memory(junk.as_ptr(), junk.len(), null(), null(), &mut img);
        assert_eq!(st, IBEX_ERR_FORMAT);
        assert!(msg().contains("<memory>") && msg().contains("DICM"), "{}", msg());
        assert_eq!(ibex_image_load_dicom_memory(null(), 10, null(), null(), &mut img), IBEX_ERR_NULL_POINTER);
        assert_eq!(ibex_image_load_dicom(null(), null(), &mut img), IBEX_ERR_NULL_POINTER);
        let mut o = options();
        o.struct_size = 8;
        assert_eq!(ibex_image_load_dicom(fixture("MR_small.dcm").as_ptr(), &o, &mut img), IBEX_ERR_INVALID_ARGUMENT);
        assert!(msg().contains("sizeof(ibex_dicom_options)"), "{}", msg());
        // Zero-initialised options are the defaults: CT_small has no window, so its full range.
        let mut zeroed: ibex_dicom_options = std::mem::zeroed();
        zeroed.struct_size = std::mem::size_of::<ibex_dicom_options>() as u32;
        assert_eq!(ibex_image_load_dicom(fixture("CT_small.dcm").as_ptr(), &zeroed, &mut img), IBEX_OK, "{}", msg());
        ibex_image_free(img);
        img = null_mut();
        zeroed.window_index = 1;
        assert_eq!(
            ibex_image_load_dicom(fixture("CT_small.dcm").as_ptr(), &zeroed, &mut img),
            IBEX_ERR_INVALID_ARGUMENT
        );
        assert!(msg().contains("window index 1 requested, but the file offers 0 windows"), "{}", msg());
        let mut o = options();
        o.window_index = -2;
        assert_eq!(ibex_image_load_dicom(fixture("MR_small.dcm").as_ptr(), &o, &mut img), IBEX_ERR_INVALID_ARGUMENT);
        let mut o = options();
        o.frame = 1;
        assert_eq!(ibex_image_load_dicom(fixture("MR_small.dcm").as_ptr(), &o, &mut img), IBEX_ERR_INVALID_ARGUMENT);
        assert!(msg().contains("frame 1 requested"), "{}", msg());
        let mut o = options();
        o.max_samples = 100;
        assert_eq!(ibex_image_load_dicom(fixture("MR_small.dcm").as_ptr(), &o, &mut img), IBEX_ERR_INVALID_ARGUMENT);
        let p = common::fixtures().join("images/dicom/JPEG-LL.dcm");
        let mut bytes = std::fs::read(&p).unwrap();
        let at = bytes.windows(22).position(|w| w == b"1.2.840.10008.1.2.4.70").unwrap();
        bytes[at..at + 22].copy_from_slice(b"1.2.840.10008.1.2.4.51");
        let st = ibex_image_load_dicom_memory(bytes.as_ptr(), bytes.len(), null(), null(), &mut img);
        assert_eq!(st, IBEX_ERR_UNSUPPORTED);
        assert!(msg().contains("unsupported transfer syntax 1.2.840.10008.1.2.4.51"), "{}", msg());
        let mut info: ibex_dicom_info = std::mem::zeroed();
        assert_eq!(ibex_image_dicom_info(null(), &mut info), IBEX_ERR_NULL_POINTER);
        assert!(img.is_null());
    }
}

#[test]
fn derived_objects_and_overlays_as_bytes() {
    unsafe {
        let dir = cs(concat!(env!("CARGO_MANIFEST_DIR"), "/models/efficientnet-lite0"));
        let mut model = null_mut();
        assert_eq!(ibex_model_load(null(), dir.as_ptr(), null(), &mut model), IBEX_OK, "{}", msg());
        let mut opts = null_mut();
        assert_eq!(ibex_options_from_json(cs("{}").as_ptr(), &mut opts), IBEX_OK);
        let mut ex = null_mut();
        assert_eq!(ibex_explainer_create(model, cs("gradcam").as_ptr(), opts, &mut ex), IBEX_OK, "{}", msg());
        ibex_options_free(opts);

        let mut img = null_mut();
        assert_eq!(ibex_image_load_dicom(fixture("MR_small.dcm").as_ptr(), null(), &mut img), IBEX_OK);
        let v = view_of(img);
        let t = ibex_target {
            struct_size: std::mem::size_of::<ibex_target>() as u32,
            class_index: -1,
            text: null(),
            texts: null(),
            text_count: 0,
        };
        let mut res = null_mut();
        assert_eq!(ibex_explain(ex, &v, &t, null(), &mut res), IBEX_OK, "{}", msg());

        for kind in [IBEX_DICOM_PARAMETRIC_MAP, IBEX_DICOM_SECONDARY_CAPTURE] {
            let mut out = null_mut();
            assert_eq!(ibex_result_to_dicom(res, img, 0, kind, null(), 0.5, &mut out), IBEX_OK, "{}", msg());
            let bytes = take(out);
            let obj = dicom_object::OpenFileOptions::new()
                .read_preamble(dicom_object::file::ReadPreamble::Always)
                .from_reader(&bytes[..])
                .unwrap();
            let class = obj.element(dicom_dictionary_std::tags::SOP_CLASS_UID).unwrap().to_str().unwrap().to_string();
            let want = if kind == IBEX_DICOM_PARAMETRIC_MAP {
                "1.2.840.10008.5.1.4.1.1.30"
            } else {
                "1.2.840.10008.5.1.4.1.1.7"
            };
            assert_eq!(class.trim_end_matches('\0'), want);
            let rows = obj.element(dicom_dictionary_std::tags::ROWS).unwrap().to_int::<u32>().unwrap();
            assert_eq!(rows, 64);
        }
        let mut out = null_mut();
        assert_eq!(ibex_result_to_dicom(res, img, 0, 7, null(), 0.5, &mut out), IBEX_ERR_INVALID_ARGUMENT);
        assert_eq!(ibex_result_to_dicom(res, img, 99, 0, null(), 0.5, &mut out), IBEX_ERR_OUT_OF_RANGE);
        assert_eq!(
            ibex_result_to_dicom(res, img, 0, 1, cs("plaid").as_ptr(), 0.5, &mut out),
            IBEX_ERR_INVALID_ARGUMENT
        );
        assert_eq!(ibex_result_to_dicom(res, img, 0, 1, null(), 1.5, &mut out), IBEX_ERR_INVALID_ARGUMENT);
        assert!(out.is_null());

        // Overlays: on the original (the DICOM frame's size) or on the preprocessed image.
        let decode = |b: Vec<u8>| image::load_from_memory(&b).unwrap().to_rgb8();
        assert_eq!(ibex_render_overlay_png_bytes(res, img, 0, null(), 0.5, &mut out), IBEX_OK, "{}", msg());
        assert_eq!(decode(take(out)).dimensions(), (64, 64));
        let mut out = null_mut();
        assert_eq!(ibex_render_overlay_png_bytes(res, null(), 0, cs("gray").as_ptr(), 1.0, &mut out), IBEX_OK);
        assert_eq!(decode(take(out)).dimensions(), (224, 224));
        let mut out = null_mut();
        assert_eq!(ibex_render_overlay_png_bytes(null(), null(), 0, null(), 0.5, &mut out), IBEX_ERR_NULL_POINTER);

        // A PNG source cannot give DICOM objects.
        let mut png = null_mut();
        let p = cs(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/images/chelsea.png"));
        assert_eq!(ibex_image_load_file(p.as_ptr(), &mut png), IBEX_OK);
        assert_eq!(ibex_result_to_dicom(res, png, 0, 0, null(), 0.5, &mut out), IBEX_ERR_INVALID_ARGUMENT);
        ibex_image_free(png);
        ibex_bytes_free(null_mut());
        ibex_result_free(res);
        ibex_image_free(img);
        ibex_explainer_free(ex);
        ibex_model_free(model);
    }
}
