//! The ibex Orthanc plugin: explains DICOM instances stored in Orthanc and stores the
//! explanations back in the same study, as a Parametric Map (the float map) and a Secondary
//! Capture (the overlay).
//!
//! It uses ibex only through its C ABI (`ibex::ffi`, the functions of `include/ibex.h`), and
//! Orthanc only through the C shim in `shim/shim.c`. Routes (see the README for curl examples):
//!
//! - `GET /ibex/info`: versions, the model, its methods;
//! - `GET /instances/{id}/ibex/{method}/overlay.png[?frame=&text=&target=]`: the overlay PNG;
//! - `GET /instances/{id}/ibex/{method}/heatmap[?frame=&text=&target=]`: the maps and the
//!   DICOM geometry as JSON;
//! - `POST /instances/{id}/ibex/{method}` with a JSON body (`target`, `text`, `frame`,
//!   `window`, `options`, `colormap`, `opacity`): explains, stores the Parametric Map and the
//!   Secondary Capture in the source study and answers with their ids.
//!
//! Configuration (Orthanc's JSON): `"Ibex": { "Model": dir, "Method": name, "Options": {…},
//! "Threads": n, "MaxSamples": n }`. The model is loaded once at start-up and shared; every request makes its
//! own explainer. At most `Threads` requests read, explain and answer at once (others wait
//! their turn), and instances above `MaxSamples` samples are refused (400); the
//! routes are registered without Orthanc's global lock, so the rest of Orthanc keeps answering.
//! Errors are HTTP errors with a JSON body (`{"error": message, "status": code}`); a panic is
//! caught at this boundary and answered as a 500.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{null, null_mut};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Instant;

use ibex::ffi::bytes::*;
use ibex::ffi::dicom::*;
use ibex::ffi::explain::*;
use ibex::ffi::image::*;
use ibex::ffi::model::*;
use ibex::ffi::options::*;
use ibex::ffi::render::*;
use ibex::ffi::result::*;
use ibex::ffi::status::*;
use ibex::ffi::{ibex_abi_version, ibex_version_string};
use serde_json::{json, Value};

/// Opaque Orthanc types (only passed through).
#[repr(C)]
pub struct OrthancPluginContext {
    _private: [u8; 0],
}
#[repr(C)]
pub struct OrthancPluginRestOutput {
    _private: [u8; 0],
}
#[repr(C)]
pub struct OrthancPluginHttpRequest {
    _private: [u8; 0],
}
/// `OrthancPluginMemoryBuffer`.
#[repr(C)]
struct MemoryBuffer {
    data: *mut c_void,
    size: u32,
}

type RestCallback =
    unsafe extern "C" fn(*mut OrthancPluginRestOutput, *const c_char, *const OrthancPluginHttpRequest) -> i32;

extern "C" {
    fn ibexo_set_context(c: *mut OrthancPluginContext);
    fn ibexo_check_version(major: i32, minor: i32, revision: i32) -> i32;
    fn ibexo_orthanc_version() -> *const c_char;
    fn ibexo_log(level: i32, message: *const c_char);
    fn ibexo_get_configuration() -> *mut c_char;
    fn ibexo_free_string(s: *mut c_char);
    fn ibexo_register_no_lock(regex: *const c_char, callback: RestCallback);
    fn ibexo_request_method(r: *const OrthancPluginHttpRequest) -> i32;
    fn ibexo_request_groups_count(r: *const OrthancPluginHttpRequest) -> u32;
    fn ibexo_request_group(r: *const OrthancPluginHttpRequest, i: u32) -> *const c_char;
    fn ibexo_request_get_count(r: *const OrthancPluginHttpRequest) -> u32;
    fn ibexo_request_get_key(r: *const OrthancPluginHttpRequest, i: u32) -> *const c_char;
    fn ibexo_request_get_value(r: *const OrthancPluginHttpRequest, i: u32) -> *const c_char;
    fn ibexo_request_body(r: *const OrthancPluginHttpRequest) -> *const c_void;
    fn ibexo_request_body_size(r: *const OrthancPluginHttpRequest) -> u32;
    fn ibexo_answer(output: *mut OrthancPluginRestOutput, data: *const c_void, size: u32, mime: *const c_char);
    fn ibexo_set_header(output: *mut OrthancPluginRestOutput, key: *const c_char, value: *const c_char);
    fn ibexo_send_status(output: *mut OrthancPluginRestOutput, status: u16, body: *const c_char, size: u32);
    fn ibexo_send_method_not_allowed(output: *mut OrthancPluginRestOutput, allowed: *const c_char);
    fn ibexo_get_dicom(instance_id: *const c_char, out: *mut MemoryBuffer) -> i32;
    fn ibexo_rest_post(uri: *const c_char, body: *const c_void, size: u32, out: *mut MemoryBuffer) -> i32;
    fn ibexo_free_buffer(buffer: *mut MemoryBuffer);
}

