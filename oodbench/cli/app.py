"""The ``oodbench`` command: what a user runs around ``dvc repro``.

``pipeline`` writes dvc.yaml, ``methods`` lists the detectors, ``report`` / ``compare``
print leaderboards, ``predict`` scores one image, ``tune`` searches hyperparameters,
``datalists`` builds file lists, ``import-pkl`` reads reference pickles. The DVC stages
themselves are the scripts in ``stages/``. Libraries are imported inside each command so
that ``oodbench --help`` stays fast (torch and timm load only where they are used).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from oodbench.core.entry import run_main
from oodbench.core.errors import OodbenchError
from oodbench.formats import paths

app = typer.Typer(
    help="oodbench: reproducible OOD-detection benchmark stages (run them through `dvc repro`).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Keep sub-commands even when only one is registered (typer drops it otherwise)."""


app.add_typer(__import__("oodbench.cli.datalists").cli.datalists.app, name="datalists")


@app.command()
def pipeline(
    check: Annotated[
        bool, typer.Option("--check", help="only check that dvc.yaml is up to date (exit 1 if not)")
    ] = False,
) -> None:
    """Write dvc.yaml for params.yaml: stages, their params and their code dependencies."""
    from oodbench.pipeline import dvcyaml

    want = dvcyaml.generate()
    difference = dvcyaml.drift(dvcyaml.existing(), want)
    files = ", ".join(want)
    if check:
        if difference is not None:
            typer.echo(f"pipeline files out of date ({difference})", err=True)
            raise typer.Exit(1)
        typer.echo(f"up to date: {files}")
        return
    if difference is None:
        typer.echo(f"already up to date: {files}")
        return
    dvcyaml.write(Path(), want)
    typer.echo(f"wrote {files} ({difference})")


@app.command()
def methods(
    filter: Annotated[
        str | None, typer.Argument(help="show methods whose key contains this")
    ] = None,
) -> None:
    """List the registered methods: key, class, file, paper and hyperparameters (defaults)."""
    from oodbench.cli.listing import methods_table

    typer.echo(methods_table(filter), nl=False)


def comma_list(text: str | None) -> list[str] | None:
    """``"a, b,"`` -> ``["a", "b"]``; None (the option not given) stays None."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


class ReportFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"


@app.command()
def report(
    metrics_dir: Annotated[
        Path, typer.Option(help="folder of metrics/<backbone>.json")
    ] = paths.METRICS,
    metric: Annotated[
        str, typer.Option(help="auroc, fpr95, fpr95_ood_positive, aupr_in or aupr_out")
    ] = "auroc",
    format: Annotated[
        ReportFormat, typer.Option(help="table, markdown or csv")
    ] = ReportFormat.table,
    backbones: Annotated[
        str | None,
        typer.Option(
            help="comma-separated backbones, side by side (default: benchmark.backbones of "
            "params.yaml, else every metrics file)"
        ),
    ] = None,
    png: Annotated[
        Path | None, typer.Option(help="also write a heatmap summary figure to this PNG")
    ] = None,
) -> None:
    """Print the metrics as a leaderboard (methods x OOD sets, per backbone)."""
    from oodbench.results import report

    all_metrics = report.main(metrics_dir, metric, format.value, comma_list(backbones))
    if png is not None:
        from oodbench.results.figure import write_png

        write_png(all_metrics, metric, png)
        print(f"wrote {png}", file=sys.stderr)


@app.command()
def compare(
    a: Annotated[
        str, typer.Argument(help="BACKBONE or REV:BACKBONE (git revision or DVC experiment)")
    ],
    b: Annotated[str, typer.Argument(help="BACKBONE or REV:BACKBONE")],
    metric: Annotated[
        str | None, typer.Option(help="comma-separated metrics (default: all five)")
    ] = None,
    format: Annotated[
        ReportFormat, typer.Option(help="table, markdown or csv")
    ] = ReportFormat.table,
) -> None:
    """Two backbones' metrics side by side: one row per method x OOD set x metric, A, B, change."""
    from oodbench.results.compare import compare as compare_sides

    typer.echo(compare_sides(a, b, comma_list(metric), format.value), nl=False)


