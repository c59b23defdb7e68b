"""Shell habits (issue 13): completion of commands, spec files and --wrt names, and --version."""
from __future__ import annotations

import os
import subprocess
import sys

BIN = os.path.join(os.path.dirname(sys.executable), "cgtool")


def complete(words: str, cword: int, shell: str = "bash") -> list[str]:
    env = {**os.environ, "_CGTOOL_COMPLETE": f"complete_{shell}"}
    if shell == "bash":
        env.update(COMP_WORDS=words, COMP_CWORD=str(cword))
    else:
        env["_TYPER_COMPLETE_ARGS"] = words
    r = subprocess.run([BIN], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if line]


def test_commands_complete():
    assert complete("cgtool pa", 1) == ["params", "paths"]


def test_spec_files_complete():
    assert complete("cgtool paths configs/fancy", 2) == ["configs/fancy_mlp.yaml"]
    assert "configs/" in complete("cgtool build conf", 2)


def test_wrt_completes_the_names_of_the_given_spec():
    assert complete("cgtool paths configs/fancy_mlp.yaml --wrt li", 4) == ["linear.weight", "linear.bias"]
    got = complete("cgtool paths configs/tied_linear.yaml --wrt ", 4)
    assert got == ["l1.weight", "l1.bias", "l2.weight", "l2.bias", "x"]  # tied names too
    assert complete("cgtool paths no/such.yaml --wrt ", 4) == []


def test_zsh_completion_of_wrt():
    out = "\n".join(complete("cgtool paths configs/fancy_mlp.yaml --wrt rand", 0, shell="zsh"))
    assert "rand_weight" in out


def test_completion_can_be_shown_and_version_printed():
    r = subprocess.run([BIN, "--show-completion", "bash"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "_CGTOOL_COMPLETE=complete_bash" in r.stdout
    r = subprocess.run([BIN, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("cgtool ")


def test_piped_tables_keep_one_row_per_line_without_colour():
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR", "FORCE_COLOR")}
    r = subprocess.run([BIN, "params", "configs/gpt2_small.yaml", "--device", "meta"], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stdout  # no colour into a pipe
    import re

    rows = [re.match(r"^(\S+)\s+\[[^\]]*\]\s+([\d,]+)\s", line) for line in r.stdout.splitlines()
            if line.startswith("h.")]
    assert len(rows) == 12 * 12 and all(rows)  # 12 blocks of 12 parameters: one whole line each
    assert {m.group(1) for m in rows} >= {"h.0.ln_1.weight", "h.11.mlp.c_proj.bias"}
    assert sum(int(m.group(2).replace(",", "")) for m in rows) == 12 * 7_087_872  # GPT-2 small's blocks
