"""The forward at the Python floor (issue 11): known layers called as functional ops when nothing watches.

The fast path must be invisible: bitwise the same outputs and gradients as the ordinary module calls, on
every config, in train and eval mode; and whatever watches a module (a hook, summary, a tracer, torch.compile)
must see the module calls it always saw.
"""
from __future__ import annotations
import glob
import os
import pytest
import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook
from cgtool.build.inputs import example_inputs
from cgtool.build.model import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOO_BIG = {"llama7b.yaml"}  # 27 GB of parameters
#: the same structure, smaller sizes (the full sizes take 10-30 s each on 2 cores)
SMALLER = {"transformer_encoder.yaml": {"d_model": 64, "heads": 4, "ff": 128, "layers": 3},
           "llama_block.yaml": {"dim": 256, "heads": 4, "hidden": 512},
           "gpt2_small.yaml": {"vocab": 1000, "d": 64, "heads": 4, "layers": 3}}
CONFIGS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.yaml"))
                 if os.path.basename(p) not in TOO_BIG)


def _build(text_or_name, **kw):
    path = os.path.join(ROOT, "configs", text_or_name)
    if os.path.exists(path):
        with open(path) as f:
            return build_model(f.read(), file=path, check=False, **kw)
    return build_model(text_or_name, file="<spec>", check=False, **kw)


class _Watch:
    """A global forward pre-hook that does nothing: every module call takes nn.Module.__call__."""

    def __enter__(self):
        self.handle = register_module_forward_pre_hook(lambda mod, args: None)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


class _CountCalls:
    """How many times nn.Module's own call machinery ran (the fast path never enters it)."""

    def __init__(self, monkeypatch):
        self.n = 0
        original = nn.Module._call_impl

        def counting(mod, *a, **k):
            self.n += 1
            return original(mod, *a, **k)

        monkeypatch.setattr(nn.Module, "_call_impl", counting)


def _run(built, inputs, *, train: bool, seed: int):
    module = built.module.train(train)
    module.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # dropout draws the same masks on both paths
    args = [inputs[n].clone().requires_grad_(inputs[n].is_floating_point()) for n in built.input_names]
    out = module(*args)
    flat = [t for t in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(t, torch.Tensor)]
    total = sum(t.float().sum() for t in flat if t.is_floating_point())
    grads = {}
    if isinstance(total, torch.Tensor) and total.requires_grad:
        total.backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
        grads.update({f"input {i}": a.grad.clone() for i, a in enumerate(args) if a.grad is not None})
    return [t.detach().clone() for t in flat], grads


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread for these tests, and the caller's count back after (other tests compare across processes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_fast_path_is_bitwise_the_module_path(config, train):
    built = _build(config, args=SMALLER.get(config))
    inputs = example_inputs(built, device="cpu")
    fast_out, fast_grads = _run(built, inputs, train=train, seed=1)
    with _Watch():
        slow_out, slow_grads = _run(built, inputs, train=train, seed=1)
    assert len(fast_out) == len(slow_out) > 0
    assert all(_same(a, b) for a, b in zip(fast_out, slow_out)), config
    assert fast_grads.keys() == slow_grads.keys()
    assert all(_same(fast_grads[k], slow_grads[k]) for k in fast_grads), config


def test_the_lessons_mlp_makes_no_module_calls_unless_watched(monkeypatch):
    built = _build("mlp.yaml")
    x = torch.randn(2, 784)
    counter = _CountCalls(monkeypatch)
    fast = built.module(x)
    assert counter.n == 0  # model(x) and its three layers: no nn.Module.__call__ at all
    with _Watch():
        slow = built.module(x)
    assert counter.n == 4  # the model and hidden, act, output
    assert torch.equal(fast, slow)


def test_a_hook_on_one_layer_is_called_and_can_change_its_output():
    built = _build("mlp.yaml")
    model, x = built.module, torch.randn(2, 784)
    plain = model(x)
    seen = []
    handle = model.hidden.register_forward_hook(lambda mod, args, out: seen.append(out.shape) or out * 0)
    hooked = model(x)
    handle.remove()
    assert seen == [torch.Size([2, 256])]
    assert torch.equal(hooked, model.output(torch.relu(torch.zeros(2, 256))))  # the hook's zeros went on
    assert torch.equal(model(x), plain)  # hook removed: the fast path again, same numbers


