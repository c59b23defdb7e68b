"""Screenshots for the README: the lesson's graph (PNG, by cgtool itself) and FancyMLP's page in Chromium.

    .venv/bin/python scripts/graph_screenshots.py      # writes docs/img/*.png

Needs Graphviz's dot and Chromium (Debian packages graphviz, chromium) and Playwright's Python package."""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"
CGTOOL = [sys.executable, "-m", "cgtool"]


def cgtool(*args: str) -> None:
    subprocess.run([*CGTOOL, "graph", *args], check=True, cwd=ROOT)


def main() -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    cgtool("y = (x1 + w) * (x2 + w)", "--highlight", "w", "--at", "x1=1", "--at", "x2=2", "--at", "w=3",
           "-o", str(IMG / "lesson_graph.png"))
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        page_file = pathlib.Path(tmp) / "fancy_mlp.html"
        cgtool("configs/fancy_mlp.yaml", "-o", str(page_file))
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
        page.goto(page_file.as_uri())
        page.wait_for_selector("body[data-ready=yes]")
        weight = page.evaluate("""() => JSON.parse(document.getElementById('cg-data').textContent)
                                   .nodes.find(n => n.label === 'linear.weight').id""")
        page.click(f"#{weight}")
        page.mouse.move(5, 300)  # the hover box off the picture
        page.screenshot(path=str(IMG / "fancy_mlp_page.png"))
        browser.close()
    for name in ("lesson_graph.png", "fancy_mlp_page.png"):
        print(f"wrote docs/img/{name}")


if __name__ == "__main__":
    main()
