"""configs/resnet110.yaml against ResNet-110 written by hand (He et al. 2016, CIFAR-10, section 4.2).

Same parameter count (1,727,962 with the paper's option A shortcuts, 1.7M in its table 6;
1,730,714 with option B projections), same state_dict keys and shapes, same output once the
hand-written model is loaded with the spec's weights.
"""
from collections import OrderedDict

import pytest
import torch
from torch import nn

import cgtool
from conftest import CONFIGS

SPEC = CONFIGS / "resnet110.yaml"
COUNTS = {"A": 1_727_962, "B": 1_730_714}


class PadShortcut(nn.Module):
    """Option A: subsample by the stride and append zero channels; no parameters."""

    def __init__(self, stride, extra):
        super().__init__()
        self.stride, self.extra = stride, extra

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    def __init__(self, in_ch, out_ch, stride, shortcut_type):
        super().__init__()
        self.branch = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            bn1=nn.BatchNorm2d(out_ch),
            relu=nn.ReLU(),
            conv2=nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            bn2=nn.BatchNorm2d(out_ch),
        ))
        if stride == 1 and in_ch == out_ch:
            self.shortcut = nn.Identity()
        elif shortcut_type == "B":
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_ch))
        else:
            self.shortcut = PadShortcut(stride, out_ch - in_ch)

    def forward(self, x):
        return torch.relu(self.branch(x) + self.shortcut(x))


class ResNet110(nn.Module):
    def __init__(self, n=18, width=16, classes=10, shortcut_type="A"):
        super().__init__()
        self.stem = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, width, 3, padding=1, bias=False),
                                              bn=nn.BatchNorm2d(width), relu=nn.ReLU()))
        stages, in_ch = [], width
        for i in range(3):
            out_ch, stride = width * 2 ** i, 1 if i == 0 else 2
            blocks = [BasicBlock(in_ch, out_ch, stride, shortcut_type)]
            blocks += [BasicBlock(out_ch, out_ch, 1, shortcut_type) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


@pytest.mark.parametrize("shortcut_type", ["A", "B"])
def test_resnet110_matches_handwritten(shortcut_type):
    net = cgtool.build(SPEC, shortcut_type=shortcut_type)
    hand = ResNet110(shortcut_type=shortcut_type)
    count = sum(p.numel() for p in net.parameters())
    assert count == sum(p.numel() for p in hand.parameters()) == COUNTS[shortcut_type]
    assert cgtool.params(SPEC, args={"shortcut_type": shortcut_type}).total == count
    # 3 stages of 18 blocks, each a named residual branch: paths such as stages.0.5.branch
    branches = [name for name, _ in net.named_modules() if name.endswith(".branch")]
    assert len(branches) == 54 and "stages.0.5.branch" in branches and branches[-1] == "stages.2.17.branch"
    spec_state, hand_state = net.state_dict(), hand.state_dict()
    assert {k: v.shape for k, v in spec_state.items()} == {k: v.shape for k, v in hand_state.items()}
    hand.load_state_dict(spec_state)
    net.eval(), hand.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(net(x), hand(x))


def test_resnet110_forward_shape():
    result = cgtool.run(SPEC)
    assert tuple(result.outputs[0].shape) == (1, 10)
    assert cgtool.describe(SPEC).total_params == COUNTS["A"]
