"""Golden outputs: the exact text of `cgtool build` (every config) and `cgtool grad` (a set of expressions).

Any change in what the user sees shows up as a diff against tests/golden/. When a change is
meant, regenerate with `pytest tests/test_golden.py --update-golden` and review the diff.
Width 100, no colour; everything random is seeded, so the text is the same on every run.
"""
from __future__ import annotations

import difflib

import pytest
from typer.testing import CliRunner

from conftest import CONFIGS, ROOT

GOLDEN = ROOT / "tests" / "golden"
ENV = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}

# name -> (arguments, exit code). Exit 0: the golden file is stdout; otherwise it is stderr.
CASES: dict[str, tuple[list[str], int]] = {}

for _path in sorted(CONFIGS.glob("*.yaml")):
    # llama7b on the CPU would be refused or not depending on the machine's free memory
    _device = ["--device", "meta"] if _path.stem == "llama7b" else []
    CASES[f"build/{_path.stem}"] = (["build", f"configs/{_path.name}", *_device], 0)
CASES["build/fancy_mlp--code"] = (["build", "configs/fancy_mlp.yaml", "--code"], 0)

LESSON = ["y = (x1 + w) * (x2 + w)", "--at", "x1=1", "--at", "x2=2", "--at", "w=3", "--wrt", "w"]
GRAD = {
    "lesson": LESSON,
    "lesson_symbolic": ["y = (x1 + w) * (x2 + w)", "--wrt", "w"],
    "lesson_json": [*LESSON, "--json"],
    "square": ["y = w * w", "--at", "w=3"],
    "alias": ["h0 = w; y = h0 * h0", "--at", "w=2"],
    "reassigned": ["c = x * 2; c = c * c; y = c + x", "--at", "x=1.5"],
    "tensors": ["y = sum(x * w)", "--at", "x=[1,2,3]", "--at", "w=[0.5,1,2]"],
    "chain3": ["h1 = w * x + w; h2 = h1 * h1 + h1 * w; y = h2 * h1 + h2 * w", "--at", "x=0.5", "--at", "w=1.5"],
    "sin_exp_log": ["y = sin(x) * exp(w) + log(x * w)", "--at", "x=0.5", "--at", "w=2"],
    "loop": ["y = x\nfor i in range(3):\n    y = y * x", "--at", "x=2"],
    "branch": ["y = x * w\nif y > 2:\n    y = y * y\nelse:\n    y = y + w", "--at", "x=1", "--at", "w=3"],
    "root": ["a = x * w; b = a + x; y = b * b", "--root", "b", "--at", "x=2", "--at", "w=3"],
}
for _name, _args in GRAD.items():
    CASES[f"grad/{_name}"] = (["grad", *_args], 0)
# a compound statement after `;` is Python's syntax error: the message is pinned too
CASES["grad/loop_one_line.err"] = (["grad", "y = x; for i in range(3): y = y * x", "--at", "x=2"], 1)


@pytest.fixture(scope="module")
def runner():
    from cgtool.cli import app

    cli = CliRunner()
    return lambda args: cli.invoke(app, args, env=ENV)


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_matches_golden(name, runner, update_golden, monkeypatch):
    args, code = CASES[name]
    monkeypatch.chdir(ROOT)  # paths in the output are the relative ones given
    result = runner(args)
    assert result.exit_code == code, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    text = result.stdout if code == 0 else result.stderr
    path = GOLDEN / f"{name}.txt"
    if update_golden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run pytest tests/test_golden.py --update-golden"
    want = path.read_text(encoding="utf-8")
    if text != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True),
                                            f"golden/{name}.txt", "now"))
        pytest.fail(f"output differs from tests/golden/{name}.txt (--update-golden rewrites it):\n{diff}",
                    pytrace=False)


def test_every_golden_file_has_a_case():
    files = {p.relative_to(GOLDEN).with_suffix("").as_posix() for p in GOLDEN.rglob("*.txt")}
    assert files <= set(CASES), f"golden files without a case (delete them): {sorted(files - set(CASES))}"
