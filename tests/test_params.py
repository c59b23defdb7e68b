"""The parameter table: every count against torch's own, tied weights once, buffers apart, meta."""
from __future__ import annotations

import resource
from pathlib import Path

import pytest
import torch
from torch import nn

from cgtool.build.model import build_model
from cgtool.errors import CgError
from cgtool.inspect.params import param_table

CONFIGS = sorted(Path(__file__).resolve().parent.parent.joinpath("configs").glob("*.yaml"))


def torch_count(model: nn.Module) -> int:
    return sum(p.numel() for p in set(model.parameters()))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_counts_like_torch(path, meta_built):
    model = meta_built(path).module
    table = param_table(model)
    assert table.total == torch_count(model)
    assert table.trainable == sum(p.numel() for p in set(model.parameters()) if p.requires_grad)
    assert table.non_trainable == table.total - table.trainable
    assert sum(r.numel for r in table.parameters) == table.total
    assert table.bytes == sum(p.numel() * p.element_size() for p in set(model.parameters()))
    # every qualified name appears exactly once: as a row's name or in its shared_with
    names = [n for r in table.parameters for n in (r.name, *r.shared_with)]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters(remove_duplicate=False))
    assert sorted(b.name for b in table.buffers) == sorted(
        n for n, _ in model.named_buffers(remove_duplicate=False))
    assert all(r.device == "meta" for r in table.parameters)


def test_tied_linear_is_440_not_840():
    table = param_table(build_model("configs/tied_linear.yaml", check=False).module)
    assert table.total == 440  # torchinfo 1.8.0 says 840
    assert table.naive_total == 840
    rows = {r.name: r for r in table.parameters}
    assert rows["l1.weight"].shared_with == ("l2.weight",)
    assert "l2.weight" not in rows
    assert rows["l1.bias"].shared_with == () and rows["l2.bias"].shared_with == ()


def test_gpt2_tied_head_counted_once(meta_built):
    model = meta_built(CONFIGS[0].parent / "gpt2_small.yaml").module
    table = param_table(model)
    assert table.total == 124_439_808  # GPT-2 small, tied lm_head
    (wte,) = [r for r in table.parameters if r.name == "wte.weight"]
    assert wte.shared_with == ("lm_head.weight",)


def test_module_referenced_twice():
    table = param_table(build_model("configs/shared_layer.yaml", check=False).module)
    assert table.total == 16 * 16 + 16
    assert {r.name: r.shared_with for r in table.parameters} == {
        "first.weight": ("again.weight",), "first.bias": ("again.bias",)}


def test_buffers_are_not_parameters():
    table = param_table(build_model("configs/fancy_mlp.yaml", check=False).module)
    assert table.total == 420
    assert [(b.name, b.shape, b.numel, b.dtype) for b in table.buffers] == [("rand_weight", (20, 20), 400, "float32")]
    assert table.buffer_bytes == 1600


def test_hand_written_tied_and_frozen():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight
            self.scale = nn.Parameter(torch.ones(()))
            self.register_buffer("steps", torch.zeros((), dtype=torch.long), persistent=False)

    m = M()
    m.a.bias.requires_grad_(False)
    table = param_table(m)
    assert table.total == torch_count(m) == 16 + 4 + 4 + 1
    assert table.non_trainable == 4 and table.trainable == 21
    scale = next(r for r in table.parameters if r.name == "scale")
    assert scale.shape == () and scale.numel == 1 and scale.module_type == "M"
    (steps,) = table.buffers
    assert steps.persistent is False and steps.dtype == "int64"


def test_dtype_and_bytes_follow_the_model():
    model = build_model("configs/mlp.yaml", dtype="float64", device="meta", check=False).module
    table = param_table(model)
    assert {r.dtype for r in table.parameters} == {"float64"}
    assert table.bytes == 203_530 * 8


def test_lazy_module_is_a_clear_error():
    with pytest.raises(CgError, match="not initialized"):
        param_table(nn.Sequential(nn.LazyLinear(3)))


def test_llama7b_on_meta_allocates_nothing():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = build_model("configs/llama7b.yaml", device="meta", check=False).module
    table = param_table(model)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert table.total == torch_count(model) == 6_738_415_616
    assert table.bytes == 6_738_415_616 * 4
    assert grown_mib < 500, f"peak RSS grew by {grown_mib:.0f} MiB"
