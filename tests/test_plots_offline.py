"""`dvc plots show` works offline: the page carries vega, vega-lite and vega-embed itself.

DVC's own page template loads the three libraries from a CDN, so on a machine without
network (or behind a proxy) `dvc_plots/index.html` is blank. The project's template
`.dvc/plots/offline.html` (set in `.dvc/config`) inlines them. Here a small DVC
workspace writes real plot files with oodbench's writer, `dvc plots show` renders them
with the committed config and templates, and the page is checked twice: its structure
(nothing external, the embedded specs hold the CSVs' rows) and its rendering, in
Debian's headless Chromium with every host name lookup failing, against DVC's default
page as the control that must stay blank.
"""

from __future__ import annotations

import html.parser
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oodbench.results.plots import HIST_BINS, ROC_GRID, write_plots
from tests.conftest import ROOT, run
from tests.faults_catalogue import catalogue

LIBRARIES = ["vega@5.33.1", "vega-lite@5.23.0", "vega-embed@6.29.0"]
CHROMIUM = "/usr/bin/chromium"
PLOTS_YAML = """\
plots:
- plots/bb/roc:
    x: fpr
    y: tpr
    template: simple
- plots/bb/hist:
    x: score
    y: density
    template: id_ood_histogram
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A git + DVC repo with the project's .dvc/config and .dvc/plots, real plot files
    (msp: linear scores; knn: distances over 18 decades) and `dvc plots show` run."""
    ws = tmp_path_factory.mktemp("plots")
    run(["git", "init", "-q"], ws)
    run(["dvc", "init", "-q"], ws)
    shutil.copy(ROOT / ".dvc" / "config", ws / ".dvc" / "config")
    shutil.copytree(ROOT / ".dvc" / "plots", ws / ".dvc" / "plots")
    rng = np.random.default_rng(0)
    scores = {
        "msp": {"val": rng.normal(1, 1, 100), "textures": rng.normal(0, 1, 80)},
        "knn": {"val": -np.logspace(3, 5, 100), "textures": -np.logspace(18, 21, 80)},
    }
    write_plots(ws / "plots" / "bb", scores, "val", ["textures"])
    (ws / "dvc.yaml").write_text(PLOTS_YAML)
    run(["dvc", "plots", "show"], ws)
    return ws


class Tags(html.parser.HTMLParser):
    """Every start tag with its attributes, and the text of each script element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs)
            self.scripts.append((self._script, ""))

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None


def parse(page: Path) -> Tags:
    tags = Tags()
    tags.feed(page.read_text(encoding="utf-8"))
    return tags


def test_the_project_config_names_the_offline_template() -> None:
    result = run(["dvc", "config", "plots.html_template"], ROOT)
    assert result.stdout.strip() == "plots/offline.html"  # relative to .dvc/
    template = (ROOT / ".dvc" / "plots" / "offline.html").read_text(encoding="utf-8")
    assert template.count("{plot_divs}") == 1 and "{scripts}" not in template
    assert run(["git", "check-ignore", "-q", "dvc_plots/index.html"], ROOT).returncode == 0


@catalogue(
    "files",
    "`dvc plots show` runs on a machine without network (or behind a proxy)",
    "the page carries vega, vega-lite and vega-embed inline (.dvc/plots/offline.html) "
    "and loads nothing from elsewhere; DVC's own template would be blank",
)
def test_page_references_nothing_external(workspace: Path) -> None:
    page = workspace / "dvc_plots" / "index.html"
    tags = parse(page)
    external = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
    for tag, attrs in tags.tags:
        for name in ("src", "href", "data", "action", "poster", "srcset", "background"):
            value = attrs.get(name)
            assert value is None or not external.match(value), (tag, name, value)
    assert not [a for a, _ in tags.scripts if "src" in a]  # every script is inline
    assert not [t for t, _ in tags.tags if t in ("link", "iframe", "img", "object", "embed")]
    text = page.read_text(encoding="utf-8")
    assert "cdn.jsdelivr.net" not in text and "@import" not in text
    libraries = [a.get("data-library") for a, _ in tags.scripts if a.get("data-library")]
    assert libraries == LIBRARIES
    bodies = {a["data-library"]: body for a, body in tags.scripts if a.get("data-library")}
    assert 'var n="5.23.0"' in bodies["vega-lite@5.23.0"]
    assert '"5.33.1"' in bodies["vega@5.33.1"] and '"6.29.0"' in bodies["vega-embed@6.29.0"]
    assert ").vega={})" in bodies["vega@5.33.1"]  # the UMD builds that define the globals
    assert ").vegaEmbed=" in bodies["vega-embed@6.29.0"]
    assert not [name for name, body in bodies.items() if "sourceMappingURL" in body]


def embedded_specs(page: Path) -> dict[str, dict]:
    """The Vega-Lite spec of every plot on the page, by the plot's title (its file)."""
    specs = {}
    for _, body in parse(page).scripts:
        found = re.search(r"var spec = (\{.*\});\s*vegaEmbed\('#[^']+', spec\);", body, re.S)
        if found:
            spec = json.loads(found.group(1))
            specs[spec["title"]["text"]] = spec
    return specs


