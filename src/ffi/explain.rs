//! `ibex_explain`: one call, one image, one target.

use super::control::{ibex_run_control, run_control};
use super::image::{check_size, from_view, ibex_image_view};
use super::model::ibex_explainer;
use super::result::ibex_result;
use super::status::*;
use crate::explain::Target;
use std::ffi::c_char;

/// What to explain. Set `struct_size = sizeof(ibex_target)`. For M2IB give a caption in
/// `text`, or several in `texts`/`text_count` (all are explained against the same image;
/// `text` first if both are set). `class_index` is for classifiers: the class to explain, or
/// -1 for the predicted class (an index past the model's classes is an error).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ibex_target {
    pub struct_size: u32,
    pub class_index: i32,
    /// One UTF-8 caption, or NULL.
    pub text: *const c_char,
    /// `text_count` UTF-8 captions, or NULL.
    pub texts: *const *const c_char,
    pub text_count: u32,
}

/// Explains `image` for `target`. On success `*out` receives a result to free with
/// `ibex_result_free`. `control` may be NULL.
///
/// # Safety
/// All pointers valid (or NULL where documented) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn ibex_explain(
    explainer: *mut ibex_explainer,
    image: *const ibex_image_view,
    target: *const ibex_target,
    control: *const ibex_run_control,
    out: *mut *mut ibex_result,
) -> i32 {
    guard(|| {
        non_null(image, "image")?;
        run(explainer, image, 1, target, control, out)
    })
}

/// Explains `image_count` images (an array of views) for the same target in one call; on
/// success `out_results[i]` receives the result of image `i` (free each with
/// `ibex_result_free`). Progress counts over the whole batch. On failure nothing is written.
///
/// # Safety
/// `images` points to `image_count` views; `out_results` to room for `image_count` pointers.
#[no_mangle]
pub unsafe extern "C" fn ibex_explain_batch(
    explainer: *mut ibex_explainer,
    images: *const ibex_image_view,
    image_count: u32,
    target: *const ibex_target,
    control: *const ibex_run_control,
    out_results: *mut *mut ibex_result,
) -> i32 {
    guard(|| {
        non_null(images, "images")?;
        if image_count == 0 {
            return Err(FfiError(IBEX_ERR_INVALID_ARGUMENT, "image_count is 0".into()));
        }
        run(explainer, images, image_count as usize, target, control, out_results)
    })
}

unsafe fn run(
    explainer: *mut ibex_explainer,
    images: *const ibex_image_view,
    count: usize,
    target: *const ibex_target,
    control: *const ibex_run_control,
    out: *mut *mut ibex_result,
) -> FfiResult<()> {
    non_null(explainer, "explainer")?;
    non_null(target, "target")?;
    non_null(out, "out")?;
    let t = &*target;
    check_size(t.struct_size, "ibex_target")?;
    let mut texts = Vec::new();
    if !t.text.is_null() {
        texts.push(c_str(t.text, "target->text")?.to_string());
    }
    if t.text_count > 0 {
        non_null(t.texts, "target->texts")?;
        for i in 0..t.text_count as usize {
            texts.push(c_str(*t.texts.add(i), &format!("target->texts[{i}]"))?.to_string());
        }
    }
    if t.class_index < -1 {
        return Err(FfiError(
            IBEX_ERR_INVALID_ARGUMENT,
            format!(
                "target->class_index {} is invalid: a class (0, 1, …) or -1 for the predicted class",
                t.class_index
            ),
        ));
    }
    let target = Target { class_index: usize::try_from(t.class_index).ok(), texts };
    let imgs = (0..count)
        .map(|i| {
            from_view(images.add(i))
                .map_err(|FfiError(c, m)| FfiError(c, if count > 1 { format!("image {i}: {m}") } else { m }))
        })
        .collect::<FfiResult<Vec<_>>>()?;
    let mut rc = run_control(control)?;
    let ex = &*explainer;
    let results = ex.method.explain_batch(&ex.model, &imgs, &target, &mut rc)?;
    for (i, r) in results.into_iter().enumerate() {
        *out.add(i) = Box::into_raw(Box::new(ibex_result::new(r)));
    }
    Ok(())
}
