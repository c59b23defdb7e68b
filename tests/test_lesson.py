"""Each lesson config's compiled forward equals the hand-written PyTorch module with the same weights."""
import pytest
import torch
from torch import nn

import handwritten as hw
from cgtool import build
from cgtool.build.model import build_model
from conftest import CONFIGS


def _same(spec_module, hand, x, *, strict_keys=True, rename=None):
    state = spec_module.state_dict()
    if rename:
        state = {rename(k): v for k, v in state.items()}
    hand.load_state_dict(state, strict=strict_keys)
    torch.testing.assert_close(spec_module(x), hand(x), rtol=0, atol=0)


@pytest.mark.parametrize("config,factory,shape", [
    ("mlp.yaml", hw.MLP, (2, 784)),
    ("mlp_sequential.yaml", hw.sequential, (2, 784)),
    ("mlp_sequential_named.yaml", hw.sequential_named, (2, 784)),
    ("fancy_mlp.yaml", hw.FancyMLP, (2, 20)),
    ("nest_mlp.yaml", hw.nested, (2, 40)),
    ("tied_linear.yaml", hw.TiedLinear, (2, 20)),
])
def test_forward_equals_handwritten(config, factory, shape):
    model = build(CONFIGS / config)
    hand = factory()
    # names mirror the hand-written module exactly: the same state_dict keys
    assert list(model.state_dict()) == list(hand.state_dict())
    for seed in range(3):
        torch.manual_seed(seed)
        _same(model, hand, torch.rand(shape))


def test_modulelist_and_moduledict_are_real_containers():
    ml = build(CONFIGS / "mlp_modulelist.yaml")
    md = build(CONFIGS / "mlp_moduledict.yaml")
    assert isinstance(ml, nn.ModuleList) and isinstance(md, nn.ModuleDict)
    assert len(ml) == 3 and isinstance(ml[-1], nn.Linear) and list(md.keys()) == ["linear", "act", "output"]
    x = torch.rand(2, 784)
    _same(ml, hw.MyModuleList(), x, rename=lambda k: f"net.{k}")
    _same(md, hw.ModuleDictNet(), x, rename=lambda k: f"net.{k}")


def test_sequential_is_real_sequential_and_keys():
    seq = build(CONFIGS / "mlp_sequential.yaml")
    # the lesson's MySequential is a class of its own that works as Sequential does: an nn.Sequential subclass
    # named by the spec, with Sequential's own forward
    assert isinstance(seq, nn.Sequential) and type(seq).__name__ == "MySequential"
    assert type(seq).__mro__[1] is nn.Sequential and type(seq).forward is nn.Sequential.forward
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    named = build(CONFIGS / "mlp_sequential_named.yaml")
    assert list(dict(named.named_children())) == ["hidden", "act", "output"]


def test_fancy_mlp_constant_shared_and_control_flow():
    model = build(CONFIGS / "fancy_mlp.yaml")
    assert [n for n, _ in model.named_buffers()] == ["rand_weight"]
    assert all(n.startswith("linear.") for n, _ in model.named_parameters())
    assert sum(p.numel() for p in model.parameters()) == 420
    out = model(torch.rand(2, 20))
    assert out.shape == ()
    out.backward()
    # the reused layer got gradient from both uses; the constant none
    assert model.linear.weight.grad is not None and model.rand_weight.grad is None


def test_gradients_match_handwritten():
    model = build(CONFIGS / "fancy_mlp.yaml")
    hand = hw.FancyMLP()
    hand.load_state_dict(model.state_dict())
    x = torch.rand(2, 20)
    model(x).backward()
    hand(x).backward()
    torch.testing.assert_close(model.linear.weight.grad, hand.linear.weight.grad)


def test_seed_makes_builds_deterministic():
    a = build_model(CONFIGS / "fancy_mlp.yaml", seed=1).module.state_dict()
    b = build_model(CONFIGS / "fancy_mlp.yaml", seed=1).module.state_dict()
    c = build_model(CONFIGS / "fancy_mlp.yaml", seed=2).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["rand_weight"], c["rand_weight"])
