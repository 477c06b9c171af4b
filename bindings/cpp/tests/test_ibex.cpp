// Tests of the C++ binding (bindings/cpp/ibex.hpp) against the real library and models.
// Usage: test_ibex REPO_ROOT. Ends with the line "N passed, M failed"; exit status 1 on failure.
#include "ibex.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

namespace {

std::string root;
int passed = 0, failed = 0;

#define CHECK(cond)                                                                         \
  do {                                                                                      \
    if (!(cond)) throw std::runtime_error(std::string("CHECK failed: ") + #cond + " (line " + \
                                          std::to_string(__LINE__) + ")");                  \
  } while (0)

void run(const char *name, const std::function<void()> &test) {
  try {
    test();
    ++passed;
    std::cout << "ok   " << name << "\n";
  } catch (const std::exception &e) {
    ++failed;
    std::cout << "FAIL " << name << ": " << e.what() << "\n";
  }
}

/// Runs `f`, expects an ibex::error with `status`; returns its message.
template <typename F>
std::string expect_error(int32_t status, F f) {
  try {
    f();
  } catch (const ibex::error &e) {
    if (e.status() != status)
      throw std::runtime_error("expected status " + std::to_string(status) + ", got " + std::to_string(e.status()) + ": " +
                               e.what());
    return e.message();
  }
  throw std::runtime_error("expected an ibex::error with status " + std::to_string(status));
}

std::string cnn_dir() { return root + "/models/efficientnet-lite0"; }
std::string clip_dir() { return root + "/models/fmnist-clip"; }
std::string cat() { return root + "/examples/images/chelsea.png"; }
std::string items() { return root + "/examples/images/four_items.png"; }

bool same(const ibex::map_view &a, const ibex::map_view &b) {
  return a.size == b.size && a.width == b.width && std::memcmp(a.data, b.data, a.size * sizeof(float)) == 0;
}

/// A copy of `img`'s pixels in a buffer whose rows are `pad` bytes wider than the image.
std::vector<uint8_t> padded(const ibex::image_view &v, uint32_t pad) {
  const auto &r = v.raw();
  uint32_t row = r.row_stride;
  std::vector<uint8_t> out(static_cast<size_t>(row + pad) * r.height, 0xAB);
  for (uint32_t y = 0; y < r.height; ++y)
    std::memcpy(out.data() + static_cast<size_t>(y) * (row + pad), static_cast<const uint8_t *>(r.data) + static_cast<size_t>(y) * row,
                row);
  return out;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    std::cerr << "usage: test_ibex REPO_ROOT\n";
    return 2;
  }
  root = argv[1];

  run("version and ABI", [] {
    ibex::check_abi();
    CHECK(ibex_abi_version() == IBEX_ABI_VERSION);
    CHECK(ibex::version().rfind("0.", 0) == 0);
  });

  ibex::model cnn = ibex::model::load(cnn_dir());
  ibex::model clip = ibex::model::load(clip_dir(), "clip");

  run("describe the model", [&] {
    auto d = cnn.describe_json();
    CHECK(d.find("\"gradcam\"") != std::string::npos && d.find("efficientnet_lite") != std::string::npos);
  });

  run("Grad-CAM: file, strided buffer and the C ABI give the same map", [&] {
    ibex::explainer ex(cnn, "gradcam");
    auto img = ibex::image::load(cat());
    auto r = ex.explain(img);
    auto m = r.map(0);
    CHECK(m.name == "gradcam" && m.size == static_cast<size_t>(m.width) * m.height && m.size > 0);
    CHECK(std::all_of(m.begin(), m.end(), [](float v) { return v == v; }));
    CHECK(r.json().find("\"top5\"") != std::string::npos);
    auto region = r.source_region();
    CHECK(region[2] > region[0] && region[3] > region[1]);
    // The same pixels with a row stride 13 bytes wider than the row.
    auto v = img.view();
    auto buf = padded(v, 13);
    ibex::image_view strided(buf.data(), buf.size(), v.width(), v.height(), v.raw().row_stride + 13, ibex::pixel_type::u8,
                             ibex::layout::rgb);
    auto r2 = ex.explain(strided);
    CHECK(same(m, r2.map(0)));
    // Bit for bit what the C ABI gives for the same call.
    ibex_explainer *cex = nullptr;
    CHECK(ibex_explainer_create(cnn.get(), "gradcam", nullptr, &cex) == IBEX_OK);
    ibex_target t{};
    t.struct_size = sizeof t;
    t.class_index = -1;
    ibex_result *cr = nullptr;
    CHECK(ibex_explain(cex, &v.raw(), &t, nullptr, &cr) == IBEX_OK);
    const float *data = nullptr;
    size_t n = 0;
    CHECK(ibex_result_map_data(cr, 0, &data, &n) == IBEX_OK);
    CHECK(n == m.size && std::memcmp(data, m.data, n * sizeof(float)) == 0);
    auto copy = r.copy_map(0);
    CHECK(copy.size() == n && std::memcmp(copy.data(), data, n * sizeof(float)) == 0);
    ibex_result_free(cr);
    ibex_explainer_free(cex);
  });