def test_pre_hooks_and_backward_hooks_on_the_model_are_honoured():
    built = _build("mlp.yaml")
    model, x = built.module, torch.randn(2, 784, requires_grad=True)
    handle = model.register_forward_pre_hook(lambda mod, args: (args[0] * 2,))
    doubled = model(x)
    handle.remove()
    assert torch.equal(doubled, model(x * 2))
    grads = []
    handle = model.output.register_full_backward_hook(lambda mod, gi, go: grads.append(go[0].shape))
    model(x).sum().backward()
    handle.remove()
    assert grads == [torch.Size([2, 10])]


def test_a_swapped_or_parametrized_layer_is_used_not_the_planned_call():
    built = _build("mlp.yaml")
    model, x = built.module, torch.randn(2, 784)
    model.act = nn.Tanh()  # the spec said ReLU: the type check sends the call to the new module
    assert torch.equal(model(x), model.output(torch.tanh(model.hidden(x))))
    from torch.nn.utils import parametrize

    class Half(nn.Module):
        def forward(self, w):
            return w / 2

    parametrize.register_parametrization(model.hidden, "weight", Half())
    expect = nn.functional.linear(x, model.hidden.parametrizations.weight.original / 2, model.hidden.bias)
    assert torch.equal(model(x), model.output(torch.tanh(expect)))


def test_functional_call_and_load_state_dict_are_seen():
    built = _build("mlp.yaml")
    model, x = built.module, torch.randn(2, 784)
    zeros = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    out = torch.func.functional_call(model, zeros, (x,))
    assert torch.equal(out, torch.zeros(2, 10))
    model.load_state_dict(zeros)
    assert torch.equal(model(x), torch.zeros(2, 10))


def test_batchnorm_in_training_mode_updates_its_statistics_as_the_module_does():
    text = """
name: BN
kind: module
inputs: {x: [4, 3, 5, 5]}
modules:
  conv: Conv2d(3, 4, 3)
  bn: BatchNorm2d(4)
forward: |
  return bn(conv(x))
"""
    a, b = _build(text), _build(text)
    x = torch.randn(4, 3, 5, 5)
    for _ in range(2):
        out_a = a.module.train()(x)
        with _Watch():
            out_b = b.module.train()(x)
    assert torch.equal(out_a, out_b)
    assert torch.equal(a.module.bn.running_mean, b.module.bn.running_mean)
    assert int(a.module.bn.num_batches_tracked) == 2
    assert torch.equal(a.module.eval()(x), b.module.eval()(x))


def test_a_layer_given_the_wrong_rank_raises_the_layers_own_error():
    text = """
name: BN
kind: module
inputs: {x: [4, 3, 5, 5]}
modules:
  bn: BatchNorm2d(3)
  seq:
    kind: sequential
    layers: [BatchNorm1d(3)]
forward: |
  return seq(bn(x))
"""
    model = _build(text).module.eval()
    with pytest.raises(ValueError, match=r"expected 2D or 3D input \(got 4D input\)"):
        model(torch.randn(4, 3, 5, 5))
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        model(torch.randn(4, 3, 5))


def test_a_changed_sequential_is_run_as_it_now_is():
    built = _build("gpt2_block.yaml", args={"d": 32, "heads": 4})
    model = built.module.eval()
    x = torch.randn(1, 8, 32)
    before = model(x)
    model.mlp.append(nn.Tanh())  # one more child than the spec built: no inlining of the old chain
    after = model(x)
    with _Watch():
        watched = model(x)
    assert torch.equal(after, watched) and not torch.equal(after, before)


def test_fx_sees_the_module_calls():
    built = _build("mlp.yaml")
    graph = torch.fx.symbolic_trace(built.module).graph
    targets = [n.target for n in graph.nodes if n.op == "call_module"]
    assert targets == ["hidden", "act", "output"]


