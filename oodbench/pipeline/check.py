"""The ``check`` stage: validate params.yaml before any work, resolve each stage's spec.

Every other stage depends on a spec it writes, so ``dvc repro`` stops here, in seconds
and with one line naming the key, instead of after hours of extraction (an ID set
listed as OOD, a misspelt method, a missing checkpoint, a dvc.yaml not regenerated
after a new OOD set). A spec whose content does not change reruns nothing downstream
(oodbench/formats/specs.py). It declares every params.yaml section it reads but the
methods' hyperparameters, which each score stage declares and reads itself
(dvcyaml.py check_params): an experiment on one method does not rerun this stage, and
the score stage refuses a bad value before reading any data. The core/params.py and
formats/specs.py docstrings still say that this stage alone reads params.yaml: they
are code of the extract stages, whose digests an edit would change, re-extracting
every user's features for a comment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oodbench.core import params as P
from oodbench.core.errors import ParamsError
from oodbench.formats.checkpoints import damage
from oodbench.formats.specs import SPECS, write_spec
from oodbench.pipeline import dvcyaml, pipelinefiles
from oodbench.pipeline.benchmark import Benchmark
from oodbench.pipeline.resolve import resolve

#: csid: covariate-shifted ID (ImageNet-V2/C/R, CIFAR-10-C), ID in OpenOOD's full-spectrum
#: metrics (oodbench/results/fsood.py), not an OOD set of the standard ones
OOD_GROUPS = ("near", "far", "csid")


def check_benchmark(root: Path = Path()) -> None:
    """Validate params.yaml and dvc.yaml, then write every stage's spec."""
    params = P.read_params_file(root / P.PARAMS_FILE)
    bench = validate(params, root)
    resolved = resolve(params, bench, root)
    check_pipeline_file(params, root)
    for path, spec in resolved.items():
        write_spec(root / path, spec)
    remove_stale_specs(root, set(resolved))


def remove_stale_specs(root: Path, resolved: set[Path]) -> None:
    """Remove the spec files of what the benchmark no longer has (a backbone, method or
    dataset taken out of params.yaml): the folder is the stage's one output, whose hash
    should say what is resolved now, not what ever was."""
    for path in sorted((root / SPECS).rglob("*.json")):
        if path.relative_to(root) not in resolved:
            path.unlink()


def validate(params: dict[str, Any], root: Path = Path()) -> Benchmark:
    """Every check that needs no data: names, sets, backbones, methods, settings."""
    bench = Benchmark.of(params)
    check_datasets(params, bench)
    check_backbones(params, bench, root)
    check_methods(params, bench, root)
    check_settings(params)
    return bench


def check_datasets(params: dict[str, Any], bench: Benchmark) -> None:
    datasets = P.get(params, "datasets", dict)
    for key in ("backbones", "methods", "ood"):
        if not getattr(bench, key):
            raise ParamsError(f"params.yaml: benchmark.{key} is empty; list at least one")
    for where, name in [("id_train", bench.id_train), ("id_val", bench.id_val)] + [
        (f"ood[{i}]", name) for i, name in enumerate(bench.ood)
    ]:
        if name not in datasets:
            raise ParamsError(
                f"params.yaml: benchmark.{where}: dataset {name!r} has no datasets.{name} "
                f"block; known: {', '.join(datasets) or 'none'}"
            )
        P.get(params, f"datasets.{name}.root", str)
    if bench.id_val == bench.id_train:
        raise ParamsError(
            "params.yaml: benchmark.id_val is the ID train set: detectors would be scored "
            "on the rows they were fitted on; use a held-out ID set"
        )
    seen: set[str] = set()
    for i, name in enumerate(bench.ood):
        where = f"params.yaml: benchmark.ood[{i}]"
        if name in (bench.id_train, bench.id_val):
            role = "id_train" if name == bench.id_train else "id_val"
            raise ParamsError(
                f"{where}: {name!r} is benchmark.{role}, an in-distribution set; an OOD set "
                "must hold images of other classes"
            )
        if name in seen:
            raise ParamsError(f"{where}: {name!r} is listed twice")
        seen.add(name)
        group = (datasets[name] or {}).get("group", "far")
        if group not in OOD_GROUPS:
            raise ParamsError(
                f"params.yaml: datasets.{name}.group: must be near or far for an OOD set (or "
                f"csid for covariate-shifted ID, counted as ID in the fsood metrics), got {group!r}"
            )
    csid = [n for n in bench.ood if (datasets[n] or {}).get("group") == "csid"]
    if csid and len(csid) == len(bench.ood):
        raise ParamsError(
            "params.yaml: benchmark.ood lists only csid sets (covariate-shifted ID); add at "
            "least one near or far OOD set"
        )
    if csid and (params.get("benchmark") or {}).get("one_class") is not None:
        raise ParamsError(
            f"params.yaml: benchmark.one_class: the one-class benchmark has no full-spectrum "
            f"metrics; remove the csid sets ({', '.join(csid)}) from benchmark.ood"
        )
    if bench.tune_ood is not None:
        if bench.tune_ood not in datasets:
            raise ParamsError(f"params.yaml: benchmark.tune_ood: no datasets.{bench.tune_ood}")
        if bench.tune_ood in bench.ood:
            raise ParamsError(
                f"params.yaml: benchmark.tune_ood: {bench.tune_ood!r} is a test set (in "
                "benchmark.ood); tune on a dataset that is not reported"
            )
    from oodbench.data.oneclass import one_class_of

    one_class_of(params)


