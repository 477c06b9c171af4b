//! Explanations written back as DICOM objects derived from the source image, in the source's
//! study: a **Parametric Map** (the float map at the source's rows × columns, Supplement 172)
//! for viewers that keep real values, and a **Secondary Capture** (the colour overlay on the
//! windowed source) for every other viewer. Both get a new series, reference the source image
//! and frame, and carry the source's patient and study attributes.

use std::path::{Path, PathBuf};

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileDicomObject, FileMetaTableBuilder, InMemDicomObject};
use rand::RngCore;

use super::DicomSource;
use crate::error::{Error, Result};
use crate::explain::NamedMap;
use crate::imaging::colormap::Colormap;
use crate::imaging::image::RgbImage;
use crate::imaging::overlay::{overlay_on_original, resample_onto};

/// SOP Class UID of the Parametric Map Storage.
pub const PARAMETRIC_MAP_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.30";
/// SOP Class UID of the Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.7";
/// The implementation class UID written in the file meta information of ibex's files.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.203265939408428216462345375436113398561";
/// Series numbers of the derived series (a viewer lists them after the source's).
const PM_SERIES_NUMBER: i32 = 9901;
const SC_SERIES_NUMBER: i32 = 9902;

/// A new UID: `2.25.` followed by a random (version 4) UUID as a decimal integer.
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0F) | 0x40; // version 4
    b[8] = (b[8] & 0x3F) | 0x80; // RFC 4122 variant
    format!("2.25.{}", u128::from_be_bytes(b))
}

/// What to put in the derived objects besides the map.
#[derive(Debug, Clone)]
pub struct DerivedOptions {
    /// The method that made the map (for descriptions), e.g. `m2ib`.
    pub method: String,
    /// A free-text description of the target (class or caption), e.g. `"a chest x-ray"`.
    pub target: String,
    /// Colormap of the Secondary Capture overlay.
    pub colormap: Colormap,
    /// Opacity of the overlay in [0, 1].
    pub opacity: f32,
}

impl Default for DerivedOptions {
    fn default() -> Self {
        DerivedOptions { method: String::new(), target: String::new(), colormap: Colormap::Turbo, opacity: 0.5 }
    }
}

/// A DICOM object ready to be written or sent.
pub type DerivedObject = FileDicomObject<InMemDicomObject>;

