"""Times PIP-Net inference in PyTorch on the fixture's trained Fashion-MNIST model (64x64, batch 1
and 64), the reference for ibex's `cargo bench --bench cnn -- pipnet`.

The model is rebuilt from torchvision's ConvNeXt with the fixture's block setting and PIP-Net's
stride rule (features.4.1 and features.6.1 at stride 1), the weights read from
`net_trained.safetensors`; the head is PIP-Net's (softmax over channels, max over positions, the
inference clamp, relu(W)). Its scores are checked against `expected_public.safetensors` first.

    python3 tools/time_pipnet_torch.py [--threads 1]
"""
import argparse, pathlib, statistics, time

import torch
from safetensors.torch import load_file
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

root = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "pipnet" / "fmnist"
ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=1)
args = ap.parse_args()
torch.set_num_threads(args.threads)

settings = [CNBlockConfig(24, 48, 1), CNBlockConfig(48, 96, 1), CNBlockConfig(96, 192, 1), CNBlockConfig(192, None, 1)]
net = ConvNeXt(settings, stochastic_depth_prob=0.0, layer_scale=1e-6)
for name in ("features.4.1", "features.6.1"):  # PIP-Net's stride rule at threshold 30
    conv = net.get_submodule(name)
    conv.stride = (1, 1)
w = load_file(str(root / "net_trained.safetensors"))
feats = {k[len("_net."):]: v for k, v in w.items() if k.startswith("_net.")}
missing = net.load_state_dict(feats, strict=False)
assert not missing.unexpected_keys, missing.unexpected_keys
W = w["_classification.weight"]
body = net.features.eval()


@torch.no_grad()
def pipnet(x):
    z = torch.softmax(body(x), dim=1)
    p = z.flatten(2).amax(-1)
    p = torch.where(p < 0.1, torch.zeros_like(p), p)
    return p @ torch.relu(W).T


exp = load_file(str(root / "expected_public.safetensors"))
err = (pipnet(exp["input"]) - exp["o_clamped"]).abs().max().item()
assert err < 1e-4, err
for batch in (1, 64):
    x = torch.randn(batch, 3, 64, 64)
    for _ in range(5):
        pipnet(x)
    times = []
    for _ in range(30):
        t = time.perf_counter()
        pipnet(x)
        times.append((time.perf_counter() - t) * 1e3)
    print(f"batch {batch}: median {statistics.median(times):.2f} ms ({args.threads} thread(s); scores match the fixture within {err:.1e})")
