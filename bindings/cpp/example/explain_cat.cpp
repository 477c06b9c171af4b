// Load a model, explain an image with progress, save an overlay, read a map.
//   explain_cat MODEL_DIR IMAGE OVERLAY.png
#include <ibex.hpp>

#include <algorithm>
#include <iostream>

int main(int argc, char **argv) {
  if (argc != 4) {
    std::cerr << "usage: explain_cat MODEL_DIR IMAGE OVERLAY.png\n";
    return 2;
  }
  try {
    ibex::check_abi();
    auto model = ibex::model::load(argv[1]);
    ibex::explainer iba(model, "iba");
    auto result = iba.explain(ibex::image::load(argv[2]), ibex::target::of_class(-1), [](uint32_t done, uint32_t total) {
      std::cerr << "\rstep " << done << "/" << total;
      return true;  // false cancels
    });
    std::cerr << "\n";
    result.save_overlay_png(argv[3]);
    auto map = result.map(0);  // bits per pixel, width x height floats
    std::cout << map.name << " (" << map.units << ") " << map.width << "x" << map.height << ", max "
              << *std::max_element(map.begin(), map.end()) << "\n";
  } catch (const ibex::error &e) {
    std::cerr << "ibex: " << e.what() << " (status " << e.status() << ")\n";
    return 1;
  }
}