@pytest.mark.parametrize("config", ["resnet_small.yaml", "gpt2_block.yaml"])
def test_torch_compile_of_nested_specs(config):
    """torch.compile inlines a nested spec's forward, which needs its namespace importable (this failed
    before issue 11: No module named 'cgtool.spec.BasicBlock')."""
    torch._dynamo.reset()
    built = _build(config, args={"d": 32, "heads": 4} if config == "gpt2_block.yaml" else None)
    model = built.module.eval()
    inputs = example_inputs(built, device="cpu")
    args = [inputs[n] for n in built.input_names]
    with torch.no_grad():
        assert torch.allclose(torch.compile(model, backend="eager")(*args), model(*args))


def test_build_code_shows_the_forward_as_written():
    built = _build("mlp.yaml")
    code = dict(built.code)["MLP"]
    assert "a = act(hidden(x))" in code and "_cg_F_linear" not in code


EVERY_LAYER = """
name: Every
kind: module
inputs:
  img: [2, 3, 8, 8]
  vol: [2, 2, 4, 4, 4]
  seq: [2, 3, 6]
  idx: {shape: [2, 5], dtype: long, high: 10}
modules:
  c1: Conv1d(3, 4, 3, padding=1)
  b1: BatchNorm1d(4)
  c2: Conv2d(3, 4, 3, stride=2, padding=1)
  b2: BatchNorm2d(4)
  mp: MaxPool2d(2, ceil_mode=True)
  ap: AvgPool2d(2, count_include_pad=False)
  aap: AdaptiveAvgPool2d((1, 1))
  c3: Conv3d(2, 2, 3, padding=1, bias=False)
  b3: BatchNorm3d(2)
  emb: Embedding(10, 6, padding_idx=0)
  ln: LayerNorm(6)
  rms: RMSNorm(6, eps=1e-5)
  flat: Flatten()
  lin: Linear(4, 6)
  acts:
    kind: sequential
    layers: [ReLU(), GELU(approximate='tanh'), SiLU(), LeakyReLU(0.2), Tanh(), Sigmoid(), Identity(), Dropout(0.25)]
  soft: Softmax(dim=-1)
forward: |
  a = b1(c1(seq)).sum()
  p = aap(ap(mp(b2(c2(img)))))
  v = b3(c3(vol)).mean()
  e = rms(ln(emb(idx)))
  h = acts(lin(flat(p)))
  return soft(h) + e.mean() + a + v
"""


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_every_known_layer_takes_the_fast_call_bitwise(monkeypatch, train):
    built = _build(EVERY_LAYER)
    inputs = example_inputs(built, device="cpu")
    counter = _CountCalls(monkeypatch)
    fast_out, fast_grads = _run(built, inputs, train=train, seed=3)
    # eval: not one module call; train: only the BatchNorms (their statistics update is the module's business)
    assert counter.n == (3 if train else 0)
    with _Watch():
        slow_out, slow_grads = _run(built, inputs, train=train, seed=3)
    assert all(_same(a, b) for a, b in zip(fast_out, slow_out))
    assert fast_grads.keys() == slow_grads.keys() and all(_same(fast_grads[k], slow_grads[k]) for k in fast_grads)


def test_one_forward_text_compiled_twice_gets_its_own_code_objects():
    """Compiled code is cached by text, but each class gets its own code objects: torch.compile keys its caches
    and the resume functions it puts in a function's globals on the code object."""
    built = _build("resnet_small.yaml")
    blocks = [m for m in built.module.modules() if type(m).__name__ == "BasicBlock"]
    classes = {type(m) for m in blocks}
    assert len(classes) > 1  # blocks of other args: other classes, one forward text
    codes = {id(cls.forward.__code__) for cls in classes}  # by identity: code objects compare by content
    assert len(codes) == len(classes)
    assert len({cls.forward.__globals__["__name__"] for cls in classes}) == len(classes)


def test_a_loop_over_a_module_list_calls_known_layers_fast(monkeypatch):
    built = _build("mlp_modulelist.yaml")
    x = torch.randn(2, 784)
    counter = _CountCalls(monkeypatch)
    fast = built.module(x)
    assert counter.n == 0  # for layer in layers: x = layer(x) -- no nn.Module.__call__
    with _Watch():
        slow = built.module(x)
    assert counter.n == 4 and torch.equal(fast, slow)
    built.module[1] = nn.Tanh()  # a class the spec did not have: still right
    assert torch.equal(built.module(x), built.module[2](torch.tanh(built.module[0](x))))
