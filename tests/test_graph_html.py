"""`cgtool graph --format html` in a real headless Chromium (the system's, driven by Playwright):
the page loads with no console errors and no network requests, shows the graph, and its
clicks, search and zoom do what the page says."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from conftest import CONFIGS

LESSON = "y = (x1 + w) * (x2 + w)"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    missing = []
    if _chromium() is None:
        missing.append("Chromium (Debian package chromium)")
    if shutil.which("dot") is None:
        missing.append("Graphviz's dot (Debian package graphviz)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("Playwright's Python package (pip install playwright)")
    if missing:
        if os.environ.get("CGTOOL_REQUIRE_RENDERERS"):
            pytest.fail(f"required here (CGTOOL_REQUIRE_RENDERERS) and missing: {', '.join(missing)}")
        pytest.skip(f"missing: {', '.join(missing)}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page_of(browser, cli, tmp_path):
    """``page_of(*cgtool graph args)``: the page written by cgtool, open in Chromium; console errors and
    requests are recorded on ``page.errors`` / ``page.requests``."""
    opened = []

    def open_(*args):
        target = tmp_path / f"page{len(opened)}.html"
        code, _, err = cli("graph", *args, "-o", target)
        assert code == 0, err
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        opened.append(page)
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(target.as_uri())
        page.wait_for_selector("body[data-ready=yes]", timeout=10_000)
        page.errors, page.requests, page.url_ = errors, requests, target.as_uri()
        page.data = json.loads(page.text_content("#cg-data"))
        return page

    yield open_
    for p in opened:
        p.close()


def highlighted(page) -> set[str]:
    return set(page.eval_on_selector_all(".cg-hl", "els => els.map(e => e.id)"))


def ids_of(data, labels) -> set[str]:
    return {n["id"] for n in data["nodes"] if n["label"] in labels}


def test_lesson_page_loads_offline_and_clicking_w_highlights_exactly_its_two_paths(page_of):
    page = page_of(LESSON, "--at", "x1=1", "--at", "x2=2", "--at", "w=3")
    assert page.errors == []
    assert page.requests == [page.url_]  # the page itself, nothing else
    shown = page.eval_on_selector_all("#canvas g.node text", "els => els.map(e => e.textContent)")
    for label in ("x1", "x2", "w", "(x1 + w)", "(x2 + w)", "y"):
        assert label in shown
    assert highlighted(page) == set()
    page.click("#" + next(n["id"] for n in page.data["nodes"] if n["label"] == "w"))
    data = page.data
    nodes = ids_of(data, {"w", "(x1 + w)", "(x2 + w)", "y"})
    lab = {n["id"]: n["label"] for n in data["nodes"]}
    edges = {e["id"] for e in data["edges"] if (lab[e["source"]], lab[e["target"]]) in
             {("w", "(x1 + w)"), ("w", "(x2 + w)"), ("(x1 + w)", "y"), ("(x2 + w)", "y")}}
    assert len(edges) == 4
    assert highlighted(page) == nodes | edges  # exactly the two paths: no other node or edge
    panel = page.inner_text("#panel")
    assert "∂y/∂w: 2 paths" in panel and "y ← (x1 + w) ← w" in panel and "y ← (x2 + w) ← w" in panel
    assert "contribution 5" in panel and "∂y/∂(x1 + w) = (x2 + w) = 5" in panel
    page.keyboard.press("Escape")
    assert highlighted(page) == set()
    assert page.errors == []


def test_fancy_mlp_page_says_the_graph_depends_on_the_data_and_shows_paths_with_contributions(page_of):
    page = page_of(str(CONFIGS / "fancy_mlp.yaml"))
    assert page.errors == [] and page.requests == [page.url_]
    warning = page.inner_text("#warning")
    assert "Data-dependent control flow" in warning and "while norm(x) > 1" in warning
    assert f"this graph ({page.data['values']} values) is for this input" in warning
    weight = next(n["id"] for n in page.data["nodes"] if n["label"] == "linear.weight")
    page.hover("#" + weight)
    tip = page.inner_text("#tip")
    assert "linear.weight" in tip and "shape [20, 20]" in tip and "norm" in tip
    page.click("#" + weight)
    assert page.inner_text("#panel").count("|contribution| ") == 2
    assert ids_of(page.data, {"linear#1", "linear#2", "linear.weight"}) <= highlighted(page)
    assert not ids_of(page.data, {"rand_weight", "x", "linear.bias"}) & highlighted(page)


def test_search_zoom_and_collapsing_a_module_box(page_of):
    page = page_of(str(CONFIGS / "nest_mlp.yaml"))
    assert page.errors == []
    group = page.data["groups"][0]
    inner = [n["id"] for n in page.data["nodes"] if n["group"] == group["id"] and n["label"] != group["label"]]
    assert inner
    page.click(f"#{group['id']} text")
    hidden = page.eval_on_selector_all(".cg-hidden", "els => els.map(e => e.id)")
    assert set(inner) <= set(hidden)
    assert "collapsed" in page.inner_text("#panel")
    page.click(f"#{group['id']} text")
    assert page.eval_on_selector_all("g.node.cg-hidden", "els => els.length") == 0
    page.fill("#search", "linear")
    assert page.inner_text("#matches") == f"{sum('linear' in n['label'] for n in page.data['nodes'])} matches"
    before = page.get_attribute("#canvas svg", "viewBox")
    page.mouse.move(400, 400)
    page.mouse.wheel(0, -400)
    assert page.get_attribute("#canvas svg", "viewBox") != before
    assert page.errors == []


REAL = {"fancy_mlp.yaml", "nest_mlp.yaml"}  # forwards that branch on tensor values: small real tensors


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_configs_page_loads_without_errors(browser, tmp_path, config):
    import cgtool
    from cgtool.render.graph_html import to_html

    view = cgtool.graph(str(CONFIGS / config), device="cpu" if config in REAL else "meta", page=True)
    html = to_html(view)
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", html), "the page loads nothing from a network"
    target = tmp_path / "page.html"
    target.write_text(html, encoding="utf-8")
    page = browser.new_page(viewport={"width": 1024, "height": 700})
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(target.as_uri())
    page.wait_for_selector("body[data-ready=yes]", timeout=10_000)
    drawn = set(page.eval_on_selector_all("#canvas g.node", "els => els.map(e => e.id)"))
    assert drawn == {n.id for n in view.nodes}
    leaf = next((n for n in view.nodes if n.kind == "parameter"), None)
    if leaf is not None:
        page.click("#" + leaf.id, force=True)
        assert leaf.id in page.eval_on_selector_all(".cg-hl", "els => els.map(e => e.id)") or \
            view.parameters[leaf.label].path_count == 0
    page.close()
    assert errors == [] and requests == [target.as_uri()]


def test_clicking_a_folded_block_draws_it_open_and_the_button_folds_it_again(page_of):
    page = page_of(str(CONFIGS / "gpt2_small.yaml"), "--device", "meta")
    folded = next(n for n in page.data["nodes"] if n["repeat"])
    assert (folded["label"], folded["repeat"]) == ("h.0…11", 12)
    page.click("#" + folded["id"])
    assert page.get_attribute("body", "data-view") == "h.0…11"
    shown = set(page.eval_on_selector_all("#canvas g.node text", "els => els.map(e => e.textContent)"))
    assert {"h.0#1", "h.0.ln_1#1", "h.0.c_attn.weight", "h.0/x"} <= shown  # the first copy, in full
    assert any(t.startswith("h.1…11") for t in shown) and not any(t.startswith("h.0…11") for t in shown)
    variant = page.data["variants"]["h.0…11"]
    weight = next(n["id"] for n in variant["nodes"] if n["label"] == "h.0.c_attn.weight")
    page.click("#" + weight, force=True)
    assert weight in highlighted(page)  # the open copy's parameters have their paths too
    assert "nodes" in page.inner_text("#facts") and str(len(variant["nodes"])) in page.inner_text("#facts")
    page.click("#fold")
    assert page.get_attribute("body", "data-view") == ""
    assert len(page.eval_on_selector_all("#canvas g.node", "els => els")) == len(page.data["nodes"])
    assert page.errors == []
