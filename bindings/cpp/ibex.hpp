// ibex.hpp — a header-only C++17 binding over the ibex C ABI (include/ibex.h).
//
// Move-only RAII handles, exceptions (ibex::error with status()), maps as views or
// std::vector<float>, callbacks as std::function through the C ABI's `void* user`. No method
// logic lives here: every call is one C call. Link against libibex (shared or static).
//
// SPDX-License-Identifier: Apache-2.0
#ifndef IBEX_HPP
#define IBEX_HPP

#include "ibex.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ibex {

/// An error from the library: the status (`IBEX_ERR_*`) and the library's message.
class error : public std::runtime_error {
 public:
  error(int32_t status, const std::string &message)
      : std::runtime_error(std::string(ibex_status_string(status)) + ": " + message), status_(status), message_(message) {}
  /// The status code (`IBEX_ERR_*`).
  int32_t status() const noexcept { return status_; }
  /// The status's name, e.g. "invalid argument".
  const char *status_name() const noexcept { return ibex_status_string(status_); }
  /// The library's message alone.
  const std::string &message() const noexcept { return message_; }

 private:
  int32_t status_;
  std::string message_;
};

/// The call was cancelled (through a cancel token or a progress callback returning false).
class cancelled : public error {
 public:
  explicit cancelled(const std::string &message) : error(IBEX_ERR_CANCELLED, message) {}
};

namespace detail {

/// Throws the library's error for a failed status.
inline void check(int32_t status) {
  if (status == IBEX_OK) return;
  std::string message = ibex_last_error_message();
  if (status == IBEX_ERR_CANCELLED) throw cancelled(message);
  throw error(status, message);
}

/// A move-only owner of a C handle.
template <typename T, void (*Free)(T *)>
class handle {
 public:
  handle() noexcept = default;
  explicit handle(T *p) noexcept : p_(p) {}
  handle(const handle &) = delete;
  handle &operator=(const handle &) = delete;
  handle(handle &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  handle &operator=(handle &&o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  ~handle() { reset(); }
  void reset() noexcept {
    if (p_ != nullptr) Free(p_);
    p_ = nullptr;
  }
  /// The C handle; throws for a moved-from or closed handle instead of passing NULL on.
  T *get() const {
    if (p_ == nullptr) throw error(IBEX_ERR_NULL_POINTER, "the handle is closed or moved from");
    return p_;
  }
  explicit operator bool() const noexcept { return p_ != nullptr; }

 private:
  T *p_ = nullptr;
};

inline std::vector<uint8_t> take_bytes(ibex_bytes *raw) {
  handle<ibex_bytes, ibex_bytes_free> owned(raw);
  const uint8_t *data = nullptr;
  size_t len = 0;
  check(ibex_bytes_data(owned.get(), &data, &len));
  return std::vector<uint8_t>(data, data + len);
}

}  // namespace detail

/// The library's version string, e.g. "0.1.0+1a2b3c4d5e".
inline std::string version() { return ibex_version_string(); }

/// Throws unless the library's ABI is the one this header was written for.
inline void check_abi() {
  if (ibex_abi_version() != IBEX_ABI_VERSION)
    throw error(IBEX_ERR_UNSUPPORTED, "libibex has ABI " + std::to_string(ibex_abi_version()) + ", ibex.hpp expects " +
                                          std::to_string(IBEX_ABI_VERSION));
}

/// Options for a model or a method, set by key or from JSON.
class options {
 public:
  options() {
    ibex_options *p = nullptr;
    detail::check(ibex_options_create(&p));
    h_ = decltype(h_)(p);
  }
  static options from_json(const std::string &json) {
    ibex_options *p = nullptr;
    detail::check(ibex_options_from_json(json.c_str(), &p));
    return options(p);
  }
  options &set(const std::string &key, double v) {
    detail::check(ibex_options_set_float(h_.get(), key.c_str(), v));
    return *this;
  }
  /// Any integer type.
  template <typename I, typename std::enable_if<std::is_integral<I>::value && !std::is_same<I, bool>::value, int>::type = 0>
  options &set(const std::string &key, I v) {
    detail::check(ibex_options_set_int(h_.get(), key.c_str(), static_cast<int64_t>(v)));
    return *this;
  }
  options &set(const std::string &key, const std::string &v) {
    detail::check(ibex_options_set_str(h_.get(), key.c_str(), v.c_str()));
    return *this;
  }
  options &set(const std::string &key, const char *v) { return set(key, std::string(v)); }
  const ibex_options *get() const { return h_.get(); }