def check_backbones(params: dict[str, Any], bench: Benchmark, root: Path) -> None:
    from oodbench.models.backbones import validate_spec

    backbones = P.get(params, "backbones", dict)
    for name in bench.backbones:
        if name not in backbones:
            raise ParamsError(
                f"params.yaml: benchmark.backbones: {name!r} has no backbones.{name} block; "
                f"known: {', '.join(backbones) or 'none'}"
            )
        cfg = validate_spec(name, backbones[name])
        source = cfg["features"]
        if source is not None and (
            source not in bench.backbones or bench.features_of(source) != source
        ):
            raise ParamsError(
                f"params.yaml: backbones.{name}.features: {source!r} must be another backbone "
                "of benchmark.backbones that extracts its own features"
            )
        for key in ("checkpoint", "groups", "classes", "clip_config"):
            for ref in dvcyaml.local_file(cfg.get(key)):
                if not (root / ref).is_file():
                    raise ParamsError(
                        f"params.yaml: backbones.{name}.{key}: file {ref} not found (paths are "
                        "relative to the project root)"
                    )
        for ref in dvcyaml.local_file(cfg.get("checkpoint")):
            check_checkpoint(root / ref, f"backbones.{name}.checkpoint")
        check_model_files(name, cfg, bench, root)


def check_checkpoint(path: Path, where: str) -> None:
    """A truncated or damaged weights file stops the pipeline here, before DVC removes
    anything of the stages that load it (oodbench/formats/checkpoints.py)."""
    why = damage(path)
    if why is None:
        return
    fix = "copy it again and rerun `dvc repro`"
    dvcfile = tracked_by(path)
    if dvcfile is not None:  # `dvc repro` commits a changed tracked file before any stage
        fix += (
            f"; DVC tracks it, and `dvc repro` has recorded the damaged file in {dvcfile}: "
            f"`git checkout {dvcfile} && dvc checkout {dvcfile}` brings back the committed one"
        )
    raise ParamsError(
        f"params.yaml: {where}: {path} is truncated or damaged ({why}); {fix}. Nothing else "
        "ran: the features and classifier of the last run are untouched"
    )


def tracked_by(path: Path) -> Path | None:
    """The ``.dvc`` file that tracks `path` or a folder holding it (``dvc add``), if any."""
    for item in [path, *path.parents]:
        if item.name and (dvcfile := item.with_name(f"{item.name}.dvc")).is_file():
            return dvcfile
    return None


def check_model_files(name: str, cfg: dict[str, Any], bench: Benchmark, root: Path) -> None:
    """A user's model file exists (it is imported only where the model is built: the
    extract and fc stages); an imported backbone's folder holds every file it needs."""
    from oodbench.core.usercode import CodeRef

    where = f"backbones.{name}"
    if cfg.get("model") is not None:
        code = CodeRef.parse(cfg["model"], f"{where}.model")
        if not (root / code.path).is_file():
            raise ParamsError(
                f"params.yaml: {where}.model: file {code.path} not found (paths are relative "
                "to the project root)"
            )
    if cfg.get("imported") is not None:
        from oodbench.data.imported import check_folder

        check_folder(where, cfg["imported"], bench.datasets, cfg["fc"] == "head", root)


def check_methods(params: dict[str, Any], bench: Benchmark, root: Path = Path()) -> None:
    from oodbench.methods.base import from_params

    blocks = P.get(params, "methods", dict)
    lists = [("benchmark.methods", bench.methods)] + [
        (f"backbones.{b}.methods", bench.backbone_methods[b]) for b in bench.backbone_methods
    ]
    for where, keys in lists:
        for i, key in enumerate(keys):
            if key not in blocks:
                raise ParamsError(
                    f"params.yaml: {where}[{i}]: {key!r} has no methods.{key} block; "
                    "add one (it may be {} for the defaults)"
                )
            from_params(key, blocks[key], root)  # a user's class: imported from `root`


def check_settings(params: dict[str, Any]) -> None:
    from oodbench.heads.probe import ProbeConfig
    from oodbench.models.settings import ExtractSettings

    ExtractSettings.from_params(params.get("extract") or {})
    ProbeConfig.from_params(params.get("probe") or {})


def check_pipeline_file(params: dict[str, Any], root: Path) -> None:
    """dvc.yaml (and pipelines/<bb>/dvc.yaml) must be what ``oodbench pipeline`` writes."""
    built = dvcyaml.build(params, root)
    want = {f: pipelinefiles.render(s) for f, s in built.items()}
    difference = pipelinefiles.drift(pipelinefiles.existing(root), want)
    if difference is not None:
        raise ParamsError(
            f"{P.PIPELINE_FILE}: out of date with params.yaml and the code ({difference}); "
            "run `oodbench pipeline`, then `dvc repro`"
        )
