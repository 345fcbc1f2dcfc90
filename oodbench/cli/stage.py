"""``python -m oodbench.cli.stage KIND [--options]``: the DVC stages of the installed package.

A project made by ``oodbench init`` is not a clone of this repository: it has no
``stages/*.py`` scripts, so its dvc.yaml runs each stage through this module
(oodbench/pipeline/layout.py). The options are the scripts' own (core/entry.py
``STAGE_OPTIONS``), and each kind imports only its own modules, inside its function,
so a stage starts as light as ``python stages/<kind>.py`` does (a score stage without
torch, typer or pandas). The extra kind ``package`` records the installed package's
identity for the check stage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from oodbench.core.entry import STAGE_OPTIONS, run_main


def package(args: argparse.Namespace) -> None:
    from oodbench.pipeline.layout import write_package_identity

    write_package_identity()


def check(args: argparse.Namespace) -> None:
    from oodbench.pipeline.check import check_benchmark

    check_benchmark()


def demo(args: argparse.Namespace) -> None:
    from oodbench.data.demo import write_demo

    write_demo()


def materialize(args: argparse.Namespace) -> None:
    from oodbench.data.materialize import materialize_dataset

    materialize_dataset(args.dataset)


def extract(args: argparse.Namespace) -> None:
    from oodbench.models.extract import extract_dataset

    extract_dataset(args.backbone, args.dataset)


def import_features(args: argparse.Namespace) -> None:
    from oodbench.data.imported import imported_dataset

    imported_dataset(args.backbone, args.dataset)


def fc(args: argparse.Namespace) -> None:
    from oodbench.heads.export import export_classifier

    export_classifier(args.backbone, features=args.features)


def subspace(args: argparse.Namespace) -> None:
    from oodbench.results.subspace import write_subspace

    write_subspace(args.backbone, features=args.features)


def score(args: argparse.Namespace) -> None:
    from oodbench.results.scoring import score_stage

    backbones = [b for b in args.backbones.split(",") if b]
    # a backbone per process: this kind for that backbone alone
    child = [sys.executable, "-m", "oodbench.cli.stage", "score", "--method", args.method]
    score_stage(args.method, backbones, lambda backbone: [*child, "--backbones", backbone])


def evaluate(args: argparse.Namespace) -> None:
    from oodbench.results.evaluate import evaluate_benchmark

    evaluate_benchmark([b for b in args.backbones.split(",") if b])


#: kind -> (what it does, its options, its function); the options as in stages/<kind>.py
STAGES: dict[str, tuple[str, tuple[str, ...], Callable[[argparse.Namespace], None]]] = {
    "package": ("record the installed oodbench's version and digest", (), package),
    "check": ("validate params.yaml and dvc.yaml, write the resolved specs", (), check),
    "demo": ("write the embedded demo's images and datalists", (), demo),
    "materialize": ("datalist -> manifest", ("dataset",), materialize),
    "extract": ("manifest + backbone -> feature shards", ("backbone", "dataset"), extract),
    "import_features": (
        "features extracted elsewhere -> feature shards",
        ("backbone", "dataset"),
        import_features,
    ),
    "fc": ("the classifier W, b", ("backbone", "features"), fc),
    "subspace": ("the ViM subspace of ID train", ("backbone", "features"), subspace),
    "score": (
        "fit one OOD method, score ID val and OOD, on each backbone",
        ("method", "backbones"),
        score,
    ),
    "evaluate": (
        "scores -> every backbone's metrics and plots, and the leaderboard",
        ("backbones",),
        evaluate,
    ),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in STAGES:
        kinds = "\n".join(f"  {kind:<12} {text}" for kind, (text, _, _) in STAGES.items())
        usage = f"usage: python -m oodbench.cli.stage KIND [options]\n\nkinds:\n{kinds}"
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(usage, file=sys.stdout if asked else sys.stderr)
        sys.exit(0 if asked else 2)
    kind, rest = argv[0], argv[1:]
    text, options, function = STAGES[kind]
    parser = argparse.ArgumentParser(prog=f"python -m oodbench.cli.stage {kind}", description=text)
    for name in options:
        help_text, required = STAGE_OPTIONS[name]
        parser.add_argument(f"--{name}", required=required, help=help_text)
    args = parser.parse_args(rest)
    run_main(lambda: function(args))


if __name__ == "__main__":
    main()