/// The Orthanc release whose SDK has every call this plugin makes (the no-lock REST callback
/// is the newest of them).
const MIN_ORTHANC: (i32, i32, i32) = (1, 3, 2);
/// The default ceiling on an instance's rows × columns × frames × samples: 2^26 (a 4096 ×
/// 4096 × 4 radiograph series, or 256 CT slices of 512 × 512). A request holds a few times
/// that many floats while it runs.
const DEFAULT_MAX_SAMPLES: u64 = 1 << 26;
const GET: i32 = 1;
const POST: i32 = 2;

fn log(level: i32, msg: &str) {
    let c = CString::new(format!("ibex: {}", msg.replace('\0', " "))).unwrap_or_default();
    unsafe { ibexo_log(level, c.as_ptr()) }
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// A loaded ibex model (immutable and shared by all requests, as the C ABI allows).
struct ModelHandle(*mut ibex_model);
unsafe impl Send for ModelHandle {}
unsafe impl Sync for ModelHandle {}

/// Counts the explanations running at once.
struct Permits {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Permits {
    fn acquire(&self) -> PermitGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        PermitGuard(self)
    }
}

struct PermitGuard<'a>(&'a Permits);

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

struct State {
    model: Result<ModelHandle, String>,
    model_path: String,
    model_json: Value,
    default_method: String,
    options: serde_json::Map<String, Value>,
    threads: usize,
    /// The ceiling on rows × columns × frames × samples of an instance.
    max_samples: u64,
    permits: Permits,
}

static STATE: OnceLock<State> = OnceLock::new();

/// An HTTP error to answer with.
struct HttpError(u16, String);

type HttpResult<T> = Result<T, HttpError>;

fn bad_request(msg: impl Into<String>) -> HttpError {
    HttpError(400, msg.into())
}

/// The last ibex error as an HTTP error: `status` picks the HTTP code.
fn ibex_error(status: i32, what: &str, http: impl Fn(i32) -> u16) -> HttpError {
    let msg = unsafe { CStr::from_ptr(ibex_last_error_message()) }.to_string_lossy().into_owned();
    let name = unsafe { CStr::from_ptr(ibex_status_string(status)) }.to_string_lossy().into_owned();
    HttpError(http(status), format!("{what}: {msg} ({name})"))
}

fn check(status: i32, what: &str, http: impl Fn(i32) -> u16) -> HttpResult<()> {
    if status == IBEX_OK {
        Ok(())
    } else {
        Err(ibex_error(status, what, http))
    }
}

/// Owned ibex handles, freed on drop.
struct Owned<T> {
    ptr: *mut T,
    free: unsafe extern "C" fn(*mut T),
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        unsafe { (self.free)(self.ptr) }
    }
}

fn owned<T>(ptr: *mut T, free: unsafe extern "C" fn(*mut T)) -> Owned<T> {
    Owned { ptr, free }
}

fn bytes_of(b: &Owned<ibex_bytes>) -> Vec<u8> {
    let (mut p, mut n) = (null(), 0usize);
    unsafe {
        if ibex_bytes_data(b.ptr, &mut p, &mut n) != IBEX_OK || p.is_null() {
            return Vec::new();
        }
        std::slice::from_raw_parts(p, n).to_vec()
    }
}

