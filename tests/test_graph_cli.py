"""`cgtool graph`: every format of every bundled config, the lesson's picture, labels shared with
`cgtool paths`, folding, data-dependent control flow, and the errors a user meets."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch

import cgtool
from cgtool.render.graph_output import FORMATS, rendered
from conftest import CONFIGS, ROOT

LESSON = "y = (x1 + w) * (x2 + w)"
SVG = "{http://www.w3.org/2000/svg}"
# forwards that branch on tensor values cannot run on meta tensors: they run on small real ones
REAL = {"fancy_mlp.yaml", "nest_mlp.yaml"}
ALL_CONFIGS = sorted(p.name for p in CONFIGS.glob("*.yaml"))


def need_dot():
    if shutil.which("dot") is None:
        if os.environ.get("CGTOOL_REQUIRE_RENDERERS"):
            pytest.fail("Graphviz's dot is required here (CGTOOL_REQUIRE_RENDERERS) and is not installed")
        pytest.skip("Graphviz's dot is not installed (Debian package graphviz)")


@pytest.fixture(scope="module")
def views():
    """One view per bundled config, built once: on meta tensors, or small real ones (data-dependent forwards)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = cgtool.graph(str(CONFIGS / name), device="cpu" if name in REAL else "meta")
        return cache[name]

    return get


def svg_texts(svg: bytes | str) -> list[str]:
    root = ET.fromstring(svg)
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def first_line(label: str) -> str:
    return label.split("\n")[0]


