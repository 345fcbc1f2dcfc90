"""The ``oodbench`` command: what a user runs around ``dvc repro``.

``init`` makes a benchmark project in any folder, ``pipeline`` writes dvc.yaml,
``methods`` lists the detectors, ``new-method`` / ``check-method`` write and check a
method of one's own, ``report`` / ``compare`` print leaderboards, ``predict`` scores one
image, ``tune`` searches hyperparameters, ``datalists`` builds file lists,
``import-pkl`` reads reference pickles. The DVC stages themselves are the scripts in
``stages/`` of a clone, or ``python -m oodbench.cli.stage`` elsewhere. Libraries are imported inside each command so
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
    from oodbench.pipeline import pipelinefiles

    want = pipelinefiles.generate()
    difference = pipelinefiles.drift(pipelinefiles.existing(), want)
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
    pipelinefiles.write(Path(), want)
    typer.echo(f"wrote {files} ({difference})")


@app.command()
def methods(
    filter: Annotated[
        str | None, typer.Argument(help="show methods whose key contains this")
    ] = None,
) -> None:
    """List the methods: every registered one (key, class, file, paper, defaults), then your
    own from params.yaml.

    Your own method is a class in your project, named in params.yaml as
    `methods.<key>.method: path/file.py:ClassName` (a dataclass subclassing
    oodbench.Detector; no registration, no edit of the package). `oodbench new-method
    NAME` writes a working template and its params block, `oodbench check-method NAME`
    checks it on synthetic features; docs/extending.md explains both.
    """
    from oodbench.cli.listing import methods_table

    typer.echo(methods_table(filter), nl=False)


@app.command("new-method")
def new_method(
    name: Annotated[str, typer.Argument(help="the method's params key and module name")],
    dir: Annotated[
        str, typer.Option("--dir", help="folder of the project's own methods")
    ] = "methods",
) -> None:
    """Write a commented template of your own method (DIR/NAME.py) and its params block.

    The template (cosine similarity to the ID class means) passes `oodbench check-method
    NAME`; edit it into your method. The block is added to params.yaml's `methods:` when
    there is a params.yaml; list NAME under benchmark.methods to run it. An existing file
    or params key is never overwritten.
    """
    from oodbench.pipeline.scaffold import new_method as write_template

    path, block, added = write_template(name, dir)
    typer.echo(f"wrote {path.as_posix()}")
    where = "added to params.yaml" if added else "add to params.yaml"
    typer.echo(f"{where}:\n{block}", nl=False)
    typer.echo(
        f"next: oodbench check-method {name}; list {name} under benchmark.methods, then "
        "oodbench pipeline && dvc repro"
    )


@app.command("check-method")
def check_method(
    key: Annotated[
        str,
        typer.Argument(
            help="a methods.<key> of params.yaml, a registered method, or path/file.py:Class"
        ),
    ],
) -> None:
    """Check a method against the score stage's contract on synthetic features.

    One line per rule (pass, FAIL or skip, and why): builds from its params block,
    NotFittedError before fit, fits, score shape [N] and float dtype, finite,
    deterministic, row blocks equal the whole (unless per_dataset), input arrays not
    modified, bad hyperparameters refused. Exit 1 when a rule fails.
    """
    from oodbench.methods.contract import check_method as run_contract
    from oodbench.methods.contract import render, synthetic

    name, block = contract_target(key)
    data = synthetic()
    results = run_contract(name, block, data=data)
    method = (block or {}).get("method", name)
    typer.echo(render(name, method, data, results), nl=False)
    if any(r.passed is False for r in results):
        raise typer.Exit(1)


def contract_target(key: str) -> tuple[str, dict | None]:
    """(params key, block) to check: params.yaml's ``methods.<key>``, a registered
    method's defaults, or a ``path/file.py:Class`` reference under its file's name."""
    from oodbench.core import params as P
    from oodbench.core.errors import ParamsError
    from oodbench.core.usercode import CodeRef, is_reference
    from oodbench.methods.base import method_modules

    if is_reference(key):
        ref = CodeRef.parse(key, "check-method")
        return Path(ref.path).stem, {"method": key}
    blocks = P.read_params_file().get("methods") if P.PARAMS_FILE.is_file() else None
    if isinstance(blocks, dict) and key in blocks:
        return key, blocks[key]
    if key in method_modules():
        return key, None
    raise ParamsError(
        f"check-method: {key!r} is no methods.{key} block of params.yaml and no registered "
        "method; give a key, a method name or path/file.py:ClassName"
    )


def comma_list(text: str | None) -> list[str] | None:
    """``"a, b,"`` -> ``["a", "b"]``; None (the option not given) stays None."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


class ReportFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"


class ReportLayout(str, Enum):
    sets = "sets"
    openood = "openood"


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
    layout: Annotated[
        ReportLayout,
        typer.Option(
            help="sets: methods x OOD sets for --metric; openood: OpenOOD v1.5's table (near/far "
            "AUROC, FPR@95, ID ACC; full-spectrum too with csid sets)"
        ),
    ] = ReportLayout.sets,
) -> None:
    """Print the metrics as a leaderboard (methods x OOD sets, per backbone)."""
    from oodbench.results import report

    all_metrics = report.main(
        metrics_dir, metric, format.value, comma_list(backbones), layout.value
    )
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


@app.command()
def init(
    target: Annotated[
        str,
        typer.Argument(
            help="a new or empty folder for the project, or `openood` for one of OpenOOD "
            "v1.5's benchmarks"
        ),
    ],
    rest: Annotated[
        list[str] | None,
        typer.Argument(
            help="after openood: BENCHMARK (cifar10, cifar100, imagenet200, imagenet) and DIR"
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="OpenOOD's data folder: benchmark_imglist/, images_classic/, images_largescale/"
        ),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(help="the released checkpoint (default: checkpoints/<bb>/<its name>)"),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="openood: replace an existing project's params.yaml and lists")
    ] = False,
) -> None:
    """Make a benchmark project that runs the installed oodbench (no clone needed).

    `oodbench init DIR`: git + DVC initialised in DIR, params.yaml (the embedded demo: one
    backbone, six methods), datalists/ and the generated dvc.yaml, whose stages run
    `python -m oodbench.cli.stage`. Then `cd DIR && dvc repro`; make it yours with your own
    datasets (README) and methods (`oodbench new-method NAME`, docs/extending.md).

    `oodbench init openood BENCHMARK --data FOLDER [DIR]`: OpenOOD v1.5's benchmark as
    released (datalists, datasets with their near/far/csid groups, the backbone preset of
    its checkpoint) in DIR (default: here): a new project as above, or, in an existing
    project, its params.yaml and lists (replaced only with --force).
    """
    from oodbench.pipeline.project import init_project, is_project, next_steps

    if target != "openood":
        extra = [name for name, value in (("BENCHMARK/DIR", rest), ("--data", data),
                 ("--checkpoint", checkpoint)) if value]  # fmt: skip
        if extra:
            raise OodbenchError(
                f"oodbench init {target}: {extra[0]} is for `oodbench init openood BENCHMARK "
                "--data FOLDER [DIR]`; `oodbench init DIR` takes the folder only"
            )
        typer.echo(next_steps(init_project(Path(target))))
        return
    if not rest or len(rest) > 2:
        raise OodbenchError(
            "oodbench init openood: give BENCHMARK (cifar10, cifar100, imagenet200 or "
            "imagenet) and optionally DIR"
        )
    if data is None:
        raise OodbenchError(
            "oodbench init openood: --data FOLDER (OpenOOD's data folder) is required"
        )
    from oodbench.data.openood_benchmarks import openood_benchmark, write_benchmark

    dest = Path(rest[1]) if len(rest) == 2 else Path()
    params, datalists, notes = openood_benchmark(rest[0], data, dest, checkpoint)
    if is_project(dest):
        write_benchmark(dest, params, datalists, force)
    else:
        init_project(dest, params, {f"{name}.txt": text for name, text in datalists.items()})
    for note in notes:
        typer.echo(f"note: {note}")
    backbone = next(iter(params["backbones"].values()))
    typer.echo(
        f"wrote {dest / 'params.yaml'} and {len(datalists)} datalists; next: put OpenOOD's "
        f"checkpoint at {backbone['checkpoint']}, then `oodbench pipeline` and `dvc repro`"
    )


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
