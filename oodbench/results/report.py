"""``oodbench report``: the leaderboard of methods x OOD sets, per backbone, side by side.

Reads only the committed ``metrics/<backbone>.json`` files (no features, no DVC), so it
works in a fresh clone and in CI. Formats: a terminal table, Markdown (for docs and
PR comments) and CSV (for spreadsheets); ``--png`` adds a heatmap figure for the README.

The terminal table fits the terminal's width (``COLUMNS``, else the terminal, else
``DEFAULT_WIDTH``): one table per backbone, titled with it and its sample counts, so
every header is a plain OOD set name; a backbone with more columns than fit is shown as
several tables of whole columns, each repeating the method column. Markdown and CSV keep
every backbone side by side in one table (``lite0:textures``), for files.

Which backbones: ``--backbones``, else ``benchmark.backbones`` of params.yaml when there
is one (a metrics file left from a backbone since removed from the benchmark is stale
and is named on stderr, not mixed in), else every metrics file. Units: tables show
percentages; the CSV keeps the raw fractions (0..1) for programs, and says so in every
column name.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from oodbench.core import params as P
from oodbench.core.errors import DataError
from oodbench.formats import paths
from oodbench.results.metrics import METRIC_NAMES

if TYPE_CHECKING:
    from rich.table import Table

LOWER_IS_BETTER = {"fpr95", "fpr95_ood_positive"}
SUMMARY_COLUMNS = ("near", "far", "mean")
#: the width of the terminal table when neither COLUMNS nor a terminal says
DEFAULT_WIDTH = 120


def load_all(metrics_dir: Path, backbones: list[str] | None = None) -> dict[str, dict]:
    """Metrics of every backbone in `metrics_dir` (or of `backbones`, in that order)."""
    paths = sorted(metrics_dir.glob("*.json"))
    if backbones:
        paths = [metrics_dir / f"{b}.json" for b in backbones]
    if not paths:
        raise DataError(f"{metrics_dir}: no metrics/<backbone>.json files; run `dvc repro` first")
    out = {}
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: not found; run `dvc repro` for that backbone")
        try:
            out[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: invalid JSON ({err}); rerun `dvc repro`") from err
    return out


def benchmark_backbones(
    metrics_dir: Path, params_file: Path = P.PARAMS_FILE
) -> tuple[list[str] | None, list[str]]:
    """(the backbones to report, the metrics files left out): ``benchmark.backbones`` of
    `params_file` when it has that list, else (None, []) for every file in `metrics_dir`."""
    if not params_file.is_file():
        return None, []
    listed = (P.read_params_file(params_file).get("benchmark") or {}).get("backbones")
    if not isinstance(listed, list) or not listed:
        return None, []
    stale = sorted(p.name for p in metrics_dir.glob("*.json") if p.stem not in set(listed))
    return [str(b) for b in listed], stale


def metric_columns(report: dict) -> list[str]:
    """One backbone's columns: its OOD sets in file order, then near/far/mean.

    The single place the column order is decided, shared by the leaderboard and the
    summary figure (oodbench/results/figure.py) so the two always agree. The first
    method's entries decide, as evaluate writes the same keys for every method.
    """
    first = next(iter(report.get("methods", {}).values()), {})
    sets = [k for k in first if k not in SUMMARY_COLUMNS]
    return sets + [k for k in SUMMARY_COLUMNS if k in first]


def leaderboard(all_metrics: dict[str, dict], metric: str) -> tuple[list[str], list[list]]:
    """Header and rows: one row per method, per backbone the OOD sets then near/far/mean."""
    if metric not in METRIC_NAMES:
        raise DataError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_NAMES)}")
    header = ["method"]
    columns: list[tuple[str, str]] = []
    for backbone, report in all_metrics.items():
        columns += [(backbone, s) for s in metric_columns(report)]
    multi = len(all_metrics) > 1
    header += [f"{b}:{s}" if multi else s for b, s in columns]
    methods = list(dict.fromkeys(m for r in all_metrics.values() for m in r["methods"]))
    rows = []
    for method in methods:
        row: list = [method]
        for backbone, name in columns:
            value = all_metrics[backbone]["methods"].get(method, {}).get(name, {}).get(metric)
            row.append(value)
        rows.append(row)
    return header, rows


def best_per_column(rows: list[list], metric: str) -> list[float | None]:
    """The best value of each numeric column (min for FPR, max otherwise), None if empty."""
    pick = min if metric in LOWER_IS_BETTER else max
    best = []
    for col in range(1, len(rows[0]) if rows else 1):
        values = [r[col] for r in rows if r[col] is not None]
        best.append(pick(values) if values else None)
    return best


def render(
    all_metrics: dict[str, dict],
    metric: str,
    fmt: str,
    color: bool = False,
    width: int | None = None,
) -> str:
    """The leaderboard as ``csv``, ``markdown`` or a terminal ``table`` at most `width`
    characters wide (default: the terminal's, see ``terminal_width``)."""
    if fmt == "table":
        return render_table(all_metrics, metric, width or terminal_width(), color)
    header, rows = leaderboard(all_metrics, metric)
    best = best_per_column(rows, metric)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        # fractions, unlike the tables' percentages: every column says which
        writer.writerow([header[0], *(f"{name} {metric} (fraction 0-1)" for name in header[1:])])
        writer.writerows([[r[0], *("" if v is None else f"{v:.6f}" for v in r[1:])] for r in rows])
        return buf.getvalue()
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        marks = ["**" if v is not None and v == b else "" for v, b in zip(r[1:], best, strict=True)]
        cells = [percent(v, mark) for v, mark in zip(r[1:], marks, strict=True)]
        lines.append("| " + " | ".join([r[0], *cells]) + " |")
    return "\n".join(lines) + "\n"


def percent(value: float | None, mark: str = "") -> str:
    """A fraction as a percentage with two decimals, ``-`` when missing."""
    return "-" if value is None else f"{mark}{100 * value:.2f}{mark}"


def terminal_width() -> int:
    """``COLUMNS``, else the terminal's width, else ``DEFAULT_WIDTH`` (a pipe or file)."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


def render_table(all_metrics: dict[str, dict], metric: str, width: int, color: bool) -> str:
    """One table per backbone (split into tables of whole columns when wider than
    `width`), each titled with the backbone and captioned with its sample counts."""
    from rich.console import Console

    console = Console(
        file=io.StringIO(),
        width=width,
        force_terminal=color,
        color_system="standard" if color else None,  # no escape codes into pipes and files
    )
    arrow = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
    marked = "; best per column in bold" if color else ""  # bold needs a terminal
    console.print(f"{metric} (%), {arrow}{marked}", highlight=False)
    for backbone, report in all_metrics.items():
        header, rows = leaderboard({backbone: report}, metric)
        best = best_per_column(rows, metric)
        parts = column_parts(console, header, rows, width)
        for i, columns in enumerate(parts):
            title = backbone + (f" ({i + 1}/{len(parts)})" if len(parts) > 1 else "")
            console.print()
            console.print(backbone_table(header, rows, best, columns, title))
        console.print(f"{backbone}: {counts_line(report)}", highlight=False)
    return "".join(line.rstrip() + "\n" for line in console.file.getvalue().splitlines())


def backbone_table(
    header: list[str], rows: list[list], best: list, columns: list[int], title: str
) -> Table:
    """The method column and the numeric `columns` (indices into `header`) of one backbone."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_edge=False)
    table.add_column(header[0], justify="left", no_wrap=True)
    for col in columns:
        table.add_column(header[col], justify="right", no_wrap=True)
    for r in rows:
        cells = []
        for col in columns:
            text = percent(r[col])
            top = r[col] is not None and r[col] == best[col - 1]
            cells.append(f"[bold]{text}[/bold]" if top else text)
        table.add_row(r[0], *cells)
    return table


def column_parts(console, header: list[str], rows: list[list], width: int) -> list[list[int]]:
    """The numeric columns (indices into `header`) split into runs whose table fits in
    `width` with the method column; every column whole, none cut or wrapped."""
    from rich.measure import Measurement

    unbounded = console.options.update_width(10**6)  # measure, do not squeeze

    def fits(columns: list[int]) -> bool:
        table = backbone_table(header, rows, [None] * len(header), columns, "")
        return Measurement.get(console, unbounded, table).maximum <= width

    parts: list[list[int]] = []
    for col in range(1, len(header)):
        if parts and fits([*parts[-1], col]):
            parts[-1].append(col)
        else:
            parts.append([col])
    return parts


def counts_line(report: dict) -> str:
    """ID val size and accuracy, OOD set sizes: what one backbone's numbers rest on."""
    ident = report.get("id", {})
    text = f"ID val n={ident.get('n', '?')}"
    if ident.get("accuracy") is not None:
        text += f", accuracy {100 * ident['accuracy']:.2f}%"
    sizes = ", ".join(f"{k} n={v.get('n', '?')}" for k, v in report.get("ood", {}).items())
    return text + (f"; OOD {sizes}" if sizes else "")


def counts_note(all_metrics: dict[str, dict]) -> str:
    """One line per backbone: ID val size and accuracy, OOD set sizes (what the numbers rest on)."""
    return "".join(f"{b}: {counts_line(r)}\n" for b, r in all_metrics.items())


def main(
    metrics_dir: Path,
    metric: str,
    fmt: str,
    backbones: list[str] | None = None,
    layout: str = "sets",
) -> dict[str, dict]:
    """Print the leaderboard; return the metrics it was made from. Without `backbones`,
    the project's metrics folder shows those of ``benchmark.backbones``
    (``benchmark_backbones``); any other folder every file in it. `layout` ``openood``:
    OpenOOD v1.5's table instead (oodbench/results/openood_table.py)."""
    if not backbones and metrics_dir.resolve() == paths.METRICS.resolve():  # the project's
        backbones, stale = benchmark_backbones(metrics_dir)
        if stale:
            names = ", ".join(f"{metrics_dir.as_posix()}/{name}" for name in stale)
            print(
                f"report: left out {names}: not in benchmark.backbones of params.yaml "
                "(stale; name it with --backbones to show it)",
                file=sys.stderr,
            )
    all_metrics = load_all(metrics_dir, backbones)
    if layout == "openood":
        from oodbench.results.openood_table import render as openood_render

        print(openood_render(all_metrics, fmt), end="")
        return all_metrics
    color = fmt == "table" and sys.stdout.isatty()
    print(render(all_metrics, metric, fmt, color=color), end="")
    if fmt == "markdown":  # the table format captions each backbone's table with them
        print("\n" + counts_note(all_metrics).replace("\n", "  \n"), end="")
    return all_metrics
