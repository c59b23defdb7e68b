"""`cgtool layers` and `cgtool validate`."""
import json

from conftest import CONFIGS


def test_layers_lists_torch_nn_with_signatures(cli):
    code, out, _ = cli("layers", "--json")
    rows = {r["type"]: r["signature"] for r in json.loads(out)["layers"]}
    assert rows["Linear"] == "Linear(in_features, out_features, bias=True)"
    assert "Conv2d" in rows and "TransformerEncoderLayer" in rows
    code, out, _ = cli("layers", "linear")
    assert code == 0 and "Linear(in_features, out_features, bias=True)" in out


def test_validate_many_specs_by_exit_code(cli, spec_file):
    good = [CONFIGS / "mlp.yaml", CONFIGS / "llama7b.yaml"]
    code, out, err = cli("validate", *good, "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    bad = spec_file("kind: sequential\nlayers:\n  - Linear(3, 4)\n  - Linear(5, 6)\ninputs: {x: [1, 3]}\n")
    code, out, err = cli("validate", CONFIGS / "mlp.yaml", CONFIGS / "tied_linear.yaml", bad)
    assert code == 1 and "expects 5 input features" in err and out.count("ok ") == 2


def test_build_leaves_the_callers_rng_alone():
    import torch

    import cgtool

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    cgtool.build(CONFIGS / "mlp.yaml")
    assert torch.equal(torch.rand(3), expected)