  run("M2IB: progress, tokens, similarity, overlay", [&] {
    ibex::options o;
    o.set("steps", 3u);  // any integer type
    ibex::explainer ex(clip, "m2ib", &o);
    std::vector<std::pair<uint32_t, uint32_t>> seen;
    auto r = ex.explain(ibex::image::load(items()), ibex::target::of_texts({"a sandal", "a bag"}),
                        [&](uint32_t d, uint32_t t) {
                          seen.emplace_back(d, t);
                          return true;
                        });
    CHECK(!seen.empty() && seen.back().first == seen.back().second);
    CHECK(std::is_sorted(seen.begin(), seen.end()));
    CHECK(r.text_count() == 2);
    auto toks = r.tokens(0);
    CHECK(std::any_of(toks.begin(), toks.end(), [](const ibex::token &t) { return t.text.find("sandal") != std::string::npos; }));
    float s = r.similarity(1);
    CHECK(s >= -1.0f && s <= 1.0f);
    auto maps = r.maps();
    CHECK(std::any_of(maps.begin(), maps.end(), [](const ibex::map_view &m) { return m.name == "text"; }));
    auto png = r.overlay_png(0, "viridis", 0.6f);
    CHECK(png.size() > 8 && png[0] == 0x89 && png[1] == 'P' && png[2] == 'N' && png[3] == 'G');
  });