/// The request as the handlers see it.
struct Request {
    method: i32,
    groups: Vec<String>,
    query: Vec<(String, String)>,
    body: Vec<u8>,
}

unsafe fn read_request(r: *const OrthancPluginHttpRequest) -> Request {
    let s =
        |p: *const c_char| if p.is_null() { String::new() } else { CStr::from_ptr(p).to_string_lossy().into_owned() };
    let groups = (0..ibexo_request_groups_count(r)).map(|i| s(ibexo_request_group(r, i))).collect();
    let query = (0..ibexo_request_get_count(r))
        .map(|i| (s(ibexo_request_get_key(r, i)), s(ibexo_request_get_value(r, i))))
        .collect();
    let (body, size) = (ibexo_request_body(r), ibexo_request_body_size(r));
    let body = if body.is_null() || size == 0 {
        Vec::new()
    } else {
        std::slice::from_raw_parts(body as *const u8, size as usize).to_vec()
    };
    Request { method: ibexo_request_method(r), groups, query, body }
}

/// What to explain, from the query string (GET) or the JSON body (POST).
#[derive(Default)]
struct Ask {
    frame: u32,
    window: Option<(f64, f64)>,
    class: Option<i32>,
    texts: Vec<String>,
    options: serde_json::Map<String, Value>,
    colormap: Option<String>,
    opacity: f32,
}

fn ask_from_query(query: &[(String, String)]) -> HttpResult<Ask> {
    let mut a = Ask { opacity: 0.5, ..Default::default() };
    for (k, v) in query {
        match k.as_str() {
            "frame" => {
                a.frame = v.parse().map_err(|_| bad_request(format!("frame must be a frame index, got '{v}'")))?
            }
            "target" => {
                a.class = Some(v.parse().map_err(|_| bad_request(format!("target must be a class index, got '{v}'")))?)
            }
            "text" => a.texts.push(v.clone()),
            "colormap" => a.colormap = Some(v.clone()),
            "opacity" => {
                a.opacity = v.parse().map_err(|_| bad_request(format!("opacity must be a number, got '{v}'")))?
            }
            "window" => a.window = Some(parse_window(&Value::String(v.clone()))?),
            other => {
                return Err(bad_request(format!(
                    "unknown query parameter '{other}' (frame, target, text, window, colormap, opacity)"
                )))
            }
        }
    }
    Ok(a)
}

fn parse_window(v: &Value) -> HttpResult<(f64, f64)> {
    let bad = || bad_request(format!("window must be [center, width] or \"center,width\", got {v}"));
    let nums: Vec<f64> = match v {
        Value::Array(a) => a.iter().map(|x| x.as_f64().ok_or_else(bad)).collect::<HttpResult<_>>()?,
        Value::String(s) => {
            s.split(',').map(|x| x.trim().parse::<f64>().map_err(|_| bad())).collect::<HttpResult<_>>()?
        }
        _ => return Err(bad()),
    };
    match nums[..] {
        [c, w] => Ok((c, w)),
        _ => Err(bad()),
    }
}

fn ask_from_body(body: &[u8]) -> HttpResult<Ask> {
    let mut a = Ask { opacity: 0.5, ..Default::default() };
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(a);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| bad_request(format!("the body is not JSON: {e}")))?;
    let Value::Object(o) = v else {
        return Err(bad_request(
            "the body must be a JSON object (target, text, frame, window, options, colormap, opacity)",
        ));
    };
    for (k, v) in o {
        match k.as_str() {
            "frame" => {
                a.frame = v
                    .as_u64()
                    .and_then(|f| u32::try_from(f).ok())
                    .ok_or_else(|| bad_request("frame must be a frame index"))?
            }
            "target" => {
                a.class = Some(
                    v.as_i64()
                        .and_then(|c| i32::try_from(c).ok())
                        .ok_or_else(|| bad_request(format!("target must be a class index, got {v}")))?,
                )
            }
            "text" => match v {
                Value::String(s) => a.texts.push(s),
                Value::Array(items) => {
                    for t in items {
                        a.texts.push(
                            t.as_str().ok_or_else(|| bad_request("text must be a string or strings"))?.to_string(),
                        );
                    }
                }
                _ => return Err(bad_request("text must be a string or strings")),
            },
            "window" => a.window = Some(parse_window(&v)?),
            "options" => match v {
                Value::Object(m) => a.options = m,
                _ => return Err(bad_request("options must be a JSON object of the method's options")),
            },
            "colormap" => {
                a.colormap = Some(v.as_str().ok_or_else(|| bad_request("colormap must be a name"))?.to_string())
            }
            "opacity" => a.opacity = v.as_f64().ok_or_else(|| bad_request("opacity must be a number"))? as f32,
            other => {
                return Err(bad_request(format!(
                    "unknown key '{other}' (target, text, frame, window, options, colormap, opacity)"
                )))
            }
        }
    }
    Ok(a)
}

