"""Reference data for ibex's ResNet loader: small ResNets built from torchvision's own blocks
(BasicBlock and Bottleneck, torchvision state-dict names, reduced widths so the files stay
small), random weights and batch-norm statistics, eval mode; their logits and stage outputs
for a fixed input.

    pip install torch torchvision safetensors
    python tools/make_resnet_fixtures.py        # writes tests/data/resnet/*.safetensors
"""
import os

import torch
import torch.nn as nn
from safetensors.torch import save_file
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "resnet")


class SmallResNet(nn.Module):
    """torchvision's ResNet layout (conv1/bn1/relu/maxpool, layer1-4, avgpool, fc) with
    chosen stage widths."""

    def __init__(self, block, layers, widths, num_classes):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0], 1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        outs = {}
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs["stem"] = x
        for name in ["layer1", "layer2", "layer3", "layer4"]:
            x = getattr(self, name)(x)
            outs[name] = x
        x = torch.flatten(self.avgpool(x), 1)
        outs["pooled"] = x
        outs["logits"] = self.fc(x)
        return outs


def make(name, block, layers, widths, classes, seed, size):
    torch.manual_seed(seed)
    m = SmallResNet(block, layers, widths, classes)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    m.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        outs = m(x)
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    # a checkpoint as a training script saves it: nested, with DataParallel's prefix
    torch.save({"epoch": 3, "model_state_dict": {"module." + k: v for k, v in sd.items()}},
               os.path.join(OUT, f"{name}.pth"))
    save_file({"input": x, **{k: v.contiguous() for k, v in outs.items()}}, os.path.join(OUT, f"{name}_outputs.safetensors"))
    print(name, sum(v.numel() for v in sd.values()), "values")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    make("basic", BasicBlock, [2, 1, 2, 1], [8, 16, 24, 32], 7, 0, 64)
    make("bottleneck", Bottleneck, [1, 2, 1, 1], [8, 12, 16, 24], 5, 1, 72)