 private:
  explicit options(ibex_options *p) : h_(p) {}
  detail::handle<ibex_options, ibex_options_free> h_;
};

/// A loaded model: immutable, shared by any number of explainers and threads.
class model {
 public:
  /// Loads a model directory (or Hugging Face id); `kind` empty = detect.
  static model load(const std::string &path, const std::string &kind = "", const options *opts = nullptr) {
    ibex_model *p = nullptr;
    detail::check(ibex_model_load(kind.empty() ? nullptr : kind.c_str(), path.c_str(), opts ? opts->get() : nullptr, &p));
    return model(p);
  }
  /// `{"kind": ..., "methods": [...]}`.
  std::string describe_json() const {
    ibex_bytes *b = nullptr;
    detail::check(ibex_model_describe_json(h_.get(), &b));
    auto v = detail::take_bytes(b);
    return std::string(v.begin(), v.end());
  }
  const ibex_model *get() const { return h_.get(); }
  void close() noexcept { h_.reset(); }

 private:
  explicit model(ibex_model *p) : h_(p) {}
  detail::handle<ibex_model, ibex_model_free> h_;
};

enum class pixel_type : int32_t { u8 = IBEX_PIXEL_U8, u16 = IBEX_PIXEL_U16, f32 = IBEX_PIXEL_F32 };
enum class layout : int32_t { gray = IBEX_LAYOUT_GRAY, rgb = IBEX_LAYOUT_RGB, rgba = IBEX_LAYOUT_RGBA };

/// A borrowed pixel buffer (not copied; it must outlive the call it is passed to).
class image_view {
 public:
  /// `data` holds `len` bytes; row `y` starts at `y * row_stride` (bytes).
  image_view(const void *data, size_t len, uint32_t width, uint32_t height, uint32_t row_stride, pixel_type pixel,
             layout lay) noexcept {
    v_.struct_size = sizeof(ibex_image_view);
    v_.width = width;
    v_.height = height;
    v_.row_stride = row_stride;
    v_.pixel_type = static_cast<int32_t>(pixel);
    v_.layout = static_cast<int32_t>(lay);
    v_.data = data;
    v_.data_len = len;
  }
  /// A tightly packed interleaved buffer.
  template <typename T>
  static image_view packed(const std::vector<T> &pixels, uint32_t width, uint32_t height, pixel_type pixel, layout lay) {
    uint32_t channels = lay == layout::gray ? 1u : lay == layout::rgb ? 3u : 4u;
    uint32_t sample = pixel == pixel_type::u8 ? 1u : pixel == pixel_type::u16 ? 2u : 4u;
    return image_view(pixels.data(), pixels.size() * sizeof(T), width, height, width * channels * sample, pixel, lay);
  }
  explicit image_view(const ibex_image_view &v) noexcept : v_(v) {}
  const ibex_image_view &raw() const noexcept { return v_; }
  uint32_t width() const noexcept { return v_.width; }
  uint32_t height() const noexcept { return v_.height; }

 private:
  ibex_image_view v_{};
};

/// Reading options for DICOM (frame, window, size ceiling).
struct dicom_options {
  uint32_t frame = 0;
  /// The file's window to use (0-based); 0 is its first, or the full range when it has none.
  int32_t window_index = 0;
  /// Use `window_center` / `window_width` (rescaled units) instead of the file's.
  bool use_window = false;
  double window_center = 0;
  double window_width = 0;
  /// 0 = the library's default ceiling on rows × columns × frames × samples.
  uint64_t max_samples = 0;

