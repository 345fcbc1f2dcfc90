"""The ``oodbench`` command: one sub-command per pipeline stage, called by dvc.yaml.

Stage modules are imported inside each command so that ``oodbench --help`` and the
light stages stay fast (torch and timm load only where they are used).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from stages import layout
from stages.errors import OodbenchError

app = typer.Typer(
    help="oodbench: reproducible OOD-detection benchmark stages (run them through `dvc repro`).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Keep sub-commands even when only one is registered (typer drops it otherwise)."""


app.add_typer(__import__("stages.datalists_cli").datalists_cli.app, name="datalists")


@app.command()
def materialize(
    dataset: Annotated[
        str | None, typer.Option(help="dataset key under `datasets:` in params.yaml")
    ] = None,
    demo: Annotated[
        bool, typer.Option(help="write the embedded demo images and datalists")
    ] = False,
    skip_bad: Annotated[
        bool, typer.Option(help="record undecodable images instead of failing")
    ] = False,
) -> None:
    """Check a datalist and write its manifest (or write the embedded demo data)."""
    from stages import params as P

    params = P.load_params()
    if demo:
        from stages import demo as demo_stage

        demo_stage.run(
            P.get(params, "demo", dict), data_root=layout.DEMO_DATA, lists_dir=layout.DATALISTS
        )
        return
    if dataset is None:
        raise OodbenchError("materialize: pass --dataset NAME or --demo")
    from stages import materialize as stage

    spec = P.get(params, f"datasets.{dataset}", dict)
    stage.run(
        dataset=dataset,
        datalist=layout.datalist_path(dataset),
        root=Path(P.get(params, f"datasets.{dataset}.root", str)),
        out=layout.manifest_path(dataset),
        skip_bad=skip_bad or bool(spec.get("skip_bad", False)),
    )


@app.command()
def extract(
    backbone: Annotated[str, typer.Option(help="backbone key under `backbones:`")],
    dataset: Annotated[str, typer.Option(help="dataset key under `datasets:`")],
) -> None:
    """Run a backbone over a dataset manifest and write feature/logit shards."""
    from stages import extract as stage
    from stages import params as P

    params = P.load_params()
    settings = P.get(params, "extract", dict)
    exit_code = stage.relaunch_under_torchrun(settings)
    if exit_code is not None:
        sys.exit(exit_code)
    stage.run(
        backbone=backbone,
        spec=P.get(params, f"backbones.{backbone}", dict),
        settings=settings,
        manifest=layout.manifest_path(dataset),
        out=layout.features_dir(backbone, dataset),
    )


@app.command()
def fc(backbone: Annotated[str, typer.Option(help="backbone key under `backbones:`")]) -> None:
    """Export the classifier (W, b): the model head, or a probe trained on ID train."""
    from stages import fc as stage

    stage.main(backbone)


@app.command()
def score(
    backbone: Annotated[str, typer.Option(help="backbone key under `backbones:`")],
    method: Annotated[str, typer.Option(help="method key under `methods:`")],
) -> None:
    """Fit one OOD method on ID train and score ID val and every OOD set."""
    from stages import score as stage

    stage.main(backbone, method)


@app.command()
def evaluate(
    backbone: Annotated[str, typer.Option(help="backbone key under `backbones:`")],
) -> None:
    """Compute AUROC / FPR95 / AUPR per method and OOD set; write metrics and plots."""
    from stages import evaluate as stage

    stage.main(backbone)


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
    ] = layout.METRICS,
    metric: Annotated[
        str, typer.Option(help="auroc, fpr95, fpr95_ood_positive, aupr_in or aupr_out")
    ] = "auroc",
    format: Annotated[
        ReportFormat, typer.Option(help="table, markdown or csv")
    ] = ReportFormat.table,
    backbones: Annotated[
        str | None, typer.Option(help="comma-separated backbones, side by side (default: all)")
    ] = None,
    png: Annotated[
        Path | None, typer.Option(help="also write a heatmap summary figure to this PNG")
    ] = None,
) -> None:
    """Print the metrics as a leaderboard (methods x OOD sets, per backbone)."""
    from stages import report as stage

    stage.main(metrics_dir, metric, format.value, comma_list(backbones), png)


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
    from stages import params as P
    from stages import predict as stage

    if backbone is None:
        backbone = P.get(P.load_params(), "benchmark.backbones", list)[0]
    result = stage.predict(image, backbone, comma_list(methods), top)
    typer.echo(stage.render(result, format.value), nl=False)


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
    write: Annotated[bool, typer.Option(help="write the best point into params.yaml")] = True,
) -> None:
    """Grid-search a method's hyperparameters on cached features; write the best to params.yaml."""
    from stages import tune as stage

    result = stage.tune(backbone, method, ood, holdout, seed)
    typer.echo(stage.render(result), nl=False)
    if write and result.best is not None:
        stage.write_choice(layout.PARAMS, method, result.best)
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
    from stages import importpkl

    if fc:
        linear = importpkl.import_fc(pickle_file, out)
        typer.echo(f"import-pkl: {linear.num_classes} x {linear.weight.shape[1]} fc -> {out}")
        return
    if not backbone or not dataset:
        raise OodbenchError("import-pkl: features need --backbone and --dataset names")
    n = importpkl.import_features(pickle_file, out, backbone, dataset, datalist)
    typer.echo(f"import-pkl: {n} feature rows -> {out}")


def main() -> None:
    try:
        app()
    except OodbenchError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished outputs are kept, rerun to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
