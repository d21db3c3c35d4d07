"""The published PyTorch architectures (DeepMind's `adversarial_robustness/pytorch/model_zoo.py`), written
from their description: module names, explicit "SAME" padding, the WRN's 1x1 shortcut on the activated
input, the PreAct-ResNet's 3x3 shortcut on the raw input, normalisation constants kept outside the state
dict, fixed-size average pooling.

Used by `tests/test_import.py` (tfrobust must compute the same function) and by
`benchmarks/aa_reference.py` (the PyTorch side of the AutoAttack comparison). Needs torch.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
CIFAR100 = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


def _same_pad(x, stride):
    """TF "SAME" for a 3x3 kernel on even sizes: stride 1 pads 1 all round, stride 2 only bottom/right."""
    return F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))


def _act(name):
    return (lambda x: x * torch.sigmoid(x)) if name == "swish" else F.relu


class WRNBlock(nn.Module):
    def __init__(self, cin, cout, stride, act):
        super().__init__()
        self.stride, self.act = stride, act
        self.batchnorm_0 = nn.BatchNorm2d(cin)
        self.conv_0 = nn.Conv2d(cin, cout, 3, stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(cout)
        self.conv_1 = nn.Conv2d(cout, cout, 3, 1, padding=1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, padding=0, bias=False) if cin != cout else None

    def forward(self, x):
        a = self.act(self.batchnorm_0(x))
        out = self.conv_1(self.act(self.batchnorm_1(self.conv_0(_same_pad(a, self.stride)))))
        return (x if self.shortcut is None else self.shortcut(a)) + out


class WRNGroup(nn.Module):
    def __init__(self, n, cin, cout, stride, act):
        super().__init__()
        self.block = nn.Sequential(
            *[WRNBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, act) for i in range(n)]
        )

    def forward(self, x):
        return self.block(x)


class RefWideResNet(nn.Module):
    def __init__(self, depth, width, num_classes, mean, std, activation="swish"):
        super().__init__()
        n, widths = (depth - 4) // 6, (16, 16 * width, 32 * width, 64 * width)
        self.act = _act(activation)
        self.mean = torch.tensor(mean).view(3, 1, 1)  # plain attributes: not in the state dict
        self.std = torch.tensor(std).view(3, 1, 1)
        self.init_conv = nn.Conv2d(3, 16, 3, 1, padding=1, bias=False)
        self.layer = nn.Sequential(*[WRNGroup(n, widths[g], widths[g + 1], (1, 2, 2)[g], self.act) for g in range(3)])
        self.batchnorm = nn.BatchNorm2d(widths[3])
        self.logits = nn.Linear(widths[3], num_classes)
        self.channels = widths[3]

    def forward(self, x):
        out = self.layer(self.init_conv((x - self.mean) / self.std))
        out = F.avg_pool2d(self.act(self.batchnorm(out)), 8)
        return self.logits(out.view(-1, self.channels))


class PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride, act):
        super().__init__()
        self.stride, self.act = stride, act
        self.batchnorm_0 = nn.BatchNorm2d(cin)
        self.conv_2d_1 = nn.Conv2d(cin, cout, 3, stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(cout)
        self.conv_2d_2 = nn.Conv2d(cout, cout, 3, 1, padding=1, bias=False)
        self.has_shortcut = stride != 1 or cin != cout
        if self.has_shortcut:
            self.shortcut = nn.Conv2d(cin, cout, 3, stride, padding=0, bias=False)

    def forward(self, x):
        out = self.act(self.batchnorm_0(x))
        shortcut = self.shortcut(_same_pad(x, self.stride)) if self.has_shortcut else x
        out = self.conv_2d_2(self.act(self.batchnorm_1(self.conv_2d_1(_same_pad(out, self.stride)))))
        return out + shortcut


class RefPreActResNet18(nn.Module):
    def __init__(self, num_classes, mean, std, activation="swish"):
        super().__init__()
        self.act = _act(activation)
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.conv_2d = nn.Conv2d(3, 64, 3, 1, padding=1, bias=False)
        widths = (64, 64, 128, 256, 512)
        for s in range(4):
            blocks = [
                PreActBlock(
                    widths[s] if i == 0 else widths[s + 1], widths[s + 1], (1, 2, 2, 2)[s] if i == 0 else 1, self.act
                )
                for i in range(2)
            ]
            setattr(self, f"layer_{s}", nn.Sequential(*blocks))
        self.batchnorm = nn.BatchNorm2d(512)
        self.logits = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.conv_2d((x - self.mean) / self.std)
        for s in range(4):
            out = getattr(self, f"layer_{s}")(out)
        out = F.avg_pool2d(self.act(self.batchnorm(out)), 4)
        return self.logits(out.view(out.size(0), -1))