  ibex_dicom_options raw() const noexcept {
    ibex_dicom_options o{};
    o.struct_size = sizeof o;
    o.frame = frame;
    o.window_index = window_index;
    o.use_window = use_window ? 1 : 0;
    o.window_center = window_center;
    o.window_width = window_width;
    o.max_samples = max_samples;
    return o;
  }
};

/// An image decoded by ibex (PNG, JPEG, WebP, BMP, TIFF, DICOM).
class image {
 public:
  static image load(const std::string &path) {
    ibex_image *p = nullptr;
    detail::check(ibex_image_load_file(path.c_str(), &p));
    return image(p);
  }
  static image load_dicom(const std::string &path, const dicom_options &o = {}) {
    ibex_image *p = nullptr;
    auto raw = o.raw();
    detail::check(ibex_image_load_dicom(path.c_str(), &raw, &p));
    return image(p);
  }
  static image load_dicom(const std::vector<uint8_t> &bytes, const dicom_options &o = {}, const std::string &name = "") {
    ibex_image *p = nullptr;
    auto raw = o.raw();
    detail::check(ibex_image_load_dicom_memory(bytes.data(), bytes.size(), name.empty() ? nullptr : name.c_str(), &raw, &p));
    return image(p);
  }
  /// The decoded pixels (valid while the image lives).
  image_view view() const {
    ibex_image_view v{};
    v.struct_size = sizeof v;
    detail::check(ibex_image_get_view(h_.get(), &v));
    return image_view(v);
  }
  /// The DICOM geometry and identity (throws for images not read from DICOM).
  ibex_dicom_info dicom_info() const {
    ibex_dicom_info info{};
    info.struct_size = sizeof info;
    detail::check(ibex_image_dicom_info(h_.get(), &info));
    return info;
  }
  const ibex_image *get() const { return h_.get(); }
  void close() noexcept { h_.reset(); }

 private:
  explicit image(ibex_image *p) : h_(p) {}
  detail::handle<ibex_image, ibex_image_free> h_;
};

/// Cancels a running call from any thread.
class cancel_token {
 public:
  cancel_token() {
    ibex_cancel_token *p = nullptr;
    detail::check(ibex_cancel_token_create(&p));
    h_ = decltype(h_)(p);
  }
  void cancel() const { detail::check(ibex_cancel_token_cancel(h_.get())); }
  void reset() const { detail::check(ibex_cancel_token_reset(h_.get())); }
  const ibex_cancel_token *get() const { return h_.get(); }