# --------------------------------------------------------------------------- every config, every format


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "html"])  # html: tests/test_graph_html.py, in Chromium
@pytest.mark.parametrize("config", ALL_CONFIGS)
def test_every_config_renders_in_every_format(views, config, fmt):
    view = views(config)
    if fmt in ("svg", "png", "html"):
        need_dot()
    out = rendered(view, fmt)
    labels = [n.label for n in view.nodes]
    assert len(labels) == len(set(labels)), "labels name one node each"
    if fmt == "json":
        data = json.loads(out)
        ids = {n["id"] for n in data["nodes"]}
        assert len(ids) == len(data["nodes"])
        for n in data["nodes"]:
            assert {"id", "label", "kind", "shape"} <= set(n) and isinstance(n["shape"], list)
        for e in data["edges"]:
            assert {"id", "source", "target"} <= set(e) and e["source"] in ids and e["target"] in ids
        assert data["root"] in ids
    elif fmt == "dot":
        need_dot()
        done = subprocess.run(["dot", "-Tsvg"], input=out.encode(), capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        ET.fromstring(done.stdout)
    elif fmt == "svg":
        texts = svg_texts(out)
        for label in labels:
            assert any(t.startswith(first_line(label)) for t in texts), f"{label!r} is not drawn"
    elif fmt == "png":
        assert out[:8] == b"\x89PNG\r\n\x1a\n" and len(out) > 1000
    elif fmt == "mermaid":
        check_mermaid(out, view)
    elif fmt == "text":
        for label in labels:
            assert label in out


def check_mermaid(text: str, view) -> None:
    lines = text.splitlines()
    assert re.fullmatch(r"flowchart (TB|LR)", lines[0])
    declared, depth, shown = set(), 0, set()
    for line in lines[1:]:
        s = line.strip()
        if s.startswith("subgraph "):
            depth += 1
        elif s == "end":
            depth -= 1
            assert depth >= 0
        elif m := re.fullmatch(r"(n\d+)(\(\[|\[\[|\[\(|\(|\[)\".*\"(\]\)|\]\]|\)\]|\)|\])", s):
            assert m[1] not in declared
            declared.add(m[1])
            text = re.search(r'"(.*)"', s)[1].split("<br/>")[0]
            for entity, char in (("#quot;", '"'), ("#lt;", "<"), ("#gt;", ">"), ("#124;", "|"), ("#amp;", "&"),
                                 ("#35;", "#")):
                text = text.replace(entity, char)
            shown.add(re.sub(r" ×\d+$", "", text))
        elif m := re.fullmatch(r'(n\d+) (-->|-\.->)(\|"[^"]*"\|)? (n\d+)', s):
            assert m[1] in declared and m[4] in declared, s
        else:
            assert s.startswith(("classDef ", "class ", "linkStyle ")), s
    assert depth == 0
    assert declared == {n.id for n in view.nodes}
    assert shown == {n.label for n in view.nodes}  # the labels, entities decoded


# --------------------------------------------------------------------------- the lesson's picture


def test_lesson_svg_draws_both_paths_with_local_derivatives(cli):
    need_dot()
    code, out, err = cli("graph", LESSON, "--format", "svg", "--highlight", "w")
    assert code == 0, err
    root = ET.fromstring(out)
    groups = {g.get("id"): g for g in root.iter(f"{SVG}g")}
    texts = svg_texts(out)
    for label in ("x1", "x2", "w", "(x1 + w)", "(x2 + w)", "y"):
        assert label in texts
    red = {gid for gid, g in groups.items() if g.get("class") == "edge"
           and any(p.get("stroke") == "#d62728" for p in g.iter(f"{SVG}path"))}
    data = json.loads(cli("graph", LESSON, "--json", "--highlight", "w")[1])
    by_label = {n["id"]: n["label"] for n in data["nodes"]}
    drawn = {(by_label[e["source"]], by_label[e["target"]]) for e in data["edges"] if e["id"] in red}
    assert drawn == {("w", "(x1 + w)"), ("w", "(x2 + w)"), ("(x1 + w)", "y"), ("(x2 + w)", "y")}
    labels = " ".join(texts)
    assert "∂y/∂(x1 + w) = (x2 + w)" in labels and "∂y/∂(x2 + w) = (x1 + w)" in labels
    assert "∂(x1 + w)/∂w = 1" in labels and "2 paths from y to w" in labels


def test_lesson_json_numeric_and_symbolic(cli):
    code, out, err = cli("graph", LESSON, "--json", "--highlight", "w", "--at", "x1=1", "--at", "x2=2",
                         "--at", "w=3")
    assert code == 0, err
    data = json.loads(out)
    nodes = {n["label"]: n for n in data["nodes"]}
    assert set(nodes) == {"x1", "x2", "w", "(x1 + w)", "(x2 + w)", "y"}
    assert nodes["w"]["kind"] == "input" and nodes["y"]["value"] == {"value": 20.0}
    ops = {(nodes_by_id(data)[e["source"]], nodes_by_id(data)[e["target"]]): e["op"] for e in data["edges"]}
    assert ops[("x1", "(x1 + w)")] == "+" and ops[("(x1 + w)", "y")] == "*"  # data flows operand -> result
    h = data["highlight"]
    assert h["path_count"] == 2 and h["gradient"] == "9" and h["symbolic"] == "(x2 + w) + (x1 + w)"
    assert sorted(p["contribution"] for p in h["paths"]) == ["4", "5"]
    assert "∂y/∂(x1 + w) = (x2 + w) = 5" in h["edge_labels"].values()


def nodes_by_id(data) -> dict:
    return {n["id"]: n["label"] for n in data["nodes"]}


def test_dot_parses_and_mermaid_is_a_flowchart(cli):
    need_dot()
    code, out, _ = cli("graph", LESSON, "--format", "dot", "--highlight", "w")
    assert code == 0 and out.startswith("digraph cgtool {")
    assert subprocess.run(["dot", "-Tsvg"], input=out.encode(), capture_output=True).returncode == 0
    code, out, _ = cli("graph", LESSON, "--format", "mermaid", "--highlight", "w")
    assert code == 0
    check_mermaid(out, cgtool.graph(LESSON))
    assert "linkStyle" in out and "-->|\"∂y/∂(x1 + w) = (x2 + w)\"|" in out


# --------------------------------------------------------------------------- models: names as cgtool paths has them


def test_fancy_mlp_labels_are_the_users_names_and_the_paths_of_cgtool_paths(cli):
    data = json.loads(cli("graph", CONFIGS / "fancy_mlp.yaml", "--json", "--highlight", "linear.weight")[1])
    nodes = {n["label"]: n for n in data["nodes"]}
    assert {"x", "linear#1", "linear#2", "linear.weight", "linear.bias", "rand_weight", "x#2"} <= set(nodes)
    assert nodes["linear.weight"]["kind"] == "parameter" and nodes["linear.weight"]["shape"] == [20, 20]
    assert nodes["linear.weight"]["trainable"] is True
    assert nodes["rand_weight"]["kind"] == "constant" and nodes["rand_weight"]["trainable"] is False
    assert nodes["x"]["kind"] == "input" and nodes["linear#2"]["kind"] == "module"
    assert nodes["x#2"]["loc"].startswith(str(CONFIGS / "fancy_mlp.yaml") + ":12") or \
        nodes["x#2"]["loc"].endswith("fancy_mlp.yaml:12:7")
    paths = json.loads(cli("paths", CONFIGS / "fancy_mlp.yaml", "--wrt", "linear.weight", "--json")[1])
    h = data["highlight"]
    assert h["path_count"] == paths["path_count"] == 2
    assert sorted(p["nodes"] for p in h["paths"]) == sorted(p["nodes"] for p in paths["paths"])
    on = {nodes_by_id(data)[i] for i in h["nodes"]}
    assert on == {label for p in paths["paths"] for label in p["nodes"]}


def test_op_level_draws_every_operation(cli):
    module = json.loads(cli("graph", CONFIGS / "fancy_mlp.yaml", "--json")[1])
    op = json.loads(cli("graph", CONFIGS / "fancy_mlp.yaml", "--json", "--level", "op")[1])
    assert len(op["nodes"]) > len(module["nodes"]) and op["level"] == "op"
    assert {n["label"] for n in module["nodes"]} <= {n["label"] for n in op["nodes"]}
    assert any(n["label"].startswith("linear#1/") for n in op["nodes"])  # inside the call: owner/op


def test_data_dependent_control_flow_and_a_scaled_input(cli, tmp_path):
    code, out, _ = cli("graph", CONFIGS / "fancy_mlp.yaml")
    assert code == 0
    assert "data-dependent control flow" in out and "while norm(x) > 1" in out
    small = json.loads(cli("graph", CONFIGS / "fancy_mlp.yaml", "--json")[1])
    torch.manual_seed(0)
    torch.save(torch.randn(2, 20) * 1000, tmp_path / "big.pt")
    big = json.loads(cli("graph", CONFIGS / "fancy_mlp.yaml", "--json", "-i", f"x={tmp_path / 'big.pt'}")[1])
    assert small["data_dependent"] and big["data_dependent"]
    loop = lambda d: next(c for c in d["control_flow"] if c["kind"] == "while")  # noqa: E731
    assert loop(big)["held"] > loop(small)["held"]
    # each turn of the loop is one more x / 2, a held `if` one more x * 10
    held = lambda d: sum(c["held"] for c in d["control_flow"])  # noqa: E731
    assert big["values"] - small["values"] == held(big) - held(small) > 0
    assert len(big["nodes"]) > len(small["nodes"])
    code, out, _ = cli("graph", CONFIGS / "fancy_mlp.yaml", "-i", f"x={tmp_path / 'big.pt'}")
    assert f"graph ({big['values']} values) is for this input" in " ".join(out.split())
    static = json.loads(cli("graph", CONFIGS / "mlp.yaml", "--json")[1])
    assert not static["data_dependent"] and static["control_flow"] == []


# --------------------------------------------------------------------------- large graphs


def test_repeated_blocks_fold_into_one_node_unless_expand(cli):
    folded = json.loads(cli("graph", CONFIGS / "gpt2_small.yaml", "--device", "meta", "--json")[1])
    blocks = [n for n in folded["nodes"] if n["repeat"]]
    assert [(n["label"], n["repeat"]) for n in blocks] == [("h.0…11", 12)]
    assert blocks[0]["members"] == [f"h.{i}#1" for i in range(12)]
    label = nodes_by_id(folded)
    # token ids carry no gradient, and are drawn all the same: a data edge into the embedding
    assert [(label[e["source"]], e["differentiable"]) for e in folded["edges"] if label[e["target"]] == "wte#1"] \
        == [("wte.weight", True), ("idx", False)]
    assert folded["title"] == "GPT2 (" + str(CONFIGS / "gpt2_small.yaml") + ")"
    code, out, err = cli("graph", CONFIGS / "gpt2_small.yaml", "--device", "meta", "--json", "--expand",
                         "--arg", "layers=2")
    assert code == 0, err
    labels = {n["label"] for n in json.loads(out)["nodes"]}
    assert {"h.0#1", "h.1#1"} <= labels and not any(n["repeat"] for n in json.loads(out)["nodes"])


def test_depth_folds_modules_below_it(cli):
    full = json.loads(cli("graph", CONFIGS / "resnet_small.yaml", "--device", "meta", "--json")[1])
    one = json.loads(cli("graph", CONFIGS / "resnet_small.yaml", "--device", "meta", "--json", "--depth", "1")[1])
    assert len(one["nodes"]) < len(full["nodes"]) and one["groups"] == []
    modules = [n for n in one["nodes"] if n["kind"] == "module"]
    assert {n["label"] for n in modules} == {"stem#1", "stage1#1", "stage2#1", "stage3#1", "pool#1", "fc#1"}
    assert all("." not in n["label"] for n in one["nodes"] if n["kind"] != "parameter")
    assert next(n for n in modules if n["label"] == "stage1#1")["folded"] > 10


def test_too_large_a_graph_is_refused_with_a_hint(cli):
    code, out, err = cli("graph", CONFIGS / "resnet110.yaml", "--device", "meta", "--expand")
    assert code == 1 and out == ""
    assert re.search(r"error: --max-nodes: the graph has [\d,]+ nodes, over the limit of 400", err)
    assert "--depth 1" in err and "--expand" in err
    code, _, err = cli("graph", CONFIGS / "mlp.yaml", "--max-nodes", "5")
    assert code == 1 and "the graph has 8 nodes, over the limit of 5" in err and "--max-nodes 8" in err
    assert cli("graph", CONFIGS / "mlp.yaml", "--max-nodes", "0", "--format", "json")[0] == 0  # 0: no limit


# --------------------------------------------------------------------------- files and errors


def test_output_file_format_from_suffix_written_atomically(cli, tmp_path):
    target = tmp_path / "g.mmd"
    code, out, _ = cli("graph", LESSON, "-o", target)
    assert code == 0 and f"wrote {target} (mermaid" in out
    assert target.read_text().startswith("flowchart LR")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.mmd"]  # no temporary file left behind
    code, _, err = cli("graph", LESSON, "-o", tmp_path / "g.xyz")
    assert code == 1 and "cannot tell the format from the suffix '.xyz'" in err and "--format" in err
    code, _, err = cli("graph", LESSON, "-o", tmp_path / "nowhere" / "g.dot")
    assert code == 1 and "no such folder" in err


def test_a_bad_format_is_a_usage_error(cli):
    code, out, err = cli("graph", LESSON, "--format", "xml")
    assert code == 2 and out == ""
    assert err.splitlines() == ["error: --format: 'xml' is not a format",
                                "  hint: choose one of text, dot, mermaid, json, svg, png, html"]
    code, _, err = cli("graph", LESSON, "--format", "svg", "--json")
    assert code == 2 and "--json and --format svg disagree" in err


def test_missing_dot_names_the_package_and_other_formats_still_work(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without Graphviz
    for fmt in ("svg", "png", "html"):
        code, out, err = cli("graph", LESSON, "--format", fmt)
        assert code == 1 and out == ""
        assert "Graphviz's `dot` program" in err and "apt-get install graphviz" in err
        assert len(err.strip().splitlines()) == 2  # the error and its hint
    for fmt in ("text", "dot", "mermaid", "json"):
        assert cli("graph", LESSON, "--format", fmt)[0] == 0


def test_unknown_names_and_bad_expressions_are_one_line_errors(cli):
    code, _, err = cli("graph", CONFIGS / "fancy_mlp.yaml", "--highlight", "linear.wieght")
    assert code == 1 and "no value named 'linear.wieght'" in err and "linear.weight" in err
    code, _, err = cli("graph", "y = (x1 + ", "--format", "text")
    assert code == 1 and err.startswith("error: <expr>:1") and "Traceback" not in err
    code, _, err = cli("graph", LESSON, "--highlight", "v")
    assert code == 1 and "no value named 'v'" in err
    code, _, err = cli("graph", "no_such_file.yaml")
    assert code == 1 and "error:" in err  # not a file: read as an expression, whose leaf has no value


def test_spec_from_stdin(cli):
    code, out, err = cli("graph", "-", "--json", input=(CONFIGS / "mlp.yaml").read_text())
    assert code == 0, err
    assert {"hidden#1", "act#1", "output#1"} <= {n["label"] for n in json.loads(out)["nodes"]}


def test_graph_help_does_not_import_torch():
    code = ("import sys\nfrom cgtool.cli import main\nsys.argv = ['cgtool', 'graph', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"})
    assert "--highlight" in proc.stdout and proc.stdout.strip().endswith("False")


# --------------------------------------------------------------------------- golden outputs

GOLDEN = ROOT / "tests" / "golden" / "graph"  # not *.txt: tests/test_golden.py owns those
GOLDEN_CASES = {
    "lesson.text": [LESSON, "--highlight", "w", "--at", "x1=1", "--at", "x2=2", "--at", "w=3"],
    "lesson.dot": [LESSON, "--highlight", "w", "--format", "dot"],
    "lesson.mmd": [LESSON, "--highlight", "w", "--format", "mermaid"],
    "fancy_mlp.text": ["configs/fancy_mlp.yaml", "--highlight", "linear.weight"],
    "fancy_mlp.dot": ["configs/fancy_mlp.yaml", "--format", "dot"],
    "nest_mlp.dot": ["configs/nest_mlp.yaml", "--format", "dot"],
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_output(name, update_golden, monkeypatch):
    """What the user sees, exactly (width 100, no colour); `pytest --update-golden` rewrites tests/golden/graph/."""
    from typer.testing import CliRunner

    from cgtool.cli import app

    monkeypatch.chdir(ROOT)
    r = CliRunner().invoke(app, ["graph", *GOLDEN_CASES[name]], env={"COLUMNS": "100", "NO_COLOR": "1",
                                                                       "TERM": "dumb"})
    assert r.exit_code == 0, r.stderr
    path = GOLDEN / name
    if update_golden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(r.stdout)
    assert r.stdout == path.read_text(), f"differs from tests/golden/graph/{name} (--update-golden rewrites it)"


def test_an_operand_read_twice_is_two_edges_and_two_paths(cli):
    data = json.loads(cli("graph", "y = w * w", "--at", "w=3", "--highlight", "w", "--json")[1])
    assert [(e["slot"], e["highlighted"], e["label"]) for e in data["edges"]] == \
        [(0, True, "∂y/∂w = w = 3"), (1, True, "∂y/∂w = w = 3")]
    assert data["highlight"]["path_count"] == 2 and data["highlight"]["gradient"] == "6"


def test_control_flow_of_an_expression_is_counted(cli):
    data = json.loads(cli("graph", "y = x\nwhile y < 10:\n    y = y * x", "--at", "x=2", "--json")[1])
    assert data["data_dependent"] and data["control_flow"] == [
        {"kind": "while", "text": "y < 10", "loc": "<expr>:2:7", "runs": 4, "held": 3}]
    assert [n["label"] for n in data["nodes"]] == ["x", "y#2", "y#3", "y#4"]
    more = json.loads(cli("graph", "y = x\nwhile y < 10:\n    y = y * x", "--at", "x=1.5", "--json")[1])
    assert len(more["nodes"]) == 1 + more["control_flow"][0]["held"] > len(data["nodes"])  # x, then one y per turn


def test_static_draws_the_captured_program_or_says_which_line_prevents_it(cli):
    code, out, err = cli("graph", CONFIGS / "mlp.yaml", "--static", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["capturable"] is True and data["level"] == "op"
    assert {"x", "hidden.weight", "output.bias"} <= {n["label"] for n in data["nodes"]}
    code, out, err = cli("graph", CONFIGS / "fancy_mlp.yaml", "--static")
    assert code == 0 and "no static graph" in out and "fancy_mlp.yaml:14" in out and "while norm(x) > 1:" in out
    code, _, err = cli("graph", CONFIGS / "mlp.yaml", "--static", "--highlight", "x")
    assert code == 2 and "--highlight is for the dynamic graph" in err
    code, _, err = cli("graph", LESSON, "--static")
    assert code == 1 and "an expression has only its dynamic graph" in err
