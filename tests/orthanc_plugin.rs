//! The Orthanc plugin end to end: builds `plugins/orthanc`, starts a real Orthanc (Debian's
//! `orthanc`) on 127.0.0.1 with a temporary storage directory, the DICOM server off and the
//! plugin loaded; uploads fixtures; calls every route with curl; checks the stored Parametric
//! Map and Secondary Capture; sends bad and concurrent requests; measures the plugin's
//! overhead; and checks that Orthanc's own authentication guards the plugin's routes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Builds the plugin with the profile of this test binary; returns the library's path.
fn plugin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf(); // target/<profile>
    let target_dir = profile_dir.parent().unwrap();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-p", "ibex-orthanc", "--target-dir"]).arg(target_dir);
    if profile_dir.file_name().unwrap() == "release" {
        cmd.arg("--release");
    }
    let t = Instant::now();
    let out = cmd.current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    assert!(out.status.success(), "building the plugin failed:\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("plugin built in {:.1} s", t.elapsed().as_secs_f64());
    profile_dir.join("libibex_orthanc.so")
}

/// A running Orthanc, stopped (by its PID) on drop.
struct Orthanc {
    child: Child,
    port: u16,
    log: PathBuf,
    auth: Option<&'static str>,
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(dir: &Path, plugin: &Path, extra: Value) -> Orthanc {
    let port = free_port();
    let storage = dir.join(format!("storage-{port}"));
    let mut config = json!({
        "Name": "ibex-test",
        "StorageDirectory": storage,
        "IndexDirectory": storage,
        "HttpPort": port,
        "DicomServerEnabled": false,
        "RemoteAccessAllowed": false,
        "AuthenticationEnabled": false,
        "HttpDescribeErrors": true,
        "Plugins": [plugin],
        "Ibex": {
            "Model": Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join("efficientnet-lite0"),
            "Method": "iba",
            "Threads": 2
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let cfg = dir.join(format!("orthanc-{port}.json"));
    std::fs::write(&cfg, config.to_string()).unwrap();
    let log = dir.join(format!("orthanc-{port}.log"));
    let child = Command::new("Orthanc")
        .arg(&cfg)
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(dir.join(format!("orthanc-{port}.err"))).unwrap()))
        .spawn()
        .expect("Orthanc (Debian package orthanc) must be installed: .ci/run installs it");
    let auth = config["AuthenticationEnabled"].as_bool().unwrap().then_some("alice:secret");
    let o = Orthanc { child, port, log, auth };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if o.get("/system").0 == 200 {
            return o;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("Orthanc did not answer /system within 60 s; log:\n{}", o.logs());
}

/// A curl answer: status, body, headers.
struct Answer(u16, Vec<u8>, String);

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.1)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.1)))
    }
}

impl Orthanc {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn curl(&self, args: &[&str], path: &str, credentials: bool) -> Answer {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-D", "-", "-o"]).arg(tmp.path()).args(["-w", "\n%{http_code}"]).args(args);
        if let (true, Some(a)) = (credentials, self.auth) {
            cmd.args(["-u", a]);
        }
        let out = cmd.arg(self.url(path)).output().expect("curl must be installed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let code = text.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        Answer(code, std::fs::read(tmp.path()).unwrap(), text)
    }

    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let a = self.curl(&[], path, true);
        (a.0, a.1)
    }

    fn post(&self, path: &str, body: &str) -> Answer {
        self.curl(&["-X", "POST", "--data-binary", body], path, true)
    }

    fn upload(&self, file: &Path) -> Value {
        let arg = format!("@{}", file.display());
        let a = self.post("/instances", &arg);
        assert_eq!(a.0, 200, "upload {}: {}", file.display(), String::from_utf8_lossy(&a.1));
        a.json()
    }
}

fn dicom(name: &str) -> PathBuf {
    common::fixtures().join("images").join("dicom").join(name)
}

