"""The per-layer summary: counts against torch's own (parameters, flop counter) on every config,
FLOPs where they ran, calls, depth folding, meta, and a model left exactly as it was."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cgtool.build.model import build_model
from cgtool.errors import CgError
from cgtool.build.inputs import make_inputs
from cgtool.inspect.summary import EXTRA_FLOP_FORMULAS, summarize

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted(ROOT.joinpath("configs").glob("*.yaml"))
DATA_DEPENDENT = {"fancy_mlp", "nest_mlp"}  # `while norm(x) > 1`: needs values, not meta
BIG = {"llama7b", "llama_block", "gpt2_small", "transformer_encoder"}


def torch_flops(fn, *, extra=True) -> int:
    with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS if extra else None) as c, torch.no_grad():
        fn()
    return c.get_total_flops()


def snapshot(model: nn.Module):
    return (
        {k: (v.device, v.dtype, v.clone() if not v.is_meta else None) for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
    )


def same(a, b) -> bool:
    (sa, ta, ha), (sb, tb, hb) = a, b
    if ta != tb or ha != hb or sa.keys() != sb.keys():
        return False
    for k in sa:
        (da, dta, va), (db, dtb, vb) = sa[k], sb[k]
        if da != db or dta != dtb or (va is not None and not torch.equal(va, vb)):
            return False
    return True


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_against_torch(path, meta_built):
    device = "cpu" if path.stem in DATA_DEPENDENT else "meta"
    built = build_model(str(path), device=device, check=False) if device == "cpu" else meta_built(path)
    inputs = make_inputs(built)
    before = snapshot(built.module)
    s = summarize(built.module, inputs, call=built.forward)
    assert same(before, snapshot(built.module))

    assert s.total_params == sum(p.numel() for p in set(built.module.parameters()))
    assert sum(r.params for r in s.layers) == s.total_params
    # on meta, attention decomposes into bmm and torch's counter sees everything without help
    assert s.total_flops == torch_flops(lambda: built.forward(inputs), extra=device != "meta")
    assert sum(r.flops for r in s.layers) + s.outside_flops == s.total_flops
    assert s.outside_flops == 0
    assert s.layers[0].name == "" and s.layers[0].depth == 0 and s.layers[0].calls == 1
    assert s.output_shapes == s.layers[0].output_shapes


@pytest.mark.parametrize("name", ["gpt2_block", "transformer_encoder", "resnet_block", "mlp"])
def test_cpu_and_meta_agree(name):
    """Attention on the CPU runs a fused kernel that torch 2.13's counter does not know;
    with cgtool's formula the CPU count equals the meta count (where attention is plain bmm)."""
    args = {"layers": 2} if name == "transformer_encoder" else None
    counts = {}
    for device in ("cpu", "meta"):
        built = build_model(f"configs/{name}.yaml", device=device, args=args, check=False)
        built.module.eval()
        counts[device] = summarize(built.module, make_inputs(built), call=built.forward).total_flops
    assert counts["cpu"] == counts["meta"] > 0


def test_fancy_mlp_flops_where_they_ran():
    built = build_model("configs/fancy_mlp.yaml", check=False)
    s = summarize(built.module, make_inputs(built), call=built.forward)
    root, linear = s.layers
    assert (root.name, root.type, linear.name, linear.type) == ("", "FancyMLP", "linear", "Linear")
    assert root.flops == 2 * 2 * 20 * 20  # the mm in the forward body, attributed to the model itself
    assert linear.calls == 2 and linear.flops == 2 * (2 * 2 * 20 * 20)
    assert root.flops_total == s.total_flops == 3 * 1600
    assert root.output_shapes == [[]]  # a scalar
    assert linear.input_shapes == [[2, 20]] and linear.output_shapes == [[2, 20]]
    assert linear.params == 420 and root.params == 0
    assert s.flops_by_op == {"aten.mm": 1600, "aten.addmm": 3200}


