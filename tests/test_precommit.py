"""Other repositories run `cgtool validate` on their specs with pre-commit (issue 13): `.pre-commit-hooks.yaml`,
tried against a temporary repository with the real pre-commit, as a user's commit would run it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _run(cmd, cwd, env):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def user_repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""),
           "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "NO_COLOR": "1"}
    _run(["git", "init", "-q"], repo, env)
    shutil.copy(os.path.join(ROOT, "configs", "mlp.yaml"), repo / "good.yaml")
    # the hooks as this checkout ships them, in a repository of their own (whatever state this checkout is in)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    shutil.copy(os.path.join(ROOT, ".pre-commit-hooks.yaml"), hooks / ".pre-commit-hooks.yaml")
    for cmd in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-q", "-m", "hooks"]):
        _run(cmd, hooks, env)
    env["CGTOOL_HOOKS"] = str(hooks)
    return repo, env


def try_repo(repo, env):
    return _run([os.path.join(BIN, "pre-commit"), "try-repo", env["CGTOOL_HOOKS"], "cgtool-validate", "--all-files"],
                repo, env)


def test_hook_passes_on_valid_specs(user_repo):
    repo, env = user_repo
    _run(["git", "add", "."], repo, env)
    r = try_repo(repo, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cgtool validate" in r.stdout and "Passed" in r.stdout


def test_hook_fails_on_a_broken_spec_and_says_where(user_repo):
    repo, env = user_repo
    (repo / "bad.yaml").write_text("name: Bad\nkind: sequential\ninputs: {x: [2, 4]}\nlayers:\n  - Linear(5, 4)\n")
    _run(["git", "add", "."], repo, env)
    r = try_repo(repo, env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Failed" in r.stdout and "bad.yaml:5:5" in r.stdout and "ok     good.yaml" in r.stdout