  run("cancel from another thread, from the callback, and an exception in the callback", [&] {
    ibex::options o;
    o.set("steps", 200);
    ibex::explainer ex(clip, "m2ib", &o);
    auto img = ibex::image::load(items());
    ibex::cancel_token token;
    std::mutex mu;
    std::condition_variable cv;
    bool started = false;
    std::thread canceller([&] {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return started; });
      token.cancel();
    });
    try {
      ex.explain(img, ibex::target::of_texts({"a sandal"}),
                 [&](uint32_t, uint32_t) {
                   {
                     std::lock_guard<std::mutex> lock(mu);
                     started = true;
                   }
                   cv.notify_one();
                   return true;
                 },
                 &token);
      canceller.join();
      throw std::runtime_error("not cancelled");
    } catch (const ibex::cancelled &e) {
      canceller.join();
      CHECK(e.status() == IBEX_ERR_CANCELLED);
    }
    token.reset();
    expect_error(IBEX_ERR_CANCELLED, [&] {
      ex.explain(img, ibex::target::of_texts({"a sandal"}), [](uint32_t d, uint32_t) { return d < 2; });
    });
    struct mine : std::runtime_error {
      mine() : std::runtime_error("from the callback") {}
    };
    bool caught = false;
    try {
      ex.explain(img, ibex::target::of_texts({"a sandal"}), [](uint32_t, uint32_t) -> bool { throw mine(); });
    } catch (const mine &) {
      caught = true;
    }
    CHECK(caught);
  });

  run("errors carry the library's status and message", [&] {
    auto msg = expect_error(IBEX_ERR_UNSUPPORTED, [&] { ibex::explainer(cnn, "no-such-method"); });
    CHECK(msg.find("no-such-method") != std::string::npos);
    ibex::options bad;
    bad.set("no_such_option", 1);
    msg = expect_error(IBEX_ERR_INVALID_ARGUMENT, [&] { ibex::explainer(cnn, "iba", &bad); });
    CHECK(msg.find("no_such_option") != std::string::npos);
    try {
      ibex::model::load(root + "/no/such/model");
      throw std::runtime_error("loaded a missing model");
    } catch (const ibex::error &e) {
      CHECK(e.status() == IBEX_ERR_NOT_FOUND || e.status() == IBEX_ERR_IO);
    }
    expect_error(IBEX_ERR_IO, [&] { ibex::image::load(root + "/no/such/image.png"); });
    ibex::explainer ex(cnn, "gradcam");
    std::vector<uint8_t> tiny(8 * 8 * 3, 0);
    expect_error(IBEX_ERR_INVALID_ARGUMENT,
                 [&] { ex.explain(ibex::image_view::packed(tiny, 8, 8, ibex::pixel_type::u8, ibex::layout::rgb)); });
    // A buffer shorter than its description.
    std::vector<uint8_t> shortbuf(100, 0);
    msg = expect_error(IBEX_ERR_INVALID_ARGUMENT, [&] {
      ex.explain(ibex::image_view(shortbuf.data(), shortbuf.size(), 64, 64, 192, ibex::pixel_type::u8, ibex::layout::rgb));
    });
    CHECK(msg.find("100") != std::string::npos);
    expect_error(IBEX_ERR_INVALID_ARGUMENT, [&] { ex.explain(ibex::image::load(cat()), ibex::target::of_class(5000)); });
    // A moved-from (or closed) handle is an error, not a NULL passed on.
    ibex::explainer moved = std::move(ex);
    msg = expect_error(IBEX_ERR_NULL_POINTER, [&] { ex.explain(ibex::image::load(cat())); });
    CHECK(msg.find("closed") != std::string::npos);
    moved.close();
    expect_error(IBEX_ERR_NULL_POINTER, [&] { moved.explain(ibex::image::load(cat())); });
  });

  run("a batch equals single calls", [&] {
    ibex::explainer ex(cnn, "gradcam");
    auto a = ibex::image::load(cat());
    auto b = ibex::image::load(items());
    auto batch = ex.explain_batch({a.view(), b.view()}, ibex::target::of_class(281));
    CHECK(batch.size() == 2);
    CHECK(same(batch[0].map(0), ex.explain(a, ibex::target::of_class(281)).map(0)));
    CHECK(same(batch[1].map(0), ex.explain(b, ibex::target::of_class(281)).map(0)));
  });

  run("4 threads share one model, each with its own explainer", [&] {
    auto img = ibex::image::load(cat());
    auto want = ibex::explainer(cnn, "gradcam").explain(img).map(0).to_vector();
    std::vector<std::vector<float>> got(4);
    std::vector<std::string> errors(4);
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i)
      threads.emplace_back([&, i] {
        try {
          ibex::explainer ex(cnn, "gradcam");
          got[static_cast<size_t>(i)] = ex.explain(img).map(0).to_vector();
        } catch (const std::exception &e) {
          errors[static_cast<size_t>(i)] = e.what();
        }
      });
    for (auto &t : threads) t.join();
    for (int i = 0; i < 4; ++i) {
      CHECK(errors[static_cast<size_t>(i)].empty());
      CHECK(got[static_cast<size_t>(i)] == want);
    }
  });

  run("DICOM in, Parametric Map out", [&] {
    ibex::dicom_options o;
    o.use_window = true;
    o.window_center = 40;
    o.window_width = 400;
    auto img = ibex::image::load_dicom(root + "/../shared/fixtures/images/dicom/CT_small.dcm", o);
    auto info = img.dicom_info();
    CHECK(info.rows == 128 && info.columns == 128 && std::string(info.modality) == "CT");
    ibex::explainer ex(cnn, "gradcam");
    auto r = ex.explain(img);
    auto pm = r.to_dicom(img, ibex::dicom_kind::parametric_map);
    CHECK(pm.size() > 128 * 128 * 4 && std::memcmp(pm.data() + 128, "DICM", 4) == 0);
    auto png = r.overlay_png(0, "", 0.5f, &img);
    CHECK(png.size() > 8);
  });

  run("log callback", [&] {
    std::mutex mu;
    std::vector<std::string> messages;
    ibex::set_log_callback(
        [&](int32_t, const std::string &m) {
          std::lock_guard<std::mutex> lock(mu);
          messages.push_back(m);
        },
        IBEX_LOG_DEBUG);
    { auto again = ibex::model::load(clip_dir()); }
    // A failed call logs its status at debug level.
    expect_error(IBEX_ERR_UNSUPPORTED, [&] { ibex::explainer(cnn, "no-such-method"); });
    ibex::set_log_callback({});
    std::lock_guard<std::mutex> lock(mu);
    CHECK(std::any_of(messages.begin(), messages.end(), [](const std::string &m) { return m.find("loaded CLIP") != std::string::npos; }));
    CHECK(std::any_of(messages.begin(), messages.end(), [](const std::string &m) { return m.find("no-such-method") != std::string::npos; }));
    // Switched off: nothing more arrives.
    auto n = messages.size();
    { auto again = ibex::model::load(clip_dir()); }
    CHECK(messages.size() == n);
  });

  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 ? 0 : 1;
}
