"""Fast start-up: help, --version, shell completion and `import cgtool` never import torch (nor numpy,
sympy); a command module that fails to import is an error, not a missing command.
`benchmarks/startup.py` measures the times."""
import os
import subprocess
import sys

from conftest import ROOT

HEAVY = ("torch", "numpy", "sympy")

# One interpreter runs every invocation in turn (a fresh one each would cost ~0.2 s apiece), then
# reports which heavy modules are loaded. Each invocation prints its exit code after its output.
SCRIPT = r"""
import os, sys
import cgtool
assert cgtool.CgError and cgtool.__version__
print("after import cgtool:", sorted(m for m in HEAVY if m in sys.modules))
from cgtool.cli import main
for args, env in CALLS:
    sys.argv = ["cgtool", *args]
    os.environ.update(env)
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    for k in env:
        del os.environ[k]
    print(f"\n<exit {code}: {' '.join(args)}>")
print("loaded:", sorted(m for m in HEAVY if m in sys.modules))
"""

COMMANDS = ["build", "params", "summary", "run", "grad", "paths", "graph", "compare", "layers", "validate", "export", "bench",
            "schema", "new"]
CALLS = [(["--help"], {}), (["--version"], {})] + [([c, "--help"], {}) for c in COMMANDS] + [
    ([], {"_CGTOOL_COMPLETE": "complete_bash", "COMP_WORDS": "cgtool bu", "COMP_CWORD": "1"}),
    ([], {"_CGTOOL_COMPLETE": "complete_bash", "COMP_WORDS": "cgtool build --dev", "COMP_CWORD": "2"}),
]


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_CGTOOL", "COMP_", "PYTHONPROFILE"))}
    env.update(COLUMNS="120", NO_COLOR="1", TERM="dumb")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)


def test_help_version_and_completion_leave_torch_unimported():
    proc = run_python(f"HEAVY = {HEAVY!r}\nCALLS = {CALLS!r}\n{SCRIPT}")
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert "after import cgtool: []" in out
    assert out.rstrip().endswith("loaded: []"), out[-2000:]
    assert out.count("<exit 0:") == len(CALLS), out
    assert all(c in out for c in COMMANDS)  # the top-level help lists every command
    assert "cgtool 0.1.0" in out
    assert "build\n" in out and "--device" in out  # completions of `bu` and `build --dev`


def test_a_broken_command_module_is_an_error():
    # A command module that cannot be imported must fail loudly, not leave its command out.
    code = (
        "import sys, importlib.abc\n"
        "class Broken(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'cgtool.cli.grad_cmd':\n"
        "            raise ImportError('grad_cmd is broken')\n"
        "sys.meta_path.insert(0, Broken())\n"
        "import cgtool.cli\n"
    )
    proc = run_python(code)
    assert proc.returncode != 0 and "grad_cmd is broken" in proc.stderr
