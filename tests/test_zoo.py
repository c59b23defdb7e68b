"""configs/zoo (issue 15): specs of reference models whose state_dicts, module trees and outputs equal the
reference classes' (torchvision, transformers), and `cgtool run --weights` loading a reference checkpoint.

Nothing is downloaded: the reference is initialised at random, its state_dict is loaded into the spec's module,
and both run in eval mode on the same input; outputs must be bitwise equal. Full-size structure is compared on
the meta device (no memory, no time); the numbers on the full-size torchvision CNNs and on small configurations
of ViT, GPT-2 and BERT (the same code, fewer and narrower layers).
"""
from __future__ import annotations
import glob
import os

import jsonschema
import pytest
import torch
import yaml
from typer.testing import CliRunner

import cgtool
from cgtool.cli import app
from cgtool.spec.schema import spec_schema

from zoo_refs import torchvision, transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO = os.path.join(ROOT, "configs", "zoo")


def zoo(name: str) -> str:
    return os.path.join(ZOO, f"{name}.yaml")


def same_structure(ours: torch.nn.Module, ref: torch.nn.Module):
    """The same state_dict (keys in order, shapes) and the same module tree: names and class names (a named
    sequential spec is a subclass of that name, as torchvision's MLPBlock and Conv2dNormActivation are)."""
    mine, theirs = ours.state_dict(), ref.state_dict()
    assert list(mine) == list(theirs)
    assert [tuple(v.shape) for v in mine.values()] == [tuple(v.shape) for v in theirs.values()]
    assert [(n, type(m).__name__) for n, m in ours.named_modules()] == \
        [(n, type(m).__name__) for n, m in ref.named_modules()]
    for (_, mine_m), (_, their_m) in zip(ours.named_modules(), ref.named_modules()):  # containers stay containers
        for base in (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict):
            assert isinstance(mine_m, base) == isinstance(their_m, base)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def same_outputs(ours: torch.nn.Module, ref: torch.nn.Module, *inputs):
    """The reference's random weights loaded into ours (strictly), then bitwise-equal outputs in eval mode."""
    ours.load_state_dict(ref.state_dict())
    ours.eval(), ref.eval()
    with torch.no_grad():
        got, want = ours(*inputs), ref(*inputs)
    if hasattr(want, "logits"):
        want = want.logits
    elif hasattr(want, "pooler_output"):
        want = (want.last_hidden_state, want.pooler_output)
    got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and torch.equal(g, w), f"max |difference| {(g - w).abs().max().item()}"


@pytest.mark.parametrize("name,spec,args,size", [
    ("resnet18", "resnet18", {}, 64), ("resnet50", "resnet50", {}, 64), ("vgg16", "vgg16", {}, 32),
    ("mobilenet_v2", "mobilenet_v2", {}, 64),
    ("squeezenet1_0", "squeezenet", {}, 96), ("squeezenet1_1", "squeezenet", {"version": "1_1"}, 96),
    ("shufflenet_v2_x1_0", "shufflenet_v2", {}, 64),
    ("shufflenet_v2_x0_5", "shufflenet_v2", {"stages_out_channels": [24, 48, 96, 192, 1024]}, 64),
])
def test_torchvision_cnns(name, spec, args, size):
    tv = torchvision()
    torch.manual_seed(0)
    ref = getattr(tv.models, name)()
    ours = cgtool.build(zoo(spec), **args)
    same_structure(ours, ref)
    same_outputs(ours, ref, torch.randn(2, 3, size, size))


def test_vit_b_16():
    tv = torchvision()
    with torch.device("meta"):
        ref = tv.models.vit_b_16()
    same_structure(cgtool.build_model(zoo("vit_b_16"), device="meta", check=False).module, ref)
    from torchvision.models.vision_transformer import VisionTransformer

    small = dict(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    torch.manual_seed(0)
    ref = VisionTransformer(**small)
    ours = cgtool.build(zoo("vit_b_16"), **small)
    same_structure(ours, ref)
    same_outputs(ours, ref, torch.randn(2, 3, 32, 32))


def test_gpt2_small_and_its_training_mode():
    hf = transformers()
    with torch.device("meta"):
        ref = hf.GPT2LMHeadModel(hf.GPT2Config())
    same_structure(cgtool.build_model(zoo("gpt2_small"), device="meta", check=False).module, ref)
    small = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32)
    torch.manual_seed(0)
    ref = hf.GPT2LMHeadModel(hf.GPT2Config(**small, bos_token_id=0, eos_token_id=0))
    ours = cgtool.build(zoo("gpt2_small"), **small)
    same_structure(ours, ref)
    ids = torch.randint(0, 100, (2, 9))
    same_outputs(ours, ref, ids)
    assert ours.lm_head.weight is ours.transformer.wte.weight  # tied, as the reference's
    # training mode: attention, residual and embedding dropout with the same seed drop the same values, and the
    # attention runs on the same strides (the reference's KV cache stores k and v contiguous): bitwise equal
    ours.train(), ref.train()
    for length in (1, 9, 32):
        ids = torch.randint(0, 100, (2, length))
        torch.manual_seed(1)
        want = ref(ids).logits
        torch.manual_seed(1)
        got = ours(ids)
        assert torch.equal(got, want), f"T={length}: max |difference| {(got - want).abs().max().item()}"
    torch.manual_seed(2)
    assert not torch.equal(ours(ids), want)  # dropout is on: another seed, other values