fn el(tag: Tag, vr: VR, v: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, v.into())
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn item(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    item(vec![
        el(tags::CODE_VALUE, VR::SH, value),
        el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        el(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

/// A decimal string of at most 16 characters (the DS limit) that keeps a non-zero value
/// non-zero.
fn ds(v: f64) -> String {
    for precision in (0..=10).rev() {
        let s = format!("{v:.precision$}");
        let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
        if s.len() <= 16 && (v == 0.0 || s.parse::<f64>().is_ok_and(|p| p != 0.0)) {
            return s;
        }
    }
    format!("{v:.6e}")
}

/// A size as the US that Rows and Columns take.
fn us(n: u32, what: &str) -> Result<u16> {
    u16::try_from(n).map_err(|_| Error::invalid(format!("{what} {n} does not fit DICOM's 16-bit {what}")))
}

/// The date and time now (UTC) as DICOM DA and TM strings.
fn now() -> (String, String) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let t = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (format!("{y:04}{m:02}{d:02}"), format!("{:02}{:02}{:02}", t / 3600, t / 60 % 60, t % 60))
}

/// The attributes both derived objects copy from the source (Patient, General Study), the
/// type 2 ones present even when the source lacks them.
fn copied_from(source: &InMemDicomObject) -> Vec<DataElement<InMemDicomObject>> {
    let type2 = [
        (tags::PATIENT_NAME, VR::PN),
        (tags::PATIENT_ID, VR::LO),
        (tags::PATIENT_BIRTH_DATE, VR::DA),
        (tags::PATIENT_SEX, VR::CS),
        (tags::STUDY_DATE, VR::DA),
        (tags::STUDY_TIME, VR::TM),
        (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
        (tags::STUDY_ID, VR::SH),
        (tags::ACCESSION_NUMBER, VR::SH),
    ];
    let optional = [tags::STUDY_DESCRIPTION, tags::ISSUER_OF_PATIENT_ID, tags::PATIENT_AGE];
    let mut out = Vec::new();
    for (tag, vr) in type2 {
        out.push(source.get(tag).cloned().unwrap_or_else(|| DataElement::empty(tag, vr)));
    }
    for tag in optional {
        if let Some(e) = source.get(tag) {
            out.push(e.clone());
        }
    }
    out
}

/// The common header of both objects: SOP Common, Patient, General Study, General Series,
/// General Equipment, the reference to the source.
struct Common {
    elements: Vec<DataElement<InMemDicomObject>>,
    /// The source for a Source Image Sequence (with the frame and the purpose).
    source_item: InMemDicomObject,
    /// The source for a Referenced Instance Sequence (class and instance only).
    reference: InMemDicomObject,
}

fn common(source: &DicomSource, sop_class: &str, series_number: i32, description: &str) -> Common {
    let info = &source.file.info;
    let obj: &InMemDicomObject = source.file.object();
    let sop_instance_uid = new_uid();
    let (date, time) = now();
    let mut elements = vec![
        el(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        el(tags::SOP_CLASS_UID, VR::UI, sop_class),
        el(tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid.as_str()),
        el(tags::INSTANCE_CREATION_DATE, VR::DA, date.as_str()),
        el(tags::INSTANCE_CREATION_TIME, VR::TM, time.as_str()),
        el(tags::CONTENT_DATE, VR::DA, date.as_str()),
        el(tags::CONTENT_TIME, VR::TM, time.as_str()),
        el(tags::STUDY_INSTANCE_UID, VR::UI, info.study_instance_uid.as_str()),
        el(tags::SERIES_INSTANCE_UID, VR::UI, new_uid()),
        el(tags::SERIES_NUMBER, VR::IS, series_number.to_string()),
        el(tags::SERIES_DESCRIPTION, VR::LO, description),
        el(tags::INSTANCE_NUMBER, VR::IS, "1"),
        el(tags::MANUFACTURER, VR::LO, "ibex"),
        el(tags::SOFTWARE_VERSIONS, VR::LO, concat!("ibex ", env!("CARGO_PKG_VERSION"))),
    ];
    elements.extend(copied_from(obj));
    let reference = vec![
        el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, info.sop_class_uid.as_str()),
        el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, info.sop_instance_uid.as_str()),
    ];
    let mut source_item = reference.clone();
    if info.frames > 1 {
        source_item.push(el(tags::REFERENCED_FRAME_NUMBER, VR::IS, (source.frame + 1).to_string()));
    }
    source_item.push(seq(
        tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
        vec![code("121322", "DCM", "Source image for image processing operation")],
    ));
    Common { elements, source_item: item(source_item), reference: item(reference) }
}

/// The coded units of a map's values (Real World Value Mapping).
fn units_code(units: &str) -> Result<InMemDicomObject> {
    Ok(match units {
        "bits" => code("bit", "UCUM", "bit"),
        "bits_per_pixel" => code("bit/{pixel}", "UCUM", "bit per pixel"),
        // UCUM has no unit for nats: a local code (the "99" prefix is reserved for them).
        "nats" => code("nat", "99IBEX", "nat (natural unit of information, 1/ln 2 bits)"),
        "normalized" => code("1", "UCUM", "no units"),
        other => return Err(Error::invalid(format!("map units '{other}' have no DICOM coding"))),
    })
}

fn check_inputs(source: &DicomSource, map: &NamedMap, source_region: [f32; 4]) -> Result<()> {
    if map.map.height == 1 && source.file.info.rows > 1 {
        return Err(Error::invalid(format!("map '{}' is a token map, not an image map", map.name)));
    }
    if let Some(v) = map.map.data.iter().find(|v| !v.is_finite()) {
        return Err(Error::Numerical(format!("map '{}' holds {v}: nothing is written", map.name)));
    }
    resample_onto(&map.map, source_region, 1, 1).map(|_| ())
}

/// The Parametric Map of `map` (over `source_region` of `source`, as the explanation reports
/// it): Float Pixel Data at the source's rows × columns (0 outside the region the model saw),
/// one frame, Real World Value Mapping with the map's units, Derivation Image and the Common
/// Instance Reference pointing at the source, the source's Study Instance UID, a new series;
/// the source's Frame of Reference, position, orientation and spacing when it has all four,
/// else a Frame of Reference of the map's own (see the comment in the body).
///
/// # Errors
/// [`Error::InvalidArgument`] for a token map or units without a coding;
/// [`Error::Numerical`] for a non-finite map value.
pub fn parametric_map(
    source: &DicomSource,
    map: &NamedMap,
    source_region: [f32; 4],
    options: &DerivedOptions,
) -> Result<DerivedObject> {
    check_inputs(source, map, source_region)?;
    let info = &source.file.info;
    let (rows, cols) = (info.rows, info.columns);
    let values: Vec<f32> =
        resample_onto(&map.map, source_region, cols, rows)?.into_iter().map(|v| v.unwrap_or(0.0)).collect();
    let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let description = format!("ibex {} {} ({})", options.method, map.name, map.units);
    let Common { mut elements, source_item, reference } =
        common(source, PARAMETRIC_MAP_STORAGE, PM_SERIES_NUMBER, &description);
    // The map lies on the source's plane: its Frame of Reference, position, orientation and
    // spacing when the source has all four. A source without them (ultrasound, CR, secondary
    // captures) cannot place the map in the patient, and the IOD needs a plane: the map then
    // gets a Frame of Reference of its own (no other image shares it, so no viewer fuses it
    // with anything), the identity plane at the origin, and the source's spacing or 1 per pixel.
    let spatial = !info.frame_of_reference_uid.is_empty()
        && info.pixel_spacing.is_some()
        && info.image_position.is_some()
        && info.image_orientation.is_some();
    let (frame_of_reference, spacing, position, orientation) =
        match (spatial, info.image_position, info.image_orientation) {
            (true, Some(p), Some(o)) => {
                (info.frame_of_reference_uid.clone(), info.pixel_spacing.unwrap_or([1.0, 1.0]), p, o)
            }
            _ => (new_uid(), info.pixel_spacing.unwrap_or([1.0, 1.0]), [0.0; 3], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
        };
    let dimension_uid = new_uid();
    // A map of the source's size can show what the source shows.
    let recognizable = source
        .file
        .object()
        .get(tags::RECOGNIZABLE_VISUAL_FEATURES)
        .cloned()
        .unwrap_or_else(|| el(tags::RECOGNIZABLE_VISUAL_FEATURES, VR::CS, "NO"));
    // The one dimension: the frame's position.
    let dimension = (tags::IMAGE_POSITION_PATIENT, tags::PLANE_POSITION_SEQUENCE);

    // Shared functional groups.
    let mut measures =
        vec![el(tags::PIXEL_SPACING, VR::DS, PrimitiveValue::Strs(spacing.iter().map(|&v| ds(v)).collect()))];
    let slice = source.file.object().get(tags::SLICE_THICKNESS).and_then(|e| e.to_float64().ok());
    if let Some(t) = slice {
        measures.push(el(tags::SLICE_THICKNESS, VR::DS, ds(t)));
    }
    let mut shared = vec![
        seq(tags::PIXEL_MEASURES_SEQUENCE, vec![item(measures)]),
        seq(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item(vec![el(
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                PrimitiveValue::Strs(orientation.iter().map(|&v| ds(v)).collect()),
            )])],
        ),
    ];
    let derivation = format!(
        "ibex {} explanation{}",
        options.method,
        if options.target.is_empty() { String::new() } else { format!(" of '{}'", options.target) }
    );
    let derivation: String = derivation.chars().take(1024).collect();
    shared.push(seq(
        tags::DERIVATION_IMAGE_SEQUENCE,
        vec![item(vec![
            el(tags::DERIVATION_DESCRIPTION, VR::ST, derivation.as_str()),
            // CID 7203 is extensible and has no attribution concept: a local code.
            seq(
                tags::DERIVATION_CODE_SEQUENCE,
                vec![code("ATTRIBUTION", "99IBEX", "Information-bottleneck attribution")],
            ),
            seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source_item.clone()]),
        ])],
    ));
    let anatomy = source
        .file
        .object()
        .get(tags::ANATOMIC_REGION_SEQUENCE)
        .cloned()
        .unwrap_or_else(|| seq(tags::ANATOMIC_REGION_SEQUENCE, vec![code("38266002", "SCT", "Entire body")]));
    shared.push(seq(tags::FRAME_ANATOMY_SEQUENCE, vec![item(vec![anatomy, el(tags::FRAME_LATERALITY, VR::CS, "U")])]));
    shared.push(seq(
        tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
        vec![item(vec![
            el(tags::RESCALE_INTERCEPT, VR::DS, "0"),
            el(tags::RESCALE_SLOPE, VR::DS, "1"),
            el(tags::RESCALE_TYPE, VR::LO, "US"),
        ])],
    ));
    let width = f64::from(hi - lo).max(f64::EPSILON * 4.0);
    shared.push(seq(
        tags::FRAME_VOILUT_SEQUENCE,
        vec![item(vec![
            el(tags::WINDOW_CENTER, VR::DS, ds(f64::from(lo) + width / 2.0)),
            el(tags::WINDOW_WIDTH, VR::DS, ds(width)),
            // The exact min..max of the float values, whatever their scale.
            el(tags::VOILUT_FUNCTION, VR::CS, "LINEAR_EXACT"),
        ])],
    ));
    shared.push(seq(
        tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE,
        vec![item(vec![
            el(tags::DOUBLE_FLOAT_REAL_WORLD_VALUE_FIRST_VALUE_MAPPED, VR::FD, f64::from(lo)),
            el(tags::DOUBLE_FLOAT_REAL_WORLD_VALUE_LAST_VALUE_MAPPED, VR::FD, f64::from(hi)),
            el(tags::REAL_WORLD_VALUE_INTERCEPT, VR::FD, 0.0f64),
            el(tags::REAL_WORLD_VALUE_SLOPE, VR::FD, 1.0f64),
            el(tags::LUT_EXPLANATION, VR::LO, map.name.as_str()),
            el(tags::LUT_LABEL, VR::SH, map.name.chars().take(16).collect::<String>()),
            seq(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![units_code(&map.units)?]),
        ])],
    ));
    shared.push(seq(
        tags::PARAMETRIC_MAP_FRAME_TYPE_SEQUENCE,
        vec![item(vec![el(
            tags::FRAME_TYPE,
            VR::CS,
            PrimitiveValue::Strs(["DERIVED", "PRIMARY", "IBEX", "NONE"].map(String::from).into_iter().collect()),
        )])],
    ));

    // Per-frame functional groups (one frame).
    let mut per_frame = vec![seq(
        tags::FRAME_CONTENT_SEQUENCE,
        vec![item(vec![
            el(tags::DIMENSION_INDEX_VALUES, VR::UL, PrimitiveValue::from(1u32)),
            el(tags::STACK_ID, VR::SH, "1"),
            el(tags::IN_STACK_POSITION_NUMBER, VR::UL, PrimitiveValue::from(1u32)),
        ])],
    )];
    per_frame.push(seq(
        tags::PLANE_POSITION_SEQUENCE,
        vec![item(vec![el(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            PrimitiveValue::Strs(position.iter().map(|&v| ds(v)).collect()),
        )])],
    ));

    elements.extend([
        el(tags::MODALITY, VR::CS, info.modality.as_str()),
        el(tags::MANUFACTURER_MODEL_NAME, VR::LO, "ibex"),
        el(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0"),
        el(
            tags::IMAGE_TYPE,
            VR::CS,
            PrimitiveValue::Strs(["DERIVED", "PRIMARY", "IBEX", "NONE"].map(String::from).into_iter().collect()),
        ),
        el(tags::CONTENT_LABEL, VR::CS, "IBEX"),
        el(tags::CONTENT_QUALIFICATION, VR::CS, "RESEARCH"),
        recognizable,
        el(tags::CONTENT_DESCRIPTION, VR::LO, description.as_str()),
        DataElement::empty(tags::CONTENT_CREATOR_NAME, VR::PN),
        el(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        el(tags::ROWS, VR::US, PrimitiveValue::from(us(rows, "Rows")?)),
        el(tags::COLUMNS, VR::US, PrimitiveValue::from(us(cols, "Columns")?)),
        el(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(32u16)),
        el(tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY"),
        el(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        el(tags::BURNED_IN_ANNOTATION, VR::CS, "NO"),
        el(tags::NUMBER_OF_FRAMES, VR::IS, "1"),
        seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![item(shared)]),
        seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, vec![item(per_frame)]),
        seq(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![item(vec![el(tags::DIMENSION_ORGANIZATION_UID, VR::UI, dimension_uid.as_str())])],
        ),
        seq(
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![item(vec![
                el(tags::DIMENSION_ORGANIZATION_UID, VR::UI, dimension_uid.as_str()),
                el(tags::DIMENSION_INDEX_POINTER, VR::AT, PrimitiveValue::Tags(std::iter::once(dimension.0).collect())),
                el(
                    tags::FUNCTIONAL_GROUP_POINTER,
                    VR::AT,
                    PrimitiveValue::Tags(std::iter::once(dimension.1).collect()),
                ),
            ])],
        ),
        seq(
            tags::REFERENCED_SERIES_SEQUENCE,
            vec![item(vec![
                el(tags::SERIES_INSTANCE_UID, VR::UI, info.series_instance_uid.as_str()),
                seq(tags::REFERENCED_INSTANCE_SEQUENCE, vec![reference]),
            ])],
        ),
        seq(tags::ACQUISITION_CONTEXT_SEQUENCE, vec![]),
        el(tags::FRAME_OF_REFERENCE_UID, VR::UI, frame_of_reference.as_str()),
        DataElement::empty(tags::POSITION_REFERENCE_INDICATOR, VR::LO),
        el(tags::FLOAT_PIXEL_DATA, VR::OF, PrimitiveValue::F32(values.into_iter().collect())),
    ]);
    finish(elements)
}

/// The Secondary Capture of `map` over the source: the colour overlay (the map min-max
/// normalised, `options.colormap` at `options.opacity`) on `image` (the windowed source frame
/// as [`super::load`] made it), 8-bit RGB at the source's rows × columns, referencing the
/// source image.
///
/// # Errors
/// As [`parametric_map`], and [`Error::InvalidArgument`] for an opacity outside [0, 1].
pub fn secondary_capture(
    source: &DicomSource,
    image: &RgbImage,
    map: &NamedMap,
    source_region: [f32; 4],
    options: &DerivedOptions,
) -> Result<DerivedObject> {
    check_inputs(source, map, source_region)?;
    if !(0.0..=1.0).contains(&options.opacity) {
        return Err(Error::invalid(format!("opacity must be in [0, 1], got {}", options.opacity)));
    }
    let overlay = overlay_on_original(image, &map.map, source_region, options.colormap, options.opacity)?;
    let (cols, rows) = overlay.dimensions();
    let description = format!("ibex {} {} overlay", options.method, map.name);
    let Common { mut elements, source_item, reference: _ } =
        common(source, SECONDARY_CAPTURE_STORAGE, SC_SERIES_NUMBER, &description);
    let derivation = format!(
        "ibex {} map '{}' ({}) over the source, {} colormap at opacity {}{}",
        options.method,
        map.name,
        map.units,
        options.colormap,
        options.opacity,
        if options.target.is_empty() { String::new() } else { format!(", target '{}'", options.target) }
    );
    let derivation: String = derivation.chars().take(1024).collect();
    elements.extend([
        el(tags::MODALITY, VR::CS, "OT"),
        source
            .file
            .object()
            .get(tags::LATERALITY)
            .cloned()
            .unwrap_or_else(|| DataElement::empty(tags::LATERALITY, VR::CS)),
        el(tags::CONVERSION_TYPE, VR::CS, "WSD"),
        DataElement::empty(tags::PATIENT_ORIENTATION, VR::CS),
        el(
            tags::IMAGE_TYPE,
            VR::CS,
            PrimitiveValue::Strs(["DERIVED", "SECONDARY"].map(String::from).into_iter().collect()),
        ),
        el(tags::DERIVATION_DESCRIPTION, VR::ST, derivation.as_str()),
        seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source_item]),
        el(tags::BURNED_IN_ANNOTATION, VR::CS, "NO"),
        el(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        el(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(3u16)),
        el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"),
        el(tags::PLANAR_CONFIGURATION, VR::US, PrimitiveValue::from(0u16)),
        el(tags::ROWS, VR::US, PrimitiveValue::from(us(rows, "Rows")?)),
        el(tags::COLUMNS, VR::US, PrimitiveValue::from(us(cols, "Columns")?)),
        el(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(8u16)),
        el(tags::BITS_STORED, VR::US, PrimitiveValue::from(8u16)),
        el(tags::HIGH_BIT, VR::US, PrimitiveValue::from(7u16)),
        el(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)),
        el(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(overlay.into_raw().into_iter().collect())),
    ]);
    finish(elements)
}

fn finish(elements: Vec<DataElement<InMemDicomObject>>) -> Result<DerivedObject> {
    let obj = InMemDicomObject::from_element_iter(elements);
    obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name(concat!("IBEX_", env!("CARGO_PKG_VERSION"))),
    )
    .map_err(|e| Error::invalid(format!("cannot build the file meta information: {e}")))
}

