"""Times one PIP-Net training step in PyTorch (the official recipe's arithmetic) on the fixture's
Fashion-MNIST configuration, the reference for `cargo run --release --example time_pipnet_train`.

The network is torchvision's ConvNeXt with the fixture's block setting and PIP-Net's stride rule
(features.4.1 and features.6.1 at stride 1; stochastic depth off, as in ibex), random weights; the
head is PIP-Net's (softmax over channels, max over positions, relu(W)). One step = forward on
two views, the official loss (align + tanh + log1p(o^2) classification, written here from the
paper's definitions), backward, AdamW on every parameter: the stage-2 step of the full run
(batch 64 images = 128 views) and the pretraining step (128 images = 256 views; no sheet).
Random inputs stand in for augmented views (augmentation runs in the data-loader workers).

    python3 tools/time_pipnet_train_torch.py [--threads 1]
"""
import argparse, statistics, time

import torch
import torch.nn.functional as F
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--reps", type=int, default=5)
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

settings = [CNBlockConfig(24, 48, 1), CNBlockConfig(48, 96, 1), CNBlockConfig(96, 192, 1), CNBlockConfig(192, None, 1)]
net = ConvNeXt(settings, stochastic_depth_prob=0.0, layer_scale=1e-6)
for name in ("features.4.1", "features.6.1"):
    net.get_submodule(name).stride = (1, 1)
body = net.features
W = torch.nn.Parameter(torch.randn(10, 192) * 0.1 + 1.0)


def loss_fn(x, y, pretrain):
    f = body(x)
    z = torch.softmax(f, dim=1)
    p = z.flatten(2).amax(-1)
    o = p @ torch.relu(W).t()
    z1, z2 = z.chunk(2)
    e1 = z1.flatten(2).permute(0, 2, 1).flatten(end_dim=1)
    e2 = z2.flatten(2).permute(0, 2, 1).flatten(end_dim=1)
    la = (-(torch.log((e1 * e2.detach()).sum(1) + 1e-12)).mean() - torch.log((e2 * e1.detach()).sum(1) + 1e-12).mean()) / 2
    p1, p2 = p.chunk(2)
    lt = -(torch.log(torch.tanh(p1.sum(0)) + 1e-8).mean() + torch.log(torch.tanh(p2.sum(0)) + 1e-8).mean()) / 2
    if pretrain:
        return la + 5 * lt
    lc = F.nll_loss(F.log_softmax(torch.log1p(o ** 2), dim=1), torch.cat([y, y]))
    return 5 * la + 2 * lt + 2 * lc


for images, pretrain in ((64, False), (128, True)):
    params = list(body.parameters()) + ([] if pretrain else [W])
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    x = torch.randn(2 * images, 3, 64, 64)
    y = torch.randint(0, 10, (images,))
    times = []
    for i in range(args.reps + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, y, pretrain)
        loss.backward()
        opt.step()
        if i > 0:
            times.append(time.perf_counter() - t)
    print(f"{'pretrain' if pretrain else 'stage 2'} step, {images} images ({2 * images} views), "
          f"{args.threads} thread(s): median {statistics.median(times) * 1e3:.0f} ms")
