"""The reference packages of the zoo tests (torchvision, transformers), imported without downloading anything.

torch is pinned to its CPU build (constraints.txt), and the torchvision built for it here (0.28.0) ships C++ ops
compiled for CUDA that do not load: its import then fails registering fake kernels for `torchvision::nms`
(`operator torchvision::nms does not exist`). The models use none of those ops, so when that happens the two
operators are declared (schemas only, never run) and torchvision is imported again.
"""
from __future__ import annotations
import importlib.util
import sys

import pytest
import torch


def torchvision():
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("the zoo tests compare with torchvision (the test extra)")
    try:
        import torchvision as tv
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 - schemas only, see above
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _KEEP.append(lib)
        import torchvision as tv
    return tv


_KEEP: list = []  # the Library object must live as long as the process


def transformers():
    if importlib.util.find_spec("torchvision") is not None:
        torchvision()  # transformers imports torchvision where it is installed
    return pytest.importorskip("transformers", reason="the zoo tests compare with transformers (the test extra)")
