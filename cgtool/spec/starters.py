"""Commented starter specs, one per kind: ``cgtool new KIND NAME``. Plain data; never prints.

Each is the lesson's MLP (784 → 256 → 10, ReLU) written the way that kind writes it, with
comments that say what each part is, so a user edits a spec that builds rather than a blank file.
"""
from __future__ import annotations

import re

STARTERS = {
    "sequential": '''\
# {name}: a chain of layers, run in order (an nn.Sequential).
# Build it:   cgtool build {file}
# Run it:     cgtool run {file}
name: {name}
kind: sequential
args:                      # values the spec reads; change them with --arg hidden=512
  hidden: 256
inputs:
  x: [B: 2, 784]           # one input; B names the batch dimension (size 2 here)
layers:                    # a list (indexed 0, 1, 2), or a mapping for named layers
  - Linear(784, hidden)    # any torch.nn class, written as its constructor call
  - ReLU()
  - Linear(hidden, 10)
''',
    "modulelist": '''\
# {name}: layers in a list (an nn.ModuleList) and a forward that runs them.
# Build it:   cgtool build {file}
# Paths:      cgtool paths {file} --wrt 0.weight
name: {name}
kind: modulelist
args:
  hidden: 256
inputs:
  x: [B: 2, 784]
layers:
  - Linear(784, hidden)
  - Linear(hidden, 10)
forward: |
  # `layers` is the list; the last layer gets no activation
  for i, layer in enumerate(layers):
      x = layer(x)
      if i < len(layers) - 1:
          x = relu(x)
  return x
''',
    "moduledict": '''\
# {name}: layers by name (an nn.ModuleDict) and a forward that picks them.
# Build it:   cgtool build {file}
name: {name}
kind: moduledict
args:
  hidden: 256
inputs:
  x: [B: 2, 784]
modules:
  hidden: Linear(784, hidden)
  act: ReLU()
  output: Linear(hidden, 10)
forward: |
  # each entry is called by its name (modules['hidden'] works too)
  return output(act(hidden(x)))
''',
    "module": '''\
# {name}: a module with its own forward (an nn.Module subclass: __init__ + forward).
# Build it:   cgtool build {file}
# Its graph:  cgtool graph {file} -o {stem}.html
name: {name}
kind: module
args:
  hidden: 256
inputs:
  x: [B: 2, 784]
modules:                   # submodules, by name
  hidden: Linear(784, hidden)
  output: Linear(hidden, 10)
constants:                 # tensors that are not trained (buffers)
  scale: {{init: full, shape: [hidden], value: 0.5}}
parameters:                # trained tensors of this module itself
  bias: {{init: zeros, shape: [10]}}
forward: |
  # plain Python over tensors: functions such as relu, the modules, constants and parameters by name;
  # `self.hidden(x)`, `F.relu(x)` and `torch.relu(x)` are accepted too
  h = relu(hidden(x)) * scale
  return output(h) + bias
''',
}


def class_name(stem: str) -> str:
    """`my_mlp` → `MyMlp`: the spec's name (a Python identifier) from a file name."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", stem) if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    return name if name[0].isalpha() else f"Model{name}"


def starter(kind: str, name: str, file: str, stem: str) -> str:
    return STARTERS[kind].format(name=name, file=file, stem=stem)