 private:
  detail::handle<ibex_cancel_token, ibex_cancel_token_free> h_;
};

/// What to explain: a class (-1 = the predicted one) and/or captions.
struct target {
  int32_t class_index = -1;
  std::vector<std::string> texts;
  static target of_class(int32_t c) { return target{c, {}}; }
  static target of_texts(std::vector<std::string> t) { return target{-1, std::move(t)}; }
};

/// Progress: steps done, total; return false to cancel.
using progress_fn = std::function<bool(uint32_t done, uint32_t total)>;

/// One map of a result, borrowed (valid while the result lives).
struct map_view {
  std::string name;
  std::string units;
  uint32_t width = 0;
  uint32_t height = 0;
  /// The caption the map belongs to, or -1.
  int32_t text_index = -1;
  float min_value = 0;
  float max_value = 0;
  const float *data = nullptr;
  size_t size = 0;
  const float *begin() const noexcept { return data; }
  const float *end() const noexcept { return data + size; }
  float operator[](size_t i) const noexcept { return data[i]; }
  std::vector<float> to_vector() const { return std::vector<float>(begin(), end()); }
};

/// A token of a caption and its normalised score.
struct token {
  std::string text;
  float score = 0;
};

enum class dicom_kind : int32_t { parametric_map = IBEX_DICOM_PARAMETRIC_MAP, secondary_capture = IBEX_DICOM_SECONDARY_CAPTURE };

/// An explanation: maps, tokens, similarity, the report; immutable and readable from any thread.
class result {
 public:
  uint32_t map_count() const {
    uint32_t n = 0;
    detail::check(ibex_result_map_count(h_.get(), &n));
    return n;
  }
  map_view map(uint32_t index) const {
    ibex_map_info info{};
    info.struct_size = sizeof info;
    detail::check(ibex_result_map_info(h_.get(), index, &info));
    map_view m;
    m.name = info.name;
    m.units = info.units;
    m.width = info.width;
    m.height = info.height;
    m.text_index = info.text_index;
    m.min_value = info.min_value;
    m.max_value = info.max_value;
    detail::check(ibex_result_map_data(h_.get(), index, &m.data, &m.size));
    return m;
  }
  std::vector<map_view> maps() const {
    std::vector<map_view> out;
    for (uint32_t i = 0, n = map_count(); i < n; ++i) out.push_back(map(i));
    return out;
  }
  /// A copy of map `index`.
  std::vector<float> copy_map(uint32_t index) const {
    size_t n = 0;
    detail::check(ibex_result_copy_map(h_.get(), index, nullptr, 0, &n));
    std::vector<float> out(n);
    detail::check(ibex_result_copy_map(h_.get(), index, out.data(), out.size(), &n));
    return out;
  }
  uint32_t text_count() const {
    uint32_t n = 0;
    detail::check(ibex_result_text_count(h_.get(), &n));
    return n;
  }
  float similarity(uint32_t text_index) const {
    float s = 0;
    detail::check(ibex_result_similarity(h_.get(), text_index, &s));
    return s;
  }
  std::vector<token> tokens(uint32_t text_index) const {
    uint32_t n = 0;
    detail::check(ibex_result_token_count(h_.get(), text_index, &n));
    std::vector<token> out(n);
    for (uint32_t i = 0; i < n; ++i) {
      const char *text = nullptr;
      detail::check(ibex_result_token(h_.get(), text_index, i, &text, &out[i].score));
      out[i].text = text;
    }
    return out;
  }
  /// The report as JSON: method, target, top-5, texts, map names and units, settings, timing.
  std::string json() const {
    const char *s = nullptr;
    detail::check(ibex_result_json(h_.get(), &s));
    return s;
  }
  /// Where the image maps lie on the original image: x0, y0, x1, y1.
  std::array<float, 4> source_region() const {
    std::array<float, 4> r{};
    detail::check(ibex_result_source_region(h_.get(), r.data()));
    return r;
  }
  /// The map over the image as PNG bytes: over `original` at its size when given, else over
  /// the preprocessed image. `colormap` empty = turbo.
  std::vector<uint8_t> overlay_png(uint32_t map_index = 0, const std::string &colormap = "", float opacity = 0.5f,
                                   const image *original = nullptr) const {
    ibex_bytes *b = nullptr;
    detail::check(ibex_render_overlay_png_bytes(h_.get(), original ? original->get() : nullptr, map_index,
                                                colormap.empty() ? nullptr : colormap.c_str(), opacity, &b));
    return detail::take_bytes(b);
  }
  /// Writes the overlay over the preprocessed image to a PNG file.
  void save_overlay_png(const std::string &path, uint32_t map_index = 0, const std::string &colormap = "",
                        float opacity = 0.5f) const {
    detail::check(ibex_render_overlay_png(h_.get(), map_index, colormap.empty() ? nullptr : colormap.c_str(), opacity,
                                          path.c_str()));
  }
  /// A Parametric Map or Secondary Capture derived from the DICOM image this result explains.
  std::vector<uint8_t> to_dicom(const image &source, dicom_kind kind, uint32_t map_index = 0,
                                const std::string &colormap = "", float opacity = 0.5f) const {
    ibex_bytes *b = nullptr;
    detail::check(ibex_result_to_dicom(h_.get(), source.get(), map_index, static_cast<int32_t>(kind),
                                       colormap.empty() ? nullptr : colormap.c_str(), opacity, &b));
    return detail::take_bytes(b);
  }
  const ibex_result *get() const { return h_.get(); }