/// The object's bytes as a DICOM file (preamble, file meta, data set).
pub fn to_bytes(obj: &DerivedObject) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    obj.write_all(&mut out).map_err(|e| Error::invalid(format!("cannot encode the DICOM object: {e}")))?;
    Ok(out)
}

/// Writes `obj` into `dir` as `<prefix>_<SOP Instance UID>.dcm`; returns the path.
pub fn write_into(dir: &Path, prefix: &str, obj: &DerivedObject) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(format!("{prefix}_{}.dcm", obj.meta().media_storage_sop_instance_uid()));
    let bytes = to_bytes(obj)?;
    std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_and_keep_non_zero_values() {
        for v in [0.0, 1.0, -1024.0, 0.661468, 3.774114, 8.9e-16, -2.5e-9, 123456789.123456, 1e300] {
            let s = ds(v);
            assert!(s.len() <= 16, "{v}: {s}");
            let back: f64 = s.parse().unwrap();
            assert_eq!(back == 0.0, v == 0.0, "{v}: {s}");
            assert!((back - v).abs() <= 1e-6 * v.abs().max(1e-300) || v.abs() > 1e9, "{v}: {s}");
        }
        assert_eq!(ds(0.5), "0.5");
        assert!(us(65536, "Rows").is_err());
        assert!(new_uid().starts_with("2.25.") && new_uid().len() <= 64 && new_uid() != new_uid());
    }
}
