"""``oodbench report``: the leaderboard of methods x OOD sets, per backbone, side by side.

Reads only the committed ``metrics/<backbone>.json`` files (no features, no DVC), so it
works in a fresh clone and in CI. Formats: a terminal table, Markdown (for docs and
PR comments) and CSV (for spreadsheets); ``--png`` adds a heatmap figure for the README.

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
import sys
from pathlib import Path

from oodbench.core import params as P
from oodbench.core.errors import DataError
from oodbench.formats import paths
from oodbench.results.metrics import METRIC_NAMES

LOWER_IS_BETTER = {"fpr95", "fpr95_ood_positive"}
SUMMARY_COLUMNS = ("near", "far", "mean")


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


def render(all_metrics: dict[str, dict], metric: str, fmt: str, color: bool = False) -> str:
    header, rows = leaderboard(all_metrics, metric)
    best = best_per_column(rows, metric)

    def cell(value: float | None, col: int, mark: str) -> str:
        if value is None:
            return "-"
        text = f"{100 * value:.2f}"
        return f"{mark}{text}{mark}" if value == best[col - 1] else text

    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        # fractions, unlike the tables' percentages: every column says which
        writer.writerow([header[0], *(f"{name} {metric} (fraction 0-1)" for name in header[1:])])
        writer.writerows([[r[0], *("" if v is None else f"{v:.6f}" for v in r[1:])] for r in rows])
        return buf.getvalue()
    if fmt == "markdown":
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for r in rows:
            lines.append(
                "| "
                + " | ".join([r[0], *(cell(v, i, "**") for i, v in enumerate(r[1:], 1))])
                + " |"
            )
        return "\n".join(lines) + "\n"
    from rich.console import Console
    from rich.table import Table

    arrow = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
    table = Table(title=f"{metric} (%), {arrow}; best per column in bold")
    for name in header:
        table.add_column(name, justify="left" if name == "method" else "right")
    for r in rows:
        table.add_row(
            r[0], *(_rich_cell(cell(v, i, ""), v, best[i - 1]) for i, v in enumerate(r[1:], 1))
        )
    console = Console(
        file=io.StringIO(),
        width=240,
        force_terminal=color,
        color_system="standard" if color else None,  # no escape codes into pipes and files
    )
    console.print(table)
    return console.file.getvalue()


def _rich_cell(text: str, value: float | None, best: float | None) -> str:
    return f"[bold]{text}[/bold]" if value is not None and value == best else text


def counts_note(all_metrics: dict[str, dict]) -> str:
    """One line per backbone: ID val size and accuracy, OOD set sizes (what the numbers rest on)."""
    lines = []
    for backbone, report in all_metrics.items():
        ident = report.get("id", {})
        text = f"{backbone}: ID val n={ident.get('n', '?')}"
        if ident.get("accuracy") is not None:
            text += f", accuracy {100 * ident['accuracy']:.2f}%"
        sizes = ", ".join(f"{k} n={v.get('n', '?')}" for k, v in report.get("ood", {}).items())
        lines.append(text + (f"; OOD {sizes}" if sizes else ""))
    return "\n".join(lines) + "\n"


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
    if fmt == "table":
        print(counts_note(all_metrics), end="")
    elif fmt == "markdown":
        print("\n" + counts_note(all_metrics).replace("\n", "  \n"), end="")
    return all_metrics
