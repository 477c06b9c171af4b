//! The C ABI from Rust: bad input gives a clear status and message, never a crash; cancellation;
//! a model handle shared by several threads.

mod common;
use common::*;
use ibex::ffi::control::*;
use ibex::ffi::explain::*;
use ibex::ffi::image::*;
use ibex::ffi::model::*;
use ibex::ffi::options::*;
use ibex::ffi::result::*;
use ibex::ffi::status::*;
use std::ffi::{c_void, CStr, CString};
use std::ptr::{null, null_mut};

fn msg() -> String {
    unsafe { CStr::from_ptr(ibex_last_error_message()) }.to_string_lossy().into_owned()
}

fn cs(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn load(dir: &std::path::Path) -> (i32, *mut ibex_model) {
    let mut m = null_mut();
    let st = unsafe { ibex_model_load(cs("clip").as_ptr(), cs(dir.to_str().unwrap()).as_ptr(), null(), &mut m) };
    (st, m)
}

fn explainer(model: *const ibex_model, json: &str) -> *mut ibex_explainer {
    let mut opts = null_mut();
    let mut e = null_mut();
    unsafe {
        assert_eq!(ibex_options_from_json(cs(json).as_ptr(), &mut opts), IBEX_OK, "{}", msg());
        assert_eq!(ibex_explainer_create(model, cs("m2ib").as_ptr(), opts, &mut e), IBEX_OK, "{}", msg());
        ibex_options_free(opts);
    }
    e
}

fn image_view(img: *const ibex_image) -> ibex_image_view {
    let mut v = ibex_image_view {
        struct_size: std::mem::size_of::<ibex_image_view>() as u32,
        width: 0,
        height: 0,
        row_stride: 0,
        pixel_type: 0,
        layout: 0,
        data: null(),
        data_len: 0,
    };
    assert_eq!(unsafe { ibex_image_get_view(img, &mut v) }, IBEX_OK, "{}", msg());
    v
}

fn target(text: &CString) -> ibex_target {
    ibex_target {
        struct_size: std::mem::size_of::<ibex_target>() as u32,
        class_index: -1,
        text: text.as_ptr(),
        texts: null(),
        text_count: 0,
    }
}

fn example_image() -> *mut ibex_image {
    let mut img = null_mut();
    let p = cs(&format!("{}/examples/images/four_items.png", env!("CARGO_MANIFEST_DIR")));
    assert_eq!(unsafe { ibex_image_load_file(p.as_ptr(), &mut img) }, IBEX_OK, "{}", msg());
    img
}

#[test]
fn versions_and_status_strings() {
    assert_eq!(ibex::ffi::ibex_abi_version(), ibex::ffi::IBEX_ABI_VERSION);
    let v = unsafe { CStr::from_ptr(ibex::ffi::ibex_version_string()) }.to_str().unwrap();
    assert!(v.starts_with(env!("CARGO_PKG_VERSION")), "{v}");
    for code in 0..=IBEX_ERR_PANIC {
        let s = unsafe { CStr::from_ptr(ibex_status_string(code)) }.to_str().unwrap();
        assert!(!s.is_empty() && s != "unknown status", "{code}");
    }
    assert_eq!(unsafe { CStr::from_ptr(ibex_status_string(999)) }.to_str().unwrap(), "unknown status");
}

#[test]
fn bad_model_inputs_give_clear_errors() {
    // NULL pointers
    let mut m = null_mut();
    assert_eq!(unsafe { ibex_model_load(null(), null(), null(), &mut m) }, IBEX_ERR_NULL_POINTER);
    assert!(msg().contains("'path'"), "{}", msg());
    assert_eq!(unsafe { ibex_model_load(null(), cs("x").as_ptr(), null(), null_mut()) }, IBEX_ERR_NULL_POINTER);
    assert!(m.is_null());
    // missing directory
    let (st, m) = load(std::path::Path::new("/nonexistent/ibex-model"));
    assert_eq!(st, IBEX_ERR_NOT_FOUND, "{}", msg());
    assert!(m.is_null() && msg().contains("/nonexistent/ibex-model"), "{}", msg());

    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json", "preprocessor_config.json"] {
        std::fs::copy(fmnist_model().join(f), tmp.path().join(f)).unwrap();
    }
    // corrupt safetensors
    std::fs::write(tmp.path().join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}").unwrap();
    let (st, _) = load(tmp.path());
    assert_eq!(st, IBEX_ERR_FORMAT, "{}", msg());
    assert!(msg().contains("model.safetensors") && msg().contains("safetensors"), "{}", msg());
    // truncated real file
    let real = std::fs::read(fmnist_model().join("model.safetensors")).unwrap();
    std::fs::write(tmp.path().join("model.safetensors"), &real[..real.len() / 2]).unwrap();
    let (st, _) = load(tmp.path());
    assert_eq!(st, IBEX_ERR_FORMAT, "{}", msg());
    // weights that do not match config.json: the message names the tensor
    std::fs::write(tmp.path().join("model.safetensors"), &real).unwrap();
    let cfg = std::fs::read_to_string(tmp.path().join("config.json")).unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        cfg.replace("\"intermediate_size\": 512", "\"intermediate_size\": 256"),
    )
    .unwrap();
    let (st, _) = load(tmp.path());
    assert_eq!(st, IBEX_ERR_FORMAT, "{}", msg());
    assert!(msg().contains("fc1.weight") && msg().contains("[512, 128]"), "{}", msg());
    // a file that is not a model directory at all
    let (st, _) = load(&tmp.path().join("config.json"));
    assert_eq!(st, IBEX_ERR_INVALID_ARGUMENT, "{}", msg());
    // unknown options are refused with the list of known ones
    let (st, model) = load(&fmnist_model());
    assert_eq!(st, IBEX_OK, "{}", msg());
    let mut opts = null_mut();
    let mut e = null_mut();
    unsafe {
        assert_eq!(ibex_options_create(&mut opts), IBEX_OK);
        ibex_options_set_float(opts, cs("betta").as_ptr(), 1.0);
        assert_eq!(ibex_explainer_create(model, cs("m2ib").as_ptr(), opts, &mut e), IBEX_ERR_INVALID_ARGUMENT);
        assert!(msg().contains("betta") && msg().contains("beta"), "{}", msg());
        assert_eq!(ibex_explainer_create(model, cs("gradcam").as_ptr(), null(), &mut e), IBEX_ERR_UNSUPPORTED);
        assert_eq!(ibex_options_set_float(opts, cs("beta").as_ptr(), f64::NAN), IBEX_ERR_INVALID_ARGUMENT);
        ibex_options_free(opts);
        ibex_model_free(model);
    }
}

