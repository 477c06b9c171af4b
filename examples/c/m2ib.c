/*
 * M2IB through the ibex C ABI: load a CLIP model, explain an image against a caption, print
 * the token scores, write an overlay PNG, then show how errors and cancellation are reported.
 *
 *   cc examples/c/m2ib.c -Iinclude -Ltarget/debug -libex -o m2ib            (shared)
 *   cc examples/c/m2ib.c -Iinclude target/debug/libibex.a -lpthread -ldl -lm -lstdc++ -o m2ib_static
 *   ./m2ib [MODEL_DIR] [IMAGE] [CAPTION] [OVERLAY.png]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ibex.h"

#define CHECK(call)                                                                  \
    do {                                                                             \
        int32_t st_ = (call);                                                        \
        if (st_ != IBEX_OK) {                                                        \
            fprintf(stderr, "%s failed: %s (%s)\n", #call, ibex_status_string(st_),  \
                    ibex_last_error_message());                                      \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

/* Expect `call` to fail with `want`; print the message the library gives. */
static int expect(const char *what, int32_t got, int32_t want) {
    const char *msg = ibex_last_error_message();
    printf("  %-34s -> %-18s %s\n", what, ibex_status_string(got), msg);
    if (got != want || msg == NULL || msg[0] == '\0') {
        fprintf(stderr, "unexpected status for %s: %d (wanted %d)\n", what, got, want);
        return 1;
    }
    return 0;
}

static bool on_progress(uint32_t done, uint32_t total, void *user) {
    uint32_t *calls = (uint32_t *)user;
    (*calls)++;
    if (done == total) fprintf(stderr, "  progress: %u/%u steps\n", done, total);
    return true;
}

static bool cancel_after_three(uint32_t done, uint32_t total, void *user) {
    (void)total;
    (void)user;
    return done < 3;
}