 private:
  friend class explainer;
  explicit result(ibex_result *p) : h_(p) {}
  detail::handle<ibex_result, ibex_result_free> h_;
};

namespace detail {

/// The progress callback's state: the function, and an exception it threw (rethrown after the
/// call instead of crossing the C boundary).
struct progress_state {
  const progress_fn *fn;
  std::exception_ptr thrown;
};

inline bool progress_trampoline(uint32_t done, uint32_t total, void *user) {
  auto *st = static_cast<progress_state *>(user);
  try {
    return (*st->fn)(done, total);
  } catch (...) {
    st->thrown = std::current_exception();
    return false;
  }
}

/// The C target, holding the caption pointers while it lives.
struct c_target {
  explicit c_target(const target &t) {
    for (const auto &s : t.texts) ptrs.push_back(s.c_str());
    raw.struct_size = sizeof raw;
    raw.class_index = t.class_index;
    raw.text = nullptr;
    raw.texts = ptrs.empty() ? nullptr : ptrs.data();
    raw.text_count = static_cast<uint32_t>(ptrs.size());
  }
  std::vector<const char *> ptrs;
  ibex_target raw{};
};

}  // namespace detail

/// A method for a model, with its options; one per thread.
class explainer {
 public:
  explainer(const model &m, const std::string &method, const options *opts = nullptr) {
    ibex_explainer *p = nullptr;
    detail::check(ibex_explainer_create(m.get(), method.c_str(), opts ? opts->get() : nullptr, &p));
    h_ = decltype(h_)(p);
  }
  /// Explains one image. `progress` may be empty; `cancel` may be null.
  result explain(const image_view &img, const target &t = {}, const progress_fn &progress = {},
                 const cancel_token *cancel = nullptr) {
    std::vector<image_view> one{img};
    auto r = explain_batch(one, t, progress, cancel);
    return std::move(r.front());
  }
  result explain(const image &img, const target &t = {}, const progress_fn &progress = {},
                 const cancel_token *cancel = nullptr) {
    return explain(img.view(), t, progress, cancel);
  }
  /// Explains several images for the same target in one call (progress over the batch).
  std::vector<result> explain_batch(const std::vector<image_view> &images, const target &t = {},
                                    const progress_fn &progress = {}, const cancel_token *cancel = nullptr) {
    std::vector<ibex_image_view> views;
    views.reserve(images.size());
    for (const auto &v : images) views.push_back(v.raw());
    detail::c_target ct(t);
    detail::progress_state st{&progress, nullptr};
    ibex_run_control control{};
    control.struct_size = sizeof control;
    control.progress = progress ? &detail::progress_trampoline : nullptr;
    control.user = &st;
    control.cancel = cancel ? cancel->get() : nullptr;
    std::vector<ibex_result *> raw(images.size(), nullptr);
    int32_t status =
        ibex_explain_batch(h_.get(), views.data(), static_cast<uint32_t>(views.size()), &ct.raw, &control, raw.data());
    if (st.thrown) std::rethrow_exception(st.thrown);
    detail::check(status);
    std::vector<result> out;
    out.reserve(raw.size());
    for (auto *p : raw) out.push_back(result(p));
    return out;
  }
  void close() noexcept { h_.reset(); }

 private:
  detail::handle<ibex_explainer, ibex_explainer_free> h_;
};

/// Sends the library's log messages up to `max_level` (`IBEX_LOG_*`) to `fn` (from any thread
/// that runs ibex code, possibly several at once); an empty function switches logging off.
/// Process-wide. Do not call set_log_callback from inside the callback: the library holds its
/// logger while calling it.
inline void set_log_callback(std::function<void(int32_t level, const std::string &message)> fn,
                             int32_t max_level = IBEX_LOG_INFO) {
  using fn_t = std::function<void(int32_t, const std::string &)>;
  // Never destroyed: library threads may still log while the process exits.
  static auto *current = new std::shared_ptr<const fn_t>();
  std::shared_ptr<const fn_t> next = fn ? std::make_shared<const fn_t>(std::move(fn)) : nullptr;
  bool on = static_cast<bool>(next);
  std::atomic_store(current, std::move(next));
  auto trampoline = [](int32_t level, const char *message, void *user) {
    auto f = std::atomic_load(static_cast<std::shared_ptr<const fn_t> *>(user));
    if (!f) return;
    try {
      (*f)(level, message);
    } catch (...) {
      // a logger must not throw across the C boundary: the message is dropped
    }
  };
  detail::check(ibex_set_log_callback(on ? +trampoline : nullptr, max_level, current));
}

}  // namespace ibex

#endif  // IBEX_HPP
