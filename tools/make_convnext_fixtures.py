"""Reference data for ibex's ConvNeXt loader: a small torchvision ConvNeXt (torchvision's own
CNBlock, LayerNorm2d and state-dict names; reduced widths so the file stays small), random
weights with layer scales of order 1 (torchvision initialises them at 1e-6, which would hide
the blocks), eval mode; its logits and stage outputs for a fixed input.

    pip install torch torchvision safetensors
    python tools/make_convnext_fixtures.py      # writes tests/data/convnext/*.safetensors
"""
import os

import torch
from safetensors.torch import save_file
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "convnext")

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    setting = [CNBlockConfig(16, 32, 2), CNBlockConfig(32, 48, 1), CNBlockConfig(48, 64, 2), CNBlockConfig(64, None, 1)]
    m = ConvNeXt(setting, num_classes=6)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("layer_scale"):
                p.uniform_(0.3, 1.0)
            elif "norm" in name or p.dim() == 1:
                p.uniform_(-0.3, 0.3) if name.endswith("bias") else p.uniform_(0.7, 1.3)
    m.eval()
    x = torch.randn(2, 3, 64, 64)
    outs = {"input": x}
    with torch.no_grad():
        h = x
        for i, f in enumerate(m.features):
            h = f(h)
            outs[f"features.{i}"] = h
        pooled = m.classifier[0](m.avgpool(h)).flatten(1)
        outs["pooled"] = pooled
        outs["logits"] = m.classifier[2](pooled)
        assert torch.allclose(outs["logits"], m(x), atol=1e-6)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(OUT, "model.safetensors"))
    save_file({k: v.contiguous() for k, v in outs.items()}, os.path.join(OUT, "outputs.safetensors"))
    print(sum(v.numel() for v in m.state_dict().values()), "values;", [k for k in m.state_dict()][:12])