int main(int argc, char **argv) {
    const char *model_dir = argc > 1 ? argv[1] : "models/fmnist-clip";
    const char *image_path = argc > 2 ? argv[2] : "examples/images/four_items.png";
    const char *caption = argc > 3 ? argv[3] : "a sandal";
    const char *overlay = argc > 4 ? argv[4] : "m2ib_overlay.png";
    int failures = 0;

    if (ibex_abi_version() != IBEX_ABI_VERSION) {
        fprintf(stderr, "ABI mismatch: header %d, library %u\n", IBEX_ABI_VERSION, ibex_abi_version());
        return 1;
    }
    printf("ibex %s (ABI %u)\n", ibex_version_string(), ibex_abi_version());

    ibex_model *model = NULL;
    CHECK(ibex_model_load("clip", model_dir, NULL, &model));

    ibex_options *opts = NULL;
    CHECK(ibex_options_create(&opts));
    CHECK(ibex_options_set_int(opts, "seed", 0));
    ibex_explainer *explainer = NULL;
    CHECK(ibex_explainer_create(model, "m2ib", opts, &explainer));
    ibex_options_free(opts);

    ibex_image *image = NULL;
    CHECK(ibex_image_load_file(image_path, &image));
    ibex_image_view view = {.struct_size = sizeof(ibex_image_view)};
    CHECK(ibex_image_get_view(image, &view));

    ibex_target target = {.struct_size = sizeof(ibex_target), .class_index = -1, .text = caption};
    uint32_t calls = 0;
    ibex_run_control rc = {.struct_size = sizeof(ibex_run_control), .progress = on_progress, .user = &calls};
    ibex_result *result = NULL;
    CHECK(ibex_explain(explainer, &view, &target, &rc, &result));

    float sim = 0;
    uint32_t ntok = 0, nmaps = 0;
    CHECK(ibex_result_similarity(result, 0, &sim));
    float region[4];
    CHECK(ibex_result_source_region(result, region));
    printf("maps cover [%.1f, %.1f) x [%.1f, %.1f) of the original image\n", region[0], region[2], region[1], region[3]);
    CHECK(ibex_result_token_count(result, 0, &ntok));
    printf("caption \"%s\": image-text cosine %.4f, %u progress calls\n", caption, sim, calls);
    for (uint32_t i = 0; i < ntok; i++) {
        const char *tok = NULL;
        float score = 0;
        CHECK(ibex_result_token(result, 0, i, &tok, &score));
        printf("  %18s  %.3f\n", tok, score);
    }
    CHECK(ibex_result_map_count(result, &nmaps));
    for (uint32_t m = 0; m < nmaps; m++) {
        ibex_map_info info = {.struct_size = sizeof(ibex_map_info)};
        CHECK(ibex_result_map_info(result, m, &info));
        size_t need = 0;
        CHECK(ibex_result_copy_map(result, m, NULL, 0, &need));
        float *copy = malloc(need * sizeof(float));
        CHECK(ibex_result_copy_map(result, m, copy, need, &need));
        const float *borrowed = NULL;
        size_t len = 0;
        CHECK(ibex_result_map_data(result, m, &borrowed, &len));
        if (len != need || memcmp(copy, borrowed, len * sizeof(float)) != 0 || len != (size_t)info.width * info.height) {
            fprintf(stderr, "map %u: copy and borrowed data differ\n", m);
            failures++;
        }
        printf("  map %u: %-15s %3ux%-3u %-10s [%.3f, %.3f]\n", m, info.name, info.width, info.height, info.units,
               info.min_value, info.max_value);
        free(copy);
    }
    CHECK(ibex_render_overlay_png(result, 0, "turbo", 0.5f, overlay));
    printf("overlay written to %s\n", overlay);
    ibex_result_free(result);

    printf("error handling:\n");
    ibex_model *bad = NULL;
    failures += expect("NULL path", ibex_model_load("clip", NULL, NULL, &bad), IBEX_ERR_NULL_POINTER);
    failures += expect("missing model directory", ibex_model_load("clip", "/nonexistent/model", NULL, &bad), IBEX_ERR_NOT_FOUND);
    failures += expect("missing image", ibex_image_load_file("/nonexistent.png", &image), IBEX_ERR_IO);

    uint8_t small[10] = {0};
    ibex_image_view short_view = {.struct_size = sizeof(ibex_image_view), .width = 64, .height = 64,
                                  .row_stride = 64 * 3, .pixel_type = IBEX_PIXEL_U8, .layout = IBEX_LAYOUT_RGB,
                                  .data = small, .data_len = sizeof small};
    failures += expect("buffer smaller than the image", ibex_explain(explainer, &short_view, &target, NULL, &result),
                       IBEX_ERR_INVALID_ARGUMENT);

    float *nan_px = calloc(64 * 64 * 3, sizeof(float));
    nan_px[100] = NAN;
    ibex_image_view nan_view = {.struct_size = sizeof(ibex_image_view), .width = 64, .height = 64,
                                .row_stride = 64 * 3 * sizeof(float), .pixel_type = IBEX_PIXEL_F32,
                                .layout = IBEX_LAYOUT_RGB, .data = nan_px, .data_len = 64 * 64 * 3 * sizeof(float)};
    failures += expect("NaN pixel", ibex_explain(explainer, &nan_view, &target, NULL, &result), IBEX_ERR_INVALID_ARGUMENT);
    free(nan_px);

    ibex_target empty = {.struct_size = sizeof(ibex_target), .class_index = -1, .text = "   "};
    failures += expect("empty caption", ibex_explain(explainer, &view, &empty, NULL, &result), IBEX_ERR_INVALID_ARGUMENT);

    char long_caption[2048] = "";
    for (int i = 0; i < 40; i++) strcat(long_caption, "a coat and ");
    ibex_target too_long = {.struct_size = sizeof(ibex_target), .class_index = -1, .text = long_caption};
    failures += expect("caption over 77 tokens", ibex_explain(explainer, &view, &too_long, NULL, &result),
                       IBEX_ERR_INVALID_ARGUMENT);

    ibex_run_control stop = {.struct_size = sizeof(ibex_run_control), .progress = cancel_after_three};
    failures += expect("cancelled by the progress callback", ibex_explain(explainer, &view, &target, &stop, &result),
                       IBEX_ERR_CANCELLED);
    ibex_cancel_token *token = NULL;
    CHECK(ibex_cancel_token_create(&token));
    CHECK(ibex_cancel_token_cancel(token));
    ibex_run_control cancelled = {.struct_size = sizeof(ibex_run_control), .cancel = token};
    failures += expect("cancel token set", ibex_explain(explainer, &view, &target, &cancelled, &result), IBEX_ERR_CANCELLED);
    ibex_cancel_token_free(token);

    ibex_explainer_free(explainer);
    ibex_image_free(image);
    ibex_model_free(model);
    /* every _free accepts NULL */
    ibex_result_free(NULL);
    ibex_model_free(NULL);

    if (failures) {
        fprintf(stderr, "%d unexpected results\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