/// `explain=…; total=…` from the timing header.
fn timing(headers: &str) -> (f64, f64) {
    let line = headers.lines().find(|l| l.to_ascii_lowercase().starts_with("x-ibex-timing-ms")).expect("timing header");
    let num = |key: &str| -> f64 {
        let at = line.find(key).unwrap() + key.len();
        line[at..].split(';').next().unwrap().trim().parse().unwrap()
    };
    (num("explain="), num("total="))
}

#[test]
fn orthanc_plugin_end_to_end() {
    let plugin = plugin();
    let tmp = tempfile::tempdir().unwrap();
    let orthanc = start(tmp.path(), &plugin, json!({}));

    // GET /ibex/info
    let (code, body) = orthanc.get("/ibex/info");
    assert_eq!(code, 200);
    let info: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(info["kind"], "efficientnet_lite");
    assert!(info["methods"].as_array().unwrap().iter().any(|m| m == "gradcam"), "{info}");
    assert_eq!(info["default_method"], "iba");
    assert_eq!(info["abi"], 1);
    assert!(info.get("error").is_none(), "{info}");

    let ct = orthanc.upload(&dicom("CT_small.dcm"));
    let big = orthanc.upload(&dicom("693_UNCR.dcm"));
    let us = orthanc.upload(&dicom("US1_UNCR.dcm"));
    let mr = orthanc.upload(&dicom("emri_small.dcm"));
    let bad = orthanc.upload(&dicom("corrupt/corrupt_bad_rows_MR_small.dcm"));
    let id = |v: &Value| v["ID"].as_str().unwrap().to_string();
    let (ct_id, big_id, us_id, mr_id, bad_id) = (id(&ct), id(&big), id(&us), id(&mr), id(&bad));

    // The overlay PNG at the source's size, for a CT, a colour image and a frame of an MR.
    for (inst, query, w, h) in [
        (&ct_id, "", 128, 128),
        (&us_id, "?colormap=viridis&opacity=0.3", 640, 480),
        (&mr_id, "?frame=7&window=200,400", 64, 64),
        (&ct_id, "?target=3", 128, 128),
    ] {
        let a = orthanc.curl(&[], &format!("/instances/{inst}/ibex/gradcam/overlay.png{query}"), true);
        assert_eq!(a.0, 200, "{query}: {}", String::from_utf8_lossy(&a.1));
        assert!(a.2.to_ascii_lowercase().contains("content-type: image/png"), "{}", a.2);
        let png = image::load_from_memory(&a.1).unwrap();
        assert_eq!((png.width(), png.height()), (w, h), "{query}");
    }

    // The heatmap as JSON: maps with their values and the DICOM geometry.
    let a = orthanc.curl(&[], &format!("/instances/{ct_id}/ibex/gradcam/heatmap"), true);
    assert_eq!(a.0, 200);
    let v = a.json();
    let maps = v["maps"].as_array().unwrap();
    assert_eq!(maps[0]["name"], "gradcam");
    let (w, h) = (maps[0]["width"].as_u64().unwrap(), maps[0]["height"].as_u64().unwrap());
    assert_eq!(maps[0]["data"].as_array().unwrap().len() as u64, w * h);
    assert_eq!(v["dicom"]["rows"], 128);
    assert_eq!(v["dicom"]["modality"], "CT");
    assert!(v["dicom"]["pixel_spacing"].is_array());
    assert_eq!(v["result"]["method"], "gradcam");
    assert_eq!(v["source_region"].as_array().unwrap().len(), 4);

    // POST: both derived instances stored in the source study, referencing the source.
    let a = orthanc.post(&format!("/instances/{ct_id}/ibex/gradcam"), r#"{"target": 3, "opacity": 0.4}"#);
    assert_eq!(a.0, 200, "{}", String::from_utf8_lossy(&a.1));
    let v = a.json();
    let src_tags: Value =
        serde_json::from_slice(&orthanc.get(&format!("/instances/{ct_id}/simplified-tags")).1).unwrap();
    for (key, class) in
        [("ParametricMap", "1.2.840.10008.5.1.4.1.1.30"), ("SecondaryCapture", "1.2.840.10008.5.1.4.1.1.7")]
    {
        assert_eq!(v[key]["ParentStudy"], ct["ParentStudy"], "{key} in the source study");
        assert_ne!(v[key]["ParentSeries"], ct["ParentSeries"], "{key} in a new series");
        let new_id = v[key]["ID"].as_str().unwrap();
        let tags: Value =
            serde_json::from_slice(&orthanc.get(&format!("/instances/{new_id}/tags?simplify")).1).unwrap();
        assert_eq!(tags["SOPClassUID"], class);
        assert_eq!(tags["StudyInstanceUID"], src_tags["StudyInstanceUID"]);
        assert_eq!(tags["PatientID"], src_tags["PatientID"]);
        let reference = if key == "ParametricMap" {
            &tags["ReferencedSeriesSequence"][0]["ReferencedInstanceSequence"][0]
        } else {
            &tags["SourceImageSequence"][0]
        };
        assert_eq!(reference["ReferencedSOPInstanceUID"], src_tags["SOPInstanceUID"], "{key}: {tags}");
        if key == "ParametricMap" {
            assert_eq!(tags["FrameOfReferenceUID"], src_tags["FrameOfReferenceUID"]);
            assert_eq!(tags["Rows"], "128");
            // Orthanc hands back the float map we stored.
            let file = orthanc.get(&format!("/instances/{new_id}/file")).1;
            let obj = dicom_object::OpenFileOptions::new()
                .read_preamble(dicom_object::file::ReadPreamble::Always)
                .from_reader(&file[..])
                .unwrap();
            let floats = obj.element(dicom_dictionary_std::tags::FLOAT_PIXEL_DATA).unwrap().to_bytes().unwrap();
            assert_eq!(floats.len(), 128 * 128 * 4);
        }
    }
    assert_eq!(v["instance"], ct_id.as_str());

    // Bad requests: HTTP errors with JSON messages, and Orthanc carries on.
    for (path, body, status, needle) in [
        ("/instances/no-such-instance/ibex/gradcam/overlay.png", None, 404, "unknown instance"),
        (&*format!("/instances/{bad_id}/ibex/gradcam/overlay.png"), None, 415, "Pixel Data holds 8192 bytes"),
        (&*format!("/instances/{ct_id}/ibex/no-such-method/heatmap"), None, 400, "no-such-method"),
        (&*format!("/instances/{ct_id}/ibex/gradcam/heatmap?target=5000"), None, 400, "out of range"),
        (&*format!("/instances/{ct_id}/ibex/gradcam/heatmap?frame=3"), None, 400, "frame 3 requested"),
        (&*format!("/instances/{ct_id}/ibex/gradcam/heatmap?bogus=1"), None, 400, "unknown query parameter"),
        (&*format!("/instances/{ct_id}/ibex/iba"), Some(r#"{"options": {"beta": "high"}}"#), 400, "beta"),
        (&*format!("/instances/{ct_id}/ibex/gradcam"), Some("not json"), 400, "not JSON"),
        (&*format!("/instances/{ct_id}/ibex/gradcam"), Some(r#"{"colour": "red"}"#), 400, "unknown key"),
    ] {
        let a = match body {
            Some(b) => orthanc.post(path, b),
            None => orthanc.curl(&[], path, true),
        };
        assert_eq!(a.0, status, "{path}: {}", String::from_utf8_lossy(&a.1));
        let v = a.json();
        assert!(v["error"].as_str().unwrap().contains(needle), "{path}: {v}");
        assert_eq!(v["status"], status);
    }
    // GET on the POST route is a 405.
    assert_eq!(orthanc.curl(&[], &format!("/instances/{ct_id}/ibex/gradcam"), true).0, 405);

    // 8 concurrent explanations (2 at a time in the plugin): all answer, and Orthanc answers
    // /system meanwhile.
    let url = orthanc.url(&format!("/instances/{big_id}/ibex/gradcam/overlay.png"));
    let t = Instant::now();
    let children: Vec<Child> = (0..8)
        .map(|_| {
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let s = Instant::now();
    assert_eq!(orthanc.get("/system").0, 200);
    let system_ms = s.elapsed().as_secs_f64() * 1e3;
    let codes: Vec<String> = children
        .into_iter()
        .map(|c| String::from_utf8_lossy(&c.wait_with_output().unwrap().stdout).into_owned())
        .collect();
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
    eprintln!(
        "8 concurrent Grad-CAM overlays of a 512x512 CT: {:.2} s; /system meanwhile in {system_ms:.0} ms",
        t.elapsed().as_secs_f64()
    );
    assert!(system_ms < 2000.0, "Orthanc blocked for {system_ms} ms");

    // Overhead on a 512x512 CT with the bundled model's default method (IBA): the plugin's
    // time beyond the explanation (fetch, decode, PNG / DICOM encoding, storing).
    for _ in 0..2 {
        let t = Instant::now();
        let a = orthanc.curl(&[], &format!("/instances/{big_id}/ibex/default/overlay.png"), true);
        let client_ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(a.0, 200);
        let (explain_ms, total_ms) = timing(&a.2);
        eprintln!(
            "overlay.png, 512x512 CT, IBA: explanation {explain_ms:.0} ms, plugin total {total_ms:.0} ms \
             (overhead {:.1} %), curl {client_ms:.0} ms",
            (total_ms - explain_ms) / explain_ms * 100.0
        );
        assert!(total_ms - explain_ms < 0.2 * explain_ms);
        let t = Instant::now();
        let a = orthanc.post(&format!("/instances/{big_id}/ibex/default"), "{}");
        let client_ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(a.0, 200);
        let (explain_ms, total_ms) = timing(&a.2);
        eprintln!(
            "POST (Parametric Map + Secondary Capture stored), 512x512 CT, IBA: explanation {explain_ms:.0} ms, \
             plugin total {total_ms:.0} ms (overhead {:.1} %), curl {client_ms:.0} ms",
            (total_ms - explain_ms) / explain_ms * 100.0
        );
        assert!(total_ms - explain_ms < 0.2 * explain_ms);
    }
    assert_eq!(orthanc.get("/system").0, 200, "Orthanc is still up");
    drop(orthanc);

    // With Orthanc's authentication on, the plugin's routes are behind it like any other.
    let secured =
        start(tmp.path(), &plugin, json!({ "AuthenticationEnabled": true, "RegisteredUsers": { "alice": "secret" } }));
    assert_eq!(secured.curl(&[], "/ibex/info", false).0, 401);
    assert_eq!(secured.curl(&[], "/ibex/info", true).0, 200);
    let ct = secured.upload(&dicom("CT_small.dcm"));
    let path = format!("/instances/{}/ibex/gradcam/overlay.png", ct["ID"].as_str().unwrap());
    assert_eq!(secured.curl(&[], &path, false).0, 401);
    assert_eq!(secured.curl(&[], &path, true).0, 200);
    assert_eq!(secured.curl(&["-u", "alice:wrong"], "/ibex/info", false).0, 401);
}

#[test]
fn a_missing_model_is_reported_not_fatal() {
    let plugin = plugin();
    let tmp = tempfile::tempdir().unwrap();
    let orthanc = start(tmp.path(), &plugin, json!({ "Ibex": { "Model": "/no/such/model" } }));
    let (code, body) = orthanc.get("/ibex/info");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("/no/such/model"), "{v}");
    let ct = orthanc.upload(&dicom("CT_small.dcm"));
    let a = orthanc.curl(&[], &format!("/instances/{}/ibex/gradcam/heatmap", ct["ID"].as_str().unwrap()), true);
    assert_eq!(a.0, 503);
    assert!(a.json()["error"].as_str().unwrap().contains("no model loaded"));
    assert_eq!(orthanc.get("/system").0, 200);
}