def test_bert_base_and_its_training_mode():
    hf = transformers()
    with torch.device("meta"):
        ref = hf.BertModel(hf.BertConfig())
    same_structure(cgtool.build_model(zoo("bert_base"), device="meta", check=False).module, ref)
    small = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128, vocab_size=100,
                 max_position_embeddings=32)
    torch.manual_seed(0)
    ref = hf.BertModel(hf.BertConfig(**small))
    ours = cgtool.build(zoo("bert_base"), num_layers=2, hidden=64, heads=4, intermediate=128, vocab_size=100,
                        max_position=32)
    same_structure(ours, ref)
    assert "embeddings.position_ids" not in ours.state_dict()  # persistent: false, as the reference's buffer
    ids = torch.randint(0, 100, (2, 9))
    same_outputs(ours, ref, ids)
    # training mode: the attention's dropout reads `training`; the same seed drops the same values
    ours.train(), ref.train()
    torch.manual_seed(1)
    want = ref(ids).last_hidden_state
    torch.manual_seed(1)
    got = ours(ids)[0]
    assert torch.equal(got, want)
    torch.manual_seed(2)
    assert not torch.equal(ours(ids)[0], want)  # dropout is on: another seed, other values


def test_run_loads_a_reference_checkpoint(tmp_path):
    tv = torchvision()
    torch.manual_seed(0)
    ref = tv.models.resnet18().eval()
    torch.save(ref.state_dict(), tmp_path / "resnet18.pth")
    x = torch.randn(1, 3, 64, 64)
    torch.save(x, tmp_path / "x.pt")
    r = CliRunner().invoke(app, ["run", zoo("resnet18"), "--weights", str(tmp_path / "resnet18.pth"),
                                 "-i", f"x={tmp_path / 'x.pt'}", "-o", str(tmp_path / "y.pt")])
    assert r.exit_code == 0, r.output
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "y.pt"), ref(x))
    # a checkpoint of another model is refused, by name, with nothing loaded
    torch.save(tv.models.mobilenet_v2().state_dict(), tmp_path / "mobilenet_v2.pth")
    r = CliRunner().invoke(app, ["run", zoo("resnet18"), "--weights", str(tmp_path / "mobilenet_v2.pth")])
    assert r.exit_code == 1 and "weights do not fit the model" in r.output


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ZOO, "*.yaml"))), ids=os.path.basename)
def test_zoo_specs_are_valid_under_the_schema(path):
    with open(path) as f:
        text = f.read()
    validator = jsonschema.Draft202012Validator(spec_schema())
    assert [e.message for e in validator.iter_errors(yaml.safe_load(text))] == []
    assert "# yaml-language-server: $schema=../../schema/cgtool-spec.schema.json" in text


def test_generated_tables_are_what_the_args_say():
    """VGG-16's features and MobileNet-v2's blocks come from their tables: another table, another network."""
    vgg = cgtool.build(zoo("vgg16"), cfg=[8, "M", 16, "M"], num_classes=10)
    assert [type(m).__name__ for m in vgg.features] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d"]
    assert vgg.features[3].in_channels == 8 and vgg.features[3].out_channels == 16
    mnet = cgtool.build(zoo("mobilenet_v2"), setting=[[1, 16, 1, 1], [6, 24, 2, 2]])
    assert len(mnet.features) == 1 + 3 + 1
    # t = 1: no expansion conv, and the depthwise conv takes index 0 (as the reference's list)
    assert mnet.features[1].conv[0][0].groups == 32 and len(mnet.features[1].conv) == 3
    assert mnet.features[2].conv[0][0].kernel_size == (1, 1) and len(mnet.features[2].conv) == 4


@pytest.mark.parametrize("name,spec,args", [
    ("resnet18", "resnet18", []), ("mobilenet_v2", "mobilenet_v2", []), ("squeezenet1_1", "squeezenet",
                                                                         ["--arg", "version='1_1'"]),
    ("shufflenet_v2_x1_0", "shufflenet_v2", []), ("vgg16", "vgg16", []),
])
def test_summary_flops_are_torchs_count_of_the_reference(name, spec, args):
    """`cgtool summary` of a zoo spec counts the FLOPs torch's FlopCounterMode counts on the reference model."""
    import json
    from torch.utils.flop_counter import FlopCounterMode

    tv = torchvision()
    ref = getattr(tv.models, name)().eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        ref(torch.randn(1, 3, 64, 64))
    r = CliRunner().invoke(app, ["summary", zoo(spec), *args, "-i", "x=1,3,64,64", "--json"],
                           env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["total_flops"] == counter.get_total_flops() > 0
