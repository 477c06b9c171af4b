"""Time the official IBA (BioroboticsLab/IBA, per-sample bottleneck) on the bundled
EfficientNet-Lite0, called canonically: `IBA.analyze` with its defaults on the full model,
2 threads, feature statistics loaded from the fixture (not re-estimated). Checks that seed 0
reproduces the stored reference map, then prints seconds per heatmap, and the same with the
frozen prefix run once (the reference's "prefix-cached" engineering step).

    pip install torch torchvision scikit-image efficientnet_lite_pytorch safetensors
    python tools/time_official_iba.py --iba-src /path/to/BioroboticsLab/IBA [--photos 12]

The official code is imported from its checkout (MIT); nothing of it is in this repository.
Compare with `cargo bench --bench cnn` (efficientnet_lite0/iba_per_heatmap) in the same sitting.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIX = os.path.join(ROOT, "..", "shared", "fixtures")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iba-src", required=True, help="checkout of BioroboticsLab/IBA (commit 7b2fbd5)")
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    sys.path.insert(0, a.iba_src)
    from IBA.pytorch import IBA  # noqa: E402
    from efficientnet_lite_pytorch import EfficientNet  # noqa: E402
    from PIL import Image  # noqa: E402

    torch.set_num_threads(a.threads)
    model = EfficientNet.from_name("efficientnet-lite0")
    sd = {k: torch.from_numpy(v) for k, v in load_file(os.path.join(ROOT, "models/efficientnet-lite0/model.safetensors")).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    model.eval()

    st = load_file(os.path.join(FIX, "cnn/iba-reference/feature_stats.safetensors"))
    iba = IBA(model._blocks[10])
    est = iba.estimator
    est._init(torch.Size(st["feature_mean"].shape), torch.device("cpu"))
    est.m = torch.from_numpy(st["feature_mean"])
    est.s = torch.from_numpy(st["welford_m2"])
    est._neuron_nonzero = torch.from_numpy(st["nonzero_count"])
    est._n_samples = torch.tensor([int(st["n_samples"][0])])
    iba.reset_estimate = None  # never re-estimate
    iba._build()

    ref = json.load(open(os.path.join(FIX, "cnn/iba-reference/reference.json")))
    names = list(ref["results"].keys())[: a.photos]
    canonical, cached, checks = [], [], []
    for name in names:
        img = np.asarray(Image.open(os.path.join(FIX, f"images/photos/input224/{name}.png")).convert("RGB"), np.float32)
        x = torch.from_numpy((img - 127.0) / 128.0).permute(2, 0, 1)[None].contiguous()
        target = ref["results"][name]["target"]

        def loss(batch):
            return -torch.log_softmax(model(batch), 1)[:, target].mean()

        torch.manual_seed(0)
        t0 = time.perf_counter()
        sal = iba.analyze(x, loss)
        canonical.append(time.perf_counter() - t0)
        want = load_file(os.path.join(FIX, f"cnn/iba-reference/{name}.safetensors"))["saliency_bits_per_pixel"][0]
        rel = float(np.abs(sal - want).max() / np.abs(want).max())
        checks.append(rel)

        # prefix-cached: stem + blocks 0-9 once, analyze on the rest (the reference's speed-up)
        cached_t = time_prefix_cached(model, iba, x, target)
        cached.append(cached_t)
        print(f"{name:10} canonical {canonical[-1]:.2f} s  prefix-cached {cached_t:.2f} s  seed-0 map max rel diff {rel:.1e}", flush=True)
    print(json.dumps({
        "canonical_median_s": statistics.median(canonical),
        "prefix_cached_median_s": statistics.median(cached),
        "seed0_max_rel_diff": max(checks),
        "threads": a.threads,
        "torch": torch.__version__,
    }))


def time_prefix_cached(model, iba, x, target):
    """The official analyze, given the frozen prefix's output once and a closure for the rest
    (BN in eval mode and drop-connect off: the same maths as the full model)."""
    blocks = model._blocks

    with torch.no_grad():
        h = model._swish(model._bn0(model._conv_stem(x)))
        for i in range(10):
            h = blocks[i](h)

    def suffix(z):
        for i in range(10, len(blocks)):
            z = blocks[i](z)
        z = model._swish(model._bn1(model._conv_head(z)))
        return model._fc(model._avg_pooling(z).flatten(1))

    def loss(batch):
        return -torch.log_softmax(suffix(batch), 1)[:, target].mean()

    torch.manual_seed(0)
    t0 = time.perf_counter()
    iba.analyze(h, loss)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
