"""Commands that start fast (issue 11): meta work without importing torch.compile, counting without values.

Speed itself is measured in benchmarks/commands.py; these tests check the mechanisms: what is (not)
imported, that everything borrowed is given back, and that the answers are the same as before.
"""
from __future__ import annotations
import os
import subprocess
import sys
import textwrap
import pytest
import torch
from typer.testing import CliRunner
from cgtool.build.model import build_model
from cgtool.cli import app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
runner = CliRunner()


def _fresh(code: str) -> str:
    """Run *code* in a fresh interpreter (nothing imported yet); its stdout."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env=dict(os.environ, COLUMNS="120"))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("argv", [["params", "configs/gpt2_small.yaml"], ["summary", "configs/gpt2_small.yaml"],
                                  ["build", "configs/resnet_small.yaml"], ["params", "configs/llama7b.yaml",
                                                                           "--device", "meta"]])
def test_commands_do_not_import_torch_compile_sympy_or_symbolic_shapes(argv):
    out = _fresh(f"""
        import atexit, sys
        heavy = ("torch._dynamo", "sympy", "torch.fx.experimental.symbolic_shapes")
        atexit.register(lambda: print("imported:", any(m in sys.modules for m in heavy)))
        sys.argv = ["cgtool"] + {argv!r}
        from cgtool.cli import main
        main()
    """)
    assert out.rstrip().endswith("imported: False"), out[-500:]


def test_what_is_lent_is_given_back_and_torch_compile_still_works():
    out = _fresh("""
        import sys, torch
        from cgtool.build.meta import meta_call
        from cgtool.build.model import build_model
        built = meta_call(build_model, open("configs/gpt2_block.yaml").read(), file="configs/gpt2_block.yaml",
                          device="meta")
        print("after meta:", "torch._dynamo" in sys.modules, built.check.status)
        f = torch.compile(lambda x: torch.sin(x) + 1, backend="eager")
        print("compiled:", torch.equal(f(torch.ones(3)), torch.sin(torch.ones(3)) + 1))
        import torch._dynamo
        print("real module:", hasattr(torch._dynamo, "config"))
        a = torch.empty(3, device="meta")
        print("meta after:", (a + a).shape == (3,))
    """)
    assert out.split("\n")[:4] == ["after meta: False passed", "compiled: True", "real module: True",
                                   "meta after: True"]


def test_a_stand_in_asked_for_more_reruns_with_the_real_module():
    out = _fresh("""
        import sys, torch
        from cgtool.build.meta import meta_call
        calls = []

        def needs_dynamo():
            calls.append(type(sys.modules.get("torch._dynamo")).__name__)
            import torch._dynamo.config
            return True

        print(meta_call(needs_dynamo), calls)
    """)
    assert out.strip() == "True ['_StandIn', 'NoneType']"  # the second run imports the real one


def test_a_module_imported_during_the_run_gets_the_real_modules_after():
    out = _fresh("""
        import sys, types, torch
        from cgtool.build.meta import light_meta
        with light_meta():
            mod = types.ModuleType("late_import")
            import sympy
            from torch.fx.experimental.symbolic_shapes import expect_true
            mod.sympy, mod.expect_true = sympy, expect_true
            sys.modules["late_import"] = mod
            print("lent:", type(sympy).__name__, expect_true(True))
        print("after:", type(mod.sympy).__name__, mod.sympy.__name__, hasattr(mod.sympy, "Symbol"),
              mod.expect_true.__module__)
    """)
    assert out.splitlines() == ["lent: _StandIn True", "after: module sympy True torch.fx.experimental.symbolic_shapes"]


def test_a_symbolic_value_or_an_unknown_name_reruns_with_the_real_modules():
    out = _fresh("""
        import sys, torch
        from cgtool.build.meta import meta_call
        seen = []

        def work():
            from torch.fx.experimental import symbolic_shapes
            seen.append(type(symbolic_shapes).__name__)
            return symbolic_shapes.guard_bool(True)  # not lent: the run starts again with the real module

        print(meta_call(work), seen)
    """)
    assert out.strip() == "True ['_StandIn', 'module']"


def test_the_stand_in_refuses_other_names_and_leaves_no_trace():
    out = _fresh("""
        import sys, torch
        from cgtool.build.meta import StandInUsed, light_meta
        try:
            with light_meta():
                sys.modules["torch._dynamo"].optimize
        except StandInUsed:
            print("refused", "torch._dynamo" in sys.modules, "_dynamo" in torch.__dict__)
    """)
    assert out.strip() == "refused False False"


def test_params_counts_on_meta_and_reports_the_device_asked_for():
    built = build_model(open(os.path.join(ROOT, "configs/gpt2_small.yaml")).read(),
                        file=os.path.join(ROOT, "configs/gpt2_small.yaml"), check=False, values=False)
    assert all(p.is_meta for p in built.module.parameters()) and built.device.type == "cpu"
    r = runner.invoke(app, ["params", os.path.join(ROOT, "configs/gpt2_small.yaml"), "--json"])
    assert r.exit_code == 0, r.output
    import json

    data = json.loads(r.stdout)
    assert {row["device"] for row in data["parameters"]} == {"cpu"}
    assert sum(row["numel"] for row in data["parameters"]) == 124_439_808


def test_llama7b_params_need_no_device_meta_now():
    """Counting allocates nothing, so the memory cap has nothing to refuse."""
    r = runner.invoke(app, ["params", os.path.join(ROOT, "configs/llama7b.yaml"), "--json"])
    assert r.exit_code == 0, r.output
    import json

    assert sum(row["numel"] for row in json.loads(r.stdout)["parameters"]) == 6_738_415_616


def test_modules_built_on_meta_skip_initialisers_but_keep_shapes_and_dtypes():
    from cgtool.build.meta import building_on_meta

    with building_on_meta():
        layers = [torch.nn.Linear(4, 3), torch.nn.Embedding(10, 4, padding_idx=0), torch.nn.LayerNorm(4),
                  torch.nn.BatchNorm1d(4), torch.nn.Conv2d(3, 8, 3)]
    real = [torch.nn.Linear(4, 3), torch.nn.Embedding(10, 4, padding_idx=0), torch.nn.LayerNorm(4),
            torch.nn.BatchNorm1d(4), torch.nn.Conv2d(3, 8, 3)]
    for m, r in zip(layers, real):
        got = {k: (tuple(v.shape), v.dtype, v.is_meta) for k, v in m.state_dict().items()}
        want = {k: (tuple(v.shape), v.dtype, True) for k, v in r.state_dict().items()}
        assert got == want


def test_summary_of_a_data_dependent_spec_runs_on_real_values():
    r = runner.invoke(app, ["summary", os.path.join(ROOT, "configs/fancy_mlp.yaml"), "--json"])
    assert r.exit_code == 0, r.output
    import json

    data = json.loads(r.stdout)
    assert data["device"] == "cpu" and data["total_flops"] > 0


@pytest.mark.parametrize("config", sorted(p for p in os.listdir(os.path.join(ROOT, "configs")) if p.endswith(".yaml")))
def test_the_shape_check_runs_repeated_blocks_once_and_records_the_same(config, monkeypatch):
    """The meta dry run skips blocks identical to one already run: the records (every module's calls, input and
    output shapes) and the outputs must be exactly those of running every block."""
    from cgtool.build import dryrun

    path = os.path.join(ROOT, "configs", config)
    text = open(path).read()
    fast = build_model(text, file=path, device="meta")
    monkeypatch.setattr(dryrun._Repeats, "__enter__", lambda self: self)
    slow = build_model(text, file=path, device="meta")
    assert (fast.check.status, fast.check.reason, fast.check.outputs) == \
        (slow.check.status, slow.check.reason, slow.check.outputs)
    assert {k: vars(v) for k, v in fast.check.records.items()} == {k: vars(v) for k, v in slow.check.records.items()}


def test_a_repeated_block_that_fails_fails_at_its_first_copy():
    block = """
      - kind: module
        name: Block
        modules:
          a: Linear(8, 8)
          b: Linear(9, 8)
        forward: |
          return b(a(x))"""
    text = f"""
name: Bad
kind: module
inputs: {{x: [2, 8]}}
modules:
  blocks:
    kind: sequential
    layers:{block * 3}
forward: |
  return blocks(x)
"""
    from cgtool.errors import CgError

    with pytest.raises(CgError, match=r"expects 9 input features"):
        build_model(text, file="<spec>", device="meta")
