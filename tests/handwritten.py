"""The lesson's models written by hand in plain PyTorch, to compare compiled specs against."""
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(784, 256)
        self.act = nn.ReLU()
        self.output = nn.Linear(256, 10)

    def forward(self, x):
        a = self.act(self.hidden(x))
        return self.output(a)


class MyModuleList(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.ModuleList([nn.Linear(784, 256), nn.ReLU()])
        self.net.append(nn.Linear(256, 10))

    def forward(self, x):
        for layer in self.net:
            x = layer(x)
        return x


class FancyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("rand_weight", torch.rand((20, 20)))
        self.linear = nn.Linear(20, 20)

    def forward(self, x):
        x = self.linear(x)
        x = nn.functional.relu(torch.mm(x, self.rand_weight) + 1)
        x = self.linear(x)
        while x.norm().item() > 1:
            x /= 2
        if x.norm().item() < 0.8:
            x *= 10
        return x.sum()


class NestMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(40, 30), nn.ReLU())

    def forward(self, x):
        return self.net(x)


def nested():
    return nn.Sequential(NestMLP(), nn.Linear(30, 20), FancyMLP())


def sequential():
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def sequential_named():
    from collections import OrderedDict

    return nn.Sequential(OrderedDict(hidden=nn.Linear(784, 256), act=nn.ReLU(), output=nn.Linear(256, 10)))


class ModuleDictNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.ModuleDict({"linear": nn.Linear(784, 256), "act": nn.ReLU()})
        self.net["output"] = nn.Linear(256, 10)

    def forward(self, x):
        return self.net["output"](self.net["act"](self.net["linear"](x)))


class TiedLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(20, 20)
        self.l2 = nn.Linear(20, 20)
        self.l2.weight = self.l1.weight

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))


class ModuleListSubclass(nn.ModuleList):
    """The ModuleList written as the container itself (state_dict keys 0.weight, 2.weight)."""

    def __init__(self):
        super().__init__([nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)])

    def forward(self, x):
        for layer in self:
            x = layer(x)
        return x


class ModuleDictSubclass(nn.ModuleDict):
    def __init__(self):
        super().__init__({"linear": nn.Linear(784, 256), "act": nn.ReLU(), "output": nn.Linear(256, 10)})

    def forward(self, x):
        return self["output"](self["act"](self["linear"](x)))


def shared_layer():
    from collections import OrderedDict

    first = nn.Linear(16, 16)
    return nn.Sequential(OrderedDict(first=first, act=nn.Tanh(), again=first))