/// One explanation of one instance, with what it took. The permit is held until the answer
/// is made: reading, explaining, rendering and storing all count against `Threads`.
struct Explained<'a> {
    image: Owned<ibex_image>,
    result: Owned<ibex_result>,
    explain_ms: f64,
    _permit: PermitGuard<'a>,
}

fn explain<'a>(state: &'a State, instance: &str, method: &str, ask: &Ask) -> HttpResult<Explained<'a>> {
    let model = state.model.as_ref().map_err(|e| HttpError(503, format!("no model loaded: {e}")))?;
    let permit = state.permits.acquire();
    let method = if method == "default" { state.default_method.as_str() } else { method };
    // The instance's DICOM file, from Orthanc.
    let id = cstring(instance);
    let mut buf = MemoryBuffer { data: null_mut(), size: 0 };
    match unsafe { ibexo_get_dicom(id.as_ptr(), &mut buf) } {
        0 => {}
        // OrthancPluginErrorCode_InexistentItem, _UnknownResource
        7 | 17 => return Err(HttpError(404, format!("unknown instance '{instance}'"))),
        e => return Err(HttpError(500, format!("Orthanc could not read instance '{instance}' (error {e})"))),
    }
    if buf.data.is_null() {
        return Err(HttpError(500, format!("Orthanc returned no file for instance '{instance}'")));
    }
    let opts = ibex_dicom_options {
        struct_size: std::mem::size_of::<ibex_dicom_options>() as u32,
        frame: ask.frame,
        window_index: -1,
        use_window: i32::from(ask.window.is_some()),
        window_center: ask.window.map_or(0.0, |w| w.0),
        window_width: ask.window.map_or(0.0, |w| w.1),
        max_samples: state.max_samples,
    };
    let mut image = null_mut();
    let st = unsafe {
        ibex_image_load_dicom_memory(buf.data as *const u8, buf.size as usize, id.as_ptr(), &opts, &mut image)
    };
    unsafe { ibexo_free_buffer(&mut buf) };
    check(st, &format!("instance {instance} cannot be read as an image"), |s| match s {
        IBEX_ERR_INVALID_ARGUMENT => 400,
        IBEX_ERR_UNSUPPORTED | IBEX_ERR_FORMAT => 415,
        _ => 500,
    })?;
    let image = owned(image, ibex_image_free);

    // An explainer of its own, with the configured options under the request's.
    let mut options = state.options.clone();
    options.extend(ask.options.clone());
    let json = cstring(&Value::Object(options).to_string());
    let mut o = null_mut();
    check(unsafe { ibex_options_from_json(json.as_ptr(), &mut o) }, "options", |_| 400)?;
    let o = owned(o, ibex_options_free);
    let mut explainer = null_mut();
    let name = cstring(method);
    let st = unsafe { ibex_explainer_create(model.0, name.as_ptr(), o.ptr, &mut explainer) };
    check(st, &format!("method '{method}'"), |s| match s {
        IBEX_ERR_INVALID_ARGUMENT | IBEX_ERR_UNSUPPORTED | IBEX_ERR_NOT_FOUND | IBEX_ERR_FORMAT | IBEX_ERR_IO => 400,
        _ => 500,
    })?;
    let explainer = owned(explainer, ibex_explainer_free);

    let texts: Vec<CString> = ask.texts.iter().map(|t| cstring(t)).collect();
    let text_ptrs: Vec<*const c_char> = texts.iter().map(|t| t.as_ptr()).collect();
    let target = ibex_target {
        struct_size: std::mem::size_of::<ibex_target>() as u32,
        class_index: ask.class.unwrap_or(-1),
        text: null(),
        texts: if text_ptrs.is_empty() { null() } else { text_ptrs.as_ptr() },
        text_count: text_ptrs.len() as u32,
    };
    let mut view: ibex_image_view = unsafe { std::mem::zeroed() };
    view.struct_size = std::mem::size_of::<ibex_image_view>() as u32;
    check(unsafe { ibex_image_get_view(image.ptr, &mut view) }, "image view", |_| 500)?;
    let mut result = null_mut();
    let t = Instant::now();
    let st = unsafe { ibex_explain(explainer.ptr, &view, &target, null(), &mut result) };
    let explain_ms = t.elapsed().as_secs_f64() * 1e3;
    check(st, "explanation", |s| match s {
        IBEX_ERR_INVALID_ARGUMENT | IBEX_ERR_UNSUPPORTED | IBEX_ERR_OUT_OF_RANGE => 400,
        _ => 500,
    })?;
    Ok(Explained { image, result: owned(result, ibex_result_free), explain_ms, _permit: permit })
}