def test_tied_weights_counted_at_first_row():
    built = build_model("configs/tied_linear.yaml", check=False)
    s = summarize(built.module, make_inputs(built), call=built.forward)
    rows = {r.name: r for r in s.layers}
    assert s.total_params == 440
    assert (rows["l1"].params, rows["l1"].shared_params) == (420, 0)
    assert (rows["l2"].params, rows["l2"].shared_params) == (20, 400)


def test_module_called_three_times():
    class Thrice(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(8, 8)

        def forward(self, x):
            return self.f(self.f(self.f(x)))

    s = summarize(Thrice(), torch.randn(4, 8))
    f = s.layers[1]
    assert f.calls == 3 and f.flops == 3 * 2 * 4 * 8 * 8 and not f.shapes_vary


def test_shapes_vary_between_calls():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.act(x)[:1])

    s = summarize(Twice(), torch.randn(4, 8))
    assert s.layers[1].shapes_vary and s.layers[1].input_shapes == [[4, 8]]


def test_multidimensional_linear_and_kwargs():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(16, 32)

        def forward(self, x, *, scale):
            return self.proj(x) * scale

    s = summarize(M(), {"x": torch.randn(2, 5, 16), "scale": torch.tensor(2.0)})
    assert s.total_flops == 2 * (2 * 5) * 16 * 32
    assert s.layers[0].input_shapes == [[2, 5, 16], []]


def test_depth_folds_into_ancestors():
    built = build_model("configs/nest_mlp.yaml", check=False)
    inputs = make_inputs(built)
    full = summarize(built.module, inputs, call=built.forward)
    for depth in (0, 1, 2):
        s = summarize(built.module, inputs, call=built.forward, depth=depth)
        assert all(r.depth <= depth for r in s.layers)
        assert sum(r.flops for r in s.layers) == full.total_flops == s.total_flops
        assert sum(r.params for r in s.layers) == full.total_params
    (only,) = summarize(built.module, inputs, call=built.forward, depth=0).layers
    assert only.flops == full.total_flops and only.params == full.total_params and only.folded == len(full.layers) - 1
    with pytest.raises(CgError):
        summarize(built.module, inputs, depth=-1)


def test_batchnorm_statistics_are_restored():
    built = build_model("configs/resnet_block.yaml", check=False)
    assert built.module.training
    before = snapshot(built.module)
    summarize(built.module, make_inputs(built), call=built.forward)
    assert same(before, snapshot(built.module))


def test_hooks_removed_and_flags_restored_when_forward_fails():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(x) @ torch.ones(5, 5)

    m = Broken()
    before = snapshot(m)
    with pytest.raises(RuntimeError):
        summarize(m, torch.randn(2, 3))
    assert same(before, snapshot(m))
    assert torch.backends.mha.get_fastpath_enabled()


def test_spec_errors_come_back_at_the_spec():
    text = "name: Bad\nkind: module\ninputs: {x: [2, 3]}\nforward: |\n  return mm(x, x)\n"
    built = build_model(text, check=False)
    with pytest.raises(CgError):
        summarize(built.module, make_inputs(built), call=built.forward)


def test_sdpa_formula():
    q = torch.randn(2, 4, 16, 8)
    s = summarize(nn.Identity(), (q,), call=lambda a: F.scaled_dot_product_attention(*a, *a, *a))
    assert s.total_flops == 2 * (2 * 4) * 16 * 16 * (8 + 8)
    assert s.outside_flops == s.total_flops  # ran outside any module


def test_llama7b_on_meta(meta_built):
    built = meta_built(ROOT / "configs/llama7b.yaml")
    s = summarize(built.module, make_inputs(built), call=built.forward, depth=1)
    assert s.total_params == 6_738_415_616 and s.device == "meta"
    assert s.layers[0].type == "Llama7B" and {r.calls for r in s.layers} == {1}
    assert s.total_flops == torch_flops(lambda: built.forward(make_inputs(built)), extra=False)