class PredictFormat(str, Enum):
    table = "table"
    json = "json"


@app.command()
def predict(
    image: Annotated[Path, typer.Argument(help="an image file (PNG, JPEG, ...)")],
    backbone: Annotated[
        str | None, typer.Option(help="backbone key (default: the first of benchmark.backbones)")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="comma-separated method keys (default: benchmark.methods)")
    ] = None,
    top: Annotated[int, typer.Option(help="how many top classes to show")] = 5,
    format: Annotated[PredictFormat, typer.Option(help="table or json")] = PredictFormat.table,
) -> None:
    """Single-image demo: per method the score, the 95%-ID threshold and the verdict."""
    from oodbench.core import params as P
    from oodbench.results import predict as single

    if backbone is None:
        backbone = P.get(P.read_params_file(), "benchmark.backbones", list)[0]
    result = single.predict(image, backbone, comma_list(methods), top)
    typer.echo(single.render(result, format.value), nl=False)
    for warning in result.warnings:  # after the answer, each once
        typer.echo(f"warning: {warning}", err=True)


@app.command()
def tune(
    backbone: Annotated[str, typer.Argument(help="backbone key under `backbones:`")],
    method: Annotated[str, typer.Argument(help="method key under `methods:`")],
    ood: Annotated[
        str | None,
        typer.Option(
            help="validation OOD dataset, not in benchmark.ood (default: benchmark.tune_ood)"
        ),
    ] = None,
    holdout: Annotated[
        float,
        typer.Option(
            help="fraction of ID train held out: half is the detector's ID val, half is scored"
        ),
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="seed of the hold-out split")] = 0,
    write: Annotated[
        bool,
        typer.Option(
            help="write the best point into params.yaml when it beats the current setting"
        ),
    ] = True,
) -> None:
    """Grid-search a method's hyperparameters on cached features; write the best to params.yaml."""
    from oodbench.results import tune as search

    result = search.tune(backbone, method, ood, holdout, seed)
    typer.echo(search.render(result), nl=False)
    if write and result.best is not None:
        search.write_choice(paths.PARAMS, method, result.best)
        typer.echo(f"wrote methods.{method}: {result.best} to params.yaml; run `dvc repro`")


@app.command("import-pkl")
def import_pkl(
    pickle_file: Annotated[Path, typer.Argument(help="a ViM / MOODv2 .pkl: features or [W, b]")],
    out: Annotated[
        Path, typer.Option(help="feature directory, or the fc file (*.safetensors) with --fc")
    ],
    fc: Annotated[bool, typer.Option(help="the pickle is the classifier list [W, b]")] = False,
    backbone: Annotated[str, typer.Option(help="backbone name recorded in info.json")] = "",
    dataset: Annotated[str, typer.Option(help="dataset name recorded in info.json")] = "",
    datalist: Annotated[
        Path | None, typer.Option(help="datalist giving each feature row's path and label")
    ] = None,
) -> None:
    """Import a pickled feature array or [W, b] list through a restricted unpickler."""
    from oodbench.data import importpkl

    if fc:
        linear = importpkl.import_fc(pickle_file, out)
        typer.echo(f"import-pkl: {linear.num_classes} x {linear.weight.shape[1]} fc -> {out}")
        return
    if not backbone or not dataset:
        raise OodbenchError("import-pkl: features need --backbone and --dataset names")
    n = importpkl.import_features(pickle_file, out, backbone, dataset, datalist)
    typer.echo(f"import-pkl: {n} feature rows -> {out}")


def main() -> None:
    run_main(app)


if __name__ == "__main__":
    main()