def test_embedded_specs_hold_the_plot_files(workspace: Path) -> None:
    specs = embedded_specs(workspace / "dvc_plots" / "index.html")
    assert sorted(specs) == [
        "plots/bb/hist/knn/textures.csv",
        "plots/bb/hist/msp/textures.csv",
        "plots/bb/roc/knn/textures.csv",
        "plots/bb/roc/msp/textures.csv",
    ]
    for method, scale in (("msp", "linear"), ("knn", "-log10(-score)")):
        spec = specs[f"plots/bb/hist/{method}/textures.csv"]
        rows = spec["data"]["values"]
        csv = pd.read_csv(workspace / "plots" / "bb" / "hist" / method / "textures.csv")
        assert len(rows) == len(csv) == 2 * (HIST_BINS + 1)
        assert {r["x_scale"] for r in rows} == {scale}
        np.testing.assert_allclose([float(r["score"]) for r in rows], csv["score"])
        line, note = spec["layer"]
        assert line["encoding"]["color"]["field"] == "sample"
        assert line["encoding"]["x"]["field"] == "score"
        assert note["mark"]["type"] == "text"
        assert note["transform"][1] == {
            "calculate": "'x_scale: ' + datum.x_scale",
            "as": "x_scale_note",
        }
        roc = specs[f"plots/bb/roc/{method}/textures.csv"]["data"]["values"]
        np.testing.assert_allclose(sorted(float(r["fpr"]) for r in roc), ROC_GRID)


def chromium_dom(page: Path, profile: Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium that can resolve no
    host name (so anything fetched from the network fails)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's package (`apt-get install -y chromium`); "
            "the offline plots are checked by rendering them"
        )
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=15000", "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_plots_render_offline_in_chromium(workspace: Path, tmp_path: Path) -> None:
    dom = chromium_dom(workspace / "dvc_plots" / "index.html", tmp_path / "profile")
    canvases = re.findall(r'<canvas width="(\d+)" height="(\d+)" class="marks"', dom)
    assert len(canvases) == 4, dom[-2000:]
    assert all(int(w) > 200 and int(h) > 200 for w, h in canvases)
    assert dom.count('class="vega-embed') == 4
    # the control: DVC's own page, with its CDN scripts, stays blank without network
    from dvc_render.html import PAGE_HTML

    (workspace / "cdn.html").write_text(PAGE_HTML)
    run(["dvc", "plots", "show", "--html-template", "cdn.html", "-o", "cdn_plots"], workspace)
    assert "cdn.jsdelivr.net" in (workspace / "cdn_plots" / "index.html").read_text()
    blank = chromium_dom(workspace / "cdn_plots" / "index.html", tmp_path / "profile2")
    assert "<canvas" not in blank and 'class="vega-embed' not in blank