fn answer_json(output: *mut OrthancPluginRestOutput, v: &Value) {
    let body = v.to_string();
    unsafe { ibexo_answer(output, body.as_ptr() as *const c_void, body.len() as u32, c"application/json".as_ptr()) }
}

fn timing_header(output: *mut OrthancPluginRestOutput, explain_ms: f64, total_ms: f64) {
    let v = cstring(&format!("explain={explain_ms:.1}; total={total_ms:.1}"));
    unsafe { ibexo_set_header(output, c"X-Ibex-Timing-Ms".as_ptr(), v.as_ptr()) }
}

fn route_info(output: *mut OrthancPluginRestOutput, state: &State, _: &Request) -> HttpResult<()> {
    let version = unsafe { CStr::from_ptr(ibex_version_string()) }.to_string_lossy().into_owned();
    let orthanc = unsafe { CStr::from_ptr(ibexo_orthanc_version()) }.to_string_lossy().into_owned();
    let mut v = json!({
        "plugin": env!("CARGO_PKG_VERSION"),
        "ibex": version,
        "abi": ibex_abi_version(),
        "orthanc": orthanc,
        "model": state.model_path,
        "kind": state.model_json.get("kind").cloned().unwrap_or(Value::Null),
        "methods": state.model_json.get("methods").cloned().unwrap_or(json!([])),
        "default_method": state.default_method,
        "options": state.options,
        "threads": state.threads,
        "max_samples": state.max_samples,
    });
    if let Err(e) = &state.model {
        v["error"] = Value::String(e.clone());
    }
    answer_json(output, &v);
    Ok(())
}

fn route_overlay(output: *mut OrthancPluginRestOutput, state: &State, req: &Request) -> HttpResult<()> {
    let t = Instant::now();
    let ask = ask_from_query(&req.query)?;
    let ex = explain(state, &req.groups[0], &req.groups[1], &ask)?;
    let cmap = ask.colormap.as_deref().map(cstring);
    let mut png = null_mut();
    let st = unsafe {
        ibex_render_overlay_png_bytes(
            ex.result.ptr,
            ex.image.ptr,
            0,
            cmap.as_ref().map_or(null(), |c| c.as_ptr()),
            ask.opacity,
            &mut png,
        )
    };
    check(st, "overlay", |s| if s == IBEX_ERR_INVALID_ARGUMENT { 400 } else { 500 })?;
    let png = bytes_of(&owned(png, ibex_bytes_free));
    timing_header(output, ex.explain_ms, t.elapsed().as_secs_f64() * 1e3);
    unsafe { ibexo_answer(output, png.as_ptr() as *const c_void, png.len() as u32, c"image/png".as_ptr()) };
    Ok(())
}