#[test]
fn bad_explain_inputs_give_clear_errors_and_cancellation_works() {
    let (st, model) = load(&fmnist_model());
    assert_eq!(st, IBEX_OK, "{}", msg());
    let e = explainer(model, r#"{"steps": 4}"#);
    let img = example_image();
    let view = image_view(img);
    let caption = cs("a sandal");
    let t = target(&caption);
    let mut r = null_mut();
    unsafe {
        assert_eq!(ibex_explain(e, null(), &t, null(), &mut r), IBEX_ERR_NULL_POINTER);
        assert!(msg().contains("'image'"), "{}", msg());
        assert_eq!(ibex_explain(null_mut(), &view, &t, null(), &mut r), IBEX_ERR_NULL_POINTER);
        // wrong-sized buffer
        let small = [0u8; 100];
        let mut v = ibex_image_view { data: small.as_ptr() as *const c_void, data_len: small.len(), ..view };
        v.pixel_type = IBEX_PIXEL_U8;
        v.row_stride = v.width * 3;
        assert_eq!(ibex_explain(e, &v, &t, null(), &mut r), IBEX_ERR_INVALID_ARGUMENT);
        assert!(msg().contains("100 bytes"), "{}", msg());
        let mut v2 = view;
        v2.row_stride = 5;
        assert_eq!(ibex_explain(e, &v2, &t, null(), &mut r), IBEX_ERR_INVALID_ARGUMENT);
        assert!(msg().contains("row_stride"), "{}", msg());
        let mut v3 = view;
        v3.struct_size = 8;
        assert_eq!(ibex_explain(e, &v3, &t, null(), &mut r), IBEX_ERR_INVALID_ARGUMENT);
        assert!(msg().contains("struct_size"), "{}", msg());
        // NaN pixels
        let mut px = vec![0.5f32; 64 * 64 * 3];
        px[777] = f32::NAN;
        let nan = ibex_image_view {
            struct_size: view.struct_size,
            width: 64,
            height: 64,
            row_stride: 64 * 3 * 4,
            pixel_type: IBEX_PIXEL_F32,
            layout: IBEX_LAYOUT_RGB,
            data: px.as_ptr() as *const c_void,
            data_len: px.len() * 4,
        };
        assert_eq!(ibex_explain(e, &nan, &t, null(), &mut r), IBEX_ERR_INVALID_ARGUMENT);
        assert!(msg().to_lowercase().contains("nan"), "{}", msg());
        // empty and over-long captions
        let empty = cs("");
        assert_eq!(ibex_explain(e, &view, &target(&empty), null(), &mut r), IBEX_ERR_INVALID_ARGUMENT);
        assert!(msg().contains("empty"), "{}", msg());
        let long = cs(&"a coat and a bag ".repeat(20));
        assert_eq!(ibex_explain(e, &view, &target(&long), null(), &mut r), IBEX_ERR_INVALID_ARGUMENT);
        assert!(msg().contains("77"), "{}", msg());
        let mut none = target(&caption);
        none.text = null();
        assert_eq!(ibex_explain(e, &view, &none, null(), &mut r), IBEX_ERR_INVALID_ARGUMENT);
        assert!(msg().contains("caption"), "{}", msg());
        assert!(r.is_null(), "no result on failure");

        // cancellation mid-run, from the progress callback and from another thread
        unsafe extern "C" fn stop_at_3(done: u32, _total: u32, user: *mut c_void) -> bool {
            *(user as *mut u32) = done;
            done < 3
        }
        let mut seen = 0u32;
        let rc = ibex_run_control {
            struct_size: std::mem::size_of::<ibex_run_control>() as u32,
            progress: Some(stop_at_3),
            user: &mut seen as *mut u32 as *mut c_void,
            cancel: null(),
        };
        assert_eq!(ibex_explain(e, &view, &t, &rc, &mut r), IBEX_ERR_CANCELLED);
        assert_eq!(seen, 3);
        assert!(msg().contains("cancel"), "{}", msg());

        let mut token = null_mut();
        assert_eq!(ibex_cancel_token_create(&mut token), IBEX_OK);
        struct Tok(*mut ibex_cancel_token);
        unsafe impl Send for Tok {}
        unsafe extern "C" fn cancel_from_thread(done: u32, _t: u32, user: *mut c_void) -> bool {
            if done == 2 {
                let tok = Tok(user as *mut ibex_cancel_token);
                std::thread::spawn(move || {
                    let t = tok;
                    ibex_cancel_token_cancel(t.0)
                })
                .join()
                .unwrap();
            }
            true
        }
        let rc = ibex_run_control {
            struct_size: std::mem::size_of::<ibex_run_control>() as u32,
            progress: Some(cancel_from_thread),
            user: token as *mut c_void,
            cancel: token,
        };
        assert_eq!(ibex_explain(e, &view, &t, &rc, &mut r), IBEX_ERR_CANCELLED);
        ibex_cancel_token_reset(token);
        // after a reset the same control runs to the end... unless cancelled again: use a plain one
        let rc = ibex_run_control {
            struct_size: std::mem::size_of::<ibex_run_control>() as u32,
            progress: None,
            user: null_mut(),
            cancel: token,
        };
        assert_eq!(ibex_explain(e, &view, &t, &rc, &mut r), IBEX_OK, "{}", msg());
        ibex_cancel_token_free(token);

        // result accessors: bounds and buffer sizes
        let mut n = 0u32;
        assert_eq!(ibex_result_map_count(r, &mut n), IBEX_OK);
        assert_eq!(n, 4);
        let mut info = std::mem::zeroed::<ibex_map_info>();
        info.struct_size = std::mem::size_of::<ibex_map_info>() as u32;
        assert_eq!(ibex_result_map_info(r, 0, &mut info), IBEX_OK);
        assert_eq!((info.width, info.height, info.text_index), (64, 64, 0));
        assert_eq!(CStr::from_ptr(info.name).to_str().unwrap(), "image");
        assert_eq!((info.min_value, info.max_value), (0.0, 1.0));
        assert_eq!(ibex_result_map_info(r, 9, &mut info), IBEX_ERR_OUT_OF_RANGE);
        let mut need = 0usize;
        assert_eq!(ibex_result_copy_map(r, 0, null_mut(), 0, &mut need), IBEX_OK);
        assert_eq!(need, 64 * 64);
        let mut small = vec![0f32; 10];
        assert_eq!(ibex_result_copy_map(r, 0, small.as_mut_ptr(), small.len(), &mut need), IBEX_ERR_BUFFER_TOO_SMALL);
        assert_eq!(need, 64 * 64);
        let mut tok = null();
        let mut score = 0f32;
        assert_eq!(ibex_result_token(r, 0, 2, &mut tok, &mut score), IBEX_OK);
        assert_eq!(CStr::from_ptr(tok).to_str().unwrap(), "sandal");
        assert_eq!(ibex_result_token(r, 0, 99, &mut tok, &mut score), IBEX_ERR_OUT_OF_RANGE);
        assert_eq!(ibex_result_token(r, 3, 0, &mut tok, &mut score), IBEX_ERR_OUT_OF_RANGE);
        let mut region = [0f32; 4];
        assert_eq!(ibex_result_source_region(r, region.as_mut_ptr()), IBEX_OK);
        assert_eq!(region, [0.0, 0.0, 64.0, 64.0]);
        let mut json = null();
        assert_eq!(ibex_result_json(r, &mut json), IBEX_OK);
        let v: serde_json::Value = serde_json::from_str(CStr::from_ptr(json).to_str().unwrap()).unwrap();
        assert_eq!(v["method"], "m2ib");
        ibex_result_free(r);
        ibex_explainer_free(e);
        ibex_image_free(img);
        ibex_model_free(model);
        ibex_result_free(null_mut());
        ibex_explainer_free(null_mut());
    }
}

struct Shared(*const ibex_model);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

fn image_map(e: *mut ibex_explainer, view: &ibex_image_view, caption: &str) -> Vec<f32> {
    let c = cs(caption);
    let t = target(&c);
    let mut r = null_mut();
    unsafe {
        assert_eq!(ibex_explain(e, view, &t, null(), &mut r), IBEX_OK, "{}", msg());
        let mut p = null();
        let mut n = 0usize;
        assert_eq!(ibex_result_map_data(r, 1, &mut p, &mut n), IBEX_OK);
        let v = std::slice::from_raw_parts(p, n).to_vec();
        ibex_result_free(r);
        v
    }
}

#[test]
fn one_model_shared_by_threads_gives_the_same_maps() {
    let (st, model) = load(&fmnist_model());
    assert_eq!(st, IBEX_OK, "{}", msg());
    let img = example_image();
    let view = image_view(img);
    let e = explainer(model, r#"{"seed": 3}"#);
    let want: Vec<Vec<f32>> = ["a sandal", "a dress"].iter().map(|c| image_map(e, &view, c)).collect();
    let shared = Shared(model);
    struct V(ibex_image_view);
    unsafe impl Send for V {}
    unsafe impl Sync for V {}
    let v = V(view);
    std::thread::scope(|s| {
        let hs: Vec<_> = ["a sandal", "a dress"]
            .iter()
            .map(|c| {
                let (shared, v) = (&shared, &v);
                s.spawn(move || {
                    let e = explainer(shared.0, r#"{"seed": 3}"#);
                    let m = image_map(e, &v.0, c);
                    unsafe { ibex_explainer_free(e) };
                    m
                })
            })
            .collect();
        for (h, w) in hs.into_iter().zip(&want) {
            assert_eq!(&h.join().unwrap(), w);
        }
    });
    unsafe {
        ibex_explainer_free(e);
        ibex_image_free(img);
        ibex_model_free(model);
    }
}

#[test]
fn log_callback_receives_messages() {
    use std::sync::Mutex;
    static SEEN: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());
    unsafe extern "C" fn on_log(level: i32, msg: *const std::ffi::c_char, user: *mut c_void) {
        assert_eq!(user as usize, 42);
        SEEN.lock().unwrap().push((level, CStr::from_ptr(msg).to_string_lossy().into_owned()));
    }
    use ibex::ffi::log::*;
    assert_eq!(ibex_set_log_callback(Some(on_log), IBEX_LOG_INFO, 42 as *mut c_void), IBEX_OK);
    let (st, model) = load(&fmnist_model());
    assert_eq!(st, IBEX_OK);
    unsafe { ibex_model_free(model) };
    assert_eq!(ibex_set_log_callback(None, IBEX_LOG_INFO, null_mut()), IBEX_OK);
    let seen = SEEN.lock().unwrap();
    assert!(
        seen.iter()
            .any(|(l, m)| *l == IBEX_LOG_INFO && m.contains("loaded CLIP model") && m.contains("8x8 patch grid")),
        "{seen:?}"
    );
    assert!(seen.iter().all(|(l, _)| *l <= IBEX_LOG_INFO), "debug messages filtered out: {seen:?}");
}

#[test]
fn batch_of_images_in_one_call_matches_single_calls() {
    let (st, model) = load(&fmnist_model());
    assert_eq!(st, IBEX_OK, "{}", msg());
    let e = explainer(model, r#"{"steps": 3, "seed": 5}"#);
    let img = example_image();
    let view = image_view(img);
    // a second image: the example flipped left-right, as a raw RGB8 buffer with padded rows
    let bytes = unsafe { std::slice::from_raw_parts(view.data as *const u8, view.data_len) };
    let stride = 64 * 3 + 7;
    let mut flipped = vec![0u8; stride * 64];
    for y in 0..64 {
        for x in 0..64 {
            for c in 0..3 {
                flipped[y * stride + x * 3 + c] = bytes[y * 64 * 3 + (63 - x) * 3 + c];
            }
        }
    }
    let view2 = ibex_image_view {
        row_stride: stride as u32,
        data: flipped.as_ptr() as *const c_void,
        data_len: flipped.len(),
        ..view
    };
    let single: Vec<Vec<f32>> = [&view, &view2].iter().map(|v| image_map(e, v, "a sandal")).collect();
    let views = [view2, view];
    let mut out = [null_mut(); 2];
    let c = cs("a sandal");
    unsafe {
        assert_eq!(
            ibex_explain_batch(e, views.as_ptr(), 2, &target(&c), null(), out.as_mut_ptr()),
            IBEX_OK,
            "{}",
            msg()
        );
        for (r, want) in out.iter().zip([&single[1], &single[0]]) {
            let mut p = null();
            let mut n = 0usize;
            assert_eq!(ibex_result_map_data(*r, 1, &mut p, &mut n), IBEX_OK);
            assert_eq!(std::slice::from_raw_parts(p, n), &want[..], "a map does not depend on its place in the batch");
            ibex_result_free(*r);
        }
        assert_ne!(single[0], single[1]);
        let bad = [view, ibex_image_view { data_len: 3, ..view }];
        assert_eq!(
            ibex_explain_batch(e, bad.as_ptr(), 2, &target(&c), null(), out.as_mut_ptr()),
            IBEX_ERR_INVALID_ARGUMENT
        );
        assert!(msg().starts_with("image 1:"), "{}", msg());
        assert_eq!(
            ibex_explain_batch(e, bad.as_ptr(), 0, &target(&c), null(), out.as_mut_ptr()),
            IBEX_ERR_INVALID_ARGUMENT
        );
        ibex_explainer_free(e);
        ibex_image_free(img);
        ibex_model_free(model);
    }
}