/// The result's maps (with their values), its JSON report and the source's DICOM header.
fn heatmap_json(ex: &Explained) -> HttpResult<Value> {
    let mut count = 0u32;
    check(unsafe { ibex_result_map_count(ex.result.ptr, &mut count) }, "maps", |_| 500)?;
    let mut maps = Vec::new();
    for i in 0..count {
        let mut info: ibex_map_info = unsafe { std::mem::zeroed() };
        info.struct_size = std::mem::size_of::<ibex_map_info>() as u32;
        check(unsafe { ibex_result_map_info(ex.result.ptr, i, &mut info) }, "map info", |_| 500)?;
        let mut data = vec![0f32; info.width as usize * info.height as usize];
        let mut n = 0usize;
        let st = unsafe { ibex_result_copy_map(ex.result.ptr, i, data.as_mut_ptr(), data.len(), &mut n) };
        check(st, "map data", |_| 500)?;
        let text = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        maps.push(json!({
            "name": text(info.name),
            "units": text(info.units),
            "width": info.width,
            "height": info.height,
            "text_index": if info.text_index < 0 { Value::Null } else { info.text_index.into() },
            "min": info.min_value,
            "max": info.max_value,
            "data": data,
        }));
    }
    let mut report = null();
    check(unsafe { ibex_result_json(ex.result.ptr, &mut report) }, "report", |_| 500)?;
    let report: Value =
        serde_json::from_str(&unsafe { CStr::from_ptr(report) }.to_string_lossy()).unwrap_or(Value::Null);
    let mut region = [0f32; 4];
    check(unsafe { ibex_result_source_region(ex.result.ptr, region.as_mut_ptr()) }, "region", |_| 500)?;
    let mut dicom = null_mut();
    check(unsafe { ibex_image_dicom_json(ex.image.ptr, &mut dicom) }, "DICOM header", |_| 500)?;
    let dicom: Value = serde_json::from_slice(&bytes_of(&owned(dicom, ibex_bytes_free))).unwrap_or(Value::Null);
    Ok(json!({ "maps": maps, "result": report, "source_region": region, "dicom": dicom }))
}

fn route_heatmap(output: *mut OrthancPluginRestOutput, state: &State, req: &Request) -> HttpResult<()> {
    let t = Instant::now();
    let ask = ask_from_query(&req.query)?;
    let ex = explain(state, &req.groups[0], &req.groups[1], &ask)?;
    let mut v = heatmap_json(&ex)?;
    v["instance"] = Value::String(req.groups[0].clone());
    let total_ms = t.elapsed().as_secs_f64() * 1e3;
    v["timing"] = json!({ "explain_ms": ex.explain_ms, "total_ms": total_ms });
    timing_header(output, ex.explain_ms, total_ms);
    answer_json(output, &v);
    Ok(())
}

/// Posts a DICOM file to Orthanc's own REST API; returns Orthanc's answer (`ID`, `ParentStudy`,
/// …).
fn store(bytes: &[u8]) -> HttpResult<Value> {
    let mut buf = MemoryBuffer { data: null_mut(), size: 0 };
    let st = unsafe {
        ibexo_rest_post(c"/instances".as_ptr(), bytes.as_ptr() as *const c_void, bytes.len() as u32, &mut buf)
    };
    if st != 0 {
        return Err(HttpError(500, format!("Orthanc refused the derived instance (error {st})")));
    }
    if buf.data.is_null() {
        return Err(HttpError(500, "Orthanc's answer to the upload is empty".into()));
    }
    let answer = unsafe { std::slice::from_raw_parts(buf.data as *const u8, buf.size as usize) }.to_vec();
    unsafe { ibexo_free_buffer(&mut buf) };
    serde_json::from_slice(&answer)
        .map_err(|e| HttpError(500, format!("Orthanc's answer to the upload is not JSON: {e}")))
}

fn route_store(output: *mut OrthancPluginRestOutput, state: &State, req: &Request) -> HttpResult<()> {
    let t = Instant::now();
    let ask = ask_from_body(&req.body)?;
    let ex = explain(state, &req.groups[0], &req.groups[1], &ask)?;
    let cmap = ask.colormap.as_deref().map(cstring);
    let mut stored = serde_json::Map::new();
    for (kind, key) in
        [(IBEX_DICOM_PARAMETRIC_MAP, "ParametricMap"), (IBEX_DICOM_SECONDARY_CAPTURE, "SecondaryCapture")]
    {
        let mut out = null_mut();
        let st = unsafe {
            ibex_result_to_dicom(
                ex.result.ptr,
                ex.image.ptr,
                0,
                kind,
                cmap.as_ref().map_or(null(), |c| c.as_ptr()),
                ask.opacity,
                &mut out,
            )
        };
        check(st, key, |s| if s == IBEX_ERR_INVALID_ARGUMENT { 400 } else { 500 })?;
        let bytes = bytes_of(&owned(out, ibex_bytes_free));
        stored.insert(key.into(), store(&bytes)?);
    }
    let total_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut v = Value::Object(stored);
    v["instance"] = Value::String(req.groups[0].clone());
    v["timing"] = json!({ "explain_ms": ex.explain_ms, "total_ms": total_ms });
    timing_header(output, ex.explain_ms, total_ms);
    answer_json(output, &v);
    Ok(())
}

fn send_error(output: *mut OrthancPluginRestOutput, HttpError(status, msg): HttpError) {
    if status >= 500 {
        log(0, &msg);
    } else {
        log(2, &msg);
    }
    let body = json!({ "error": msg, "status": status }).to_string();
    unsafe { ibexo_send_status(output, status, body.as_ptr() as *const c_char, body.len() as u32) }
}

/// Runs a route with the panic boundary and the error answers; always reports success to
/// Orthanc (the answer carries the HTTP status).
unsafe fn serve(
    output: *mut OrthancPluginRestOutput,
    request: *const OrthancPluginHttpRequest,
    allowed: &CStr,
    route: fn(*mut OrthancPluginRestOutput, &State, &Request) -> HttpResult<()>,
) -> i32 {
    let r = catch_unwind(AssertUnwindSafe(|| {
        let req = read_request(request);
        let method = if allowed == c"POST" { POST } else { GET };
        if req.method != method {
            ibexo_send_method_not_allowed(output, allowed.as_ptr());
            return;
        }
        let Some(state) = STATE.get() else {
            send_error(output, HttpError(503, "the plugin is not initialised".into()));
            return;
        };
        if let Err(e) = route(output, state, &req) {
            send_error(output, e);
        }
    }));
    if r.is_err() {
        send_error(output, HttpError(500, "internal error in the ibex plugin (panic caught)".into()));
    }
    0
}

/// The routes: regex, the one HTTP method each answers, the handler.
type Route = (&'static CStr, &'static CStr, fn(*mut OrthancPluginRestOutput, &State, &Request) -> HttpResult<()>);
const ROUTES: [Route; 4] = [
    (c"/ibex/info", c"GET", route_info),
    (c"/instances/([^/]+)/ibex/([^/]+)/overlay.png", c"GET", route_overlay),
    (c"/instances/([^/]+)/ibex/([^/]+)/heatmap", c"GET", route_heatmap),
    (c"/instances/([^/]+)/ibex/([^/]+)", c"POST", route_store),
];

/// Orthanc's callback for route `R` of [`ROUTES`].
unsafe extern "C" fn on_route<const R: usize>(
    output: *mut OrthancPluginRestOutput,
    _url: *const c_char,
    request: *const OrthancPluginHttpRequest,
) -> i32 {
    let (_, allowed, route) = ROUTES[R];
    serve(output, request, allowed, route)
}

/// Reads `"Ibex"` from Orthanc's configuration and loads the model.
fn configure() -> State {
    let text = unsafe {
        let p = ibexo_get_configuration();
        if p.is_null() {
            String::new()
        } else {
            let s = CStr::from_ptr(p).to_string_lossy().into_owned();
            ibexo_free_string(p);
            s
        }
    };
    let config: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let ibex_cfg = config.get("Ibex").cloned().unwrap_or(Value::Null);
    let mut state = State {
        model: Err("no \"Ibex\": { \"Model\": … } in Orthanc's configuration".into()),
        model_path: String::new(),
        model_json: Value::Null,
        default_method: ibex_cfg.get("Method").and_then(Value::as_str).unwrap_or("").to_string(),
        options: ibex_cfg.get("Options").and_then(Value::as_object).cloned().unwrap_or_default(),
        threads: ibex_cfg.get("Threads").and_then(Value::as_u64).map_or(2, |n| n.clamp(1, 256) as usize),
        max_samples: ibex_cfg
            .get("MaxSamples")
            .and_then(Value::as_u64)
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_MAX_SAMPLES),
        permits: Permits { free: Mutex::new(0), cv: Condvar::new() },
    };
    *state.permits.free.get_mut().unwrap_or_else(|e| e.into_inner()) = state.threads;
    let Some(path) = ibex_cfg.get("Model").and_then(Value::as_str) else {
        return state;
    };
    state.model_path = path.to_string();
    let c = cstring(path);
    let mut model = null_mut();
    let t = Instant::now();
    let st = unsafe { ibex_model_load(null(), c.as_ptr(), null(), &mut model) };
    if st != IBEX_OK {
        let e = ibex_error(st, &format!("cannot load the model '{path}'"), |_| 500).1;
        log(0, &e);
        state.model = Err(e);
        return state;
    }
    let mut desc = null_mut();
    if unsafe { ibex_model_describe_json(model, &mut desc) } == IBEX_OK {
        state.model_json = serde_json::from_slice(&bytes_of(&owned(desc, ibex_bytes_free))).unwrap_or(Value::Null);
    }
    if state.default_method.is_empty() {
        state.default_method = state.model_json["methods"].get(0).and_then(Value::as_str).unwrap_or("").to_string();
    }
    log(
        2,
        &format!(
            "model {path} loaded in {:.0} ms; {} explanation(s) at a time",
            t.elapsed().as_secs_f64() * 1e3,
            state.threads
        ),
    );
    state.model = Ok(ModelHandle(model));
    state
}

/// Orthanc's entry point: checks the version, reads the configuration, loads the model and
/// registers the routes. A missing or broken model does not stop Orthanc: the routes answer
/// 503 with the reason and `/ibex/info` shows it.
#[no_mangle]
pub unsafe extern "C" fn OrthancPluginInitialize(context: *mut OrthancPluginContext) -> i32 {
    let r = catch_unwind(AssertUnwindSafe(|| {
        ibexo_set_context(context);
        let (major, minor, revision) = MIN_ORTHANC;
        if ibexo_check_version(major, minor, revision) == 0 {
            let running = CStr::from_ptr(ibexo_orthanc_version()).to_string_lossy().into_owned();
            log(0, &format!("needs Orthanc {major}.{minor}.{revision} or later, this is {running}"));
            return -1;
        }
        if ibex_abi_version() != ibex::ffi::IBEX_ABI_VERSION {
            log(0, "the ibex library's ABI version does not match the plugin's");
            return -1;
        }
        let _ = STATE.set(configure());
        let callbacks: [RestCallback; 4] = [on_route::<0>, on_route::<1>, on_route::<2>, on_route::<3>];
        for ((regex, _, _), cb) in ROUTES.iter().zip(callbacks) {
            ibexo_register_no_lock(regex.as_ptr(), cb);
        }
        0
    }));
    r.unwrap_or(-1)
}

/// Orthanc's shutdown: frees the model.
#[no_mangle]
pub extern "C" fn OrthancPluginFinalize() {
    let _ = catch_unwind(|| {
        if let Some(State { model: Ok(m), .. }) = STATE.get() {
            // Requests are over when Orthanc finalises its plugins.
            unsafe { ibex_model_free(m.0) };
        }
    });
}

#[no_mangle]
pub extern "C" fn OrthancPluginGetName() -> *const c_char {
    c"ibex".as_ptr()
}

#[no_mangle]
pub extern "C" fn OrthancPluginGetVersion() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}
