"""dvc.yaml, generated from params.yaml and the import closures of the stage scripts.

Every stage lists exactly what it reads, so a change reruns only what it can change:
- settings: its resolved spec files (oodbench/formats/specs.py), which the ``check``
  stage writes from params.yaml with exactly the values that change its numbers; and
  the params keys it reads itself: ``check`` the sections it resolves (check_params),
  a score stage its method's block ``methods.<key>``, whose hyperparameters it reads
  from params.yaml, so that an experiment on one method does not rerun ``check``;
- code: one file, ``build/specs/code/<kind>.json``, which the check stage writes with
  the sha256 of each file in the closure of the stage script's ``oodbench`` imports
  (closure.py; a score stage adds its own method's module, so editing
  ``methods/knn.py`` reruns the kNN score stage and nothing else). One small
  dependency instead of thirty files keeps dvc.lock small, which DVC rewrites after
  every stage; a score stage's is not a file of its own but the sha256 of that digest
  in its method's spec, which also holds the datasets it scores (resolve.py score_spec);
- data: the artifacts it reads, one dependency per artifact (a feature folder, the fc
  file, a manifest), and the files params.yaml names (a checkpoint, a groups file);
  except that a score stage reads each of its backbones' feature folder as one
  dependency, and evaluate the folder of each backbone's scores (score_stage says why).
In a project outside a clone of this repository (``oodbench init``), the stages run the
installed package instead of ``stages/*.py`` and a ``package`` stage records its
identity (oodbench/pipeline/layout.py); a user's own method file and the project modules
it imports are code of that method's score stage (and of the check stage).
DVC cannot interpolate ``${backbones.${item}.checkpoint}`` or lists of varying length,
which is why the file is generated rather than written with ``matrix:``. Stage names
are ``<kind>-<dataset>`` in a backbone's file, ``<kind>-<backbone>-<dataset>`` in
dvc.yaml, ``score`` in a method's file (names hold no ``-``; DVC allows no ``@`` in a
stage it did not generate). The check stage also refuses to run while this file is
out of date with params.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oodbench.core import params as P
from oodbench.core.errors import OodbenchError
from oodbench.formats import paths, specs
from oodbench.methods.base import lookup
from oodbench.pipeline import layout
from oodbench.pipeline.benchmark import Benchmark
from oodbench.pipeline.closure import closure
from oodbench.pipeline.resolve import (
    IMPORT,
    backbone_block,
    extract_group,
    fc_group,
    fc_loads_model,
    method_name,
)

TRAINED_HEADS = ("probe", "plp", "mos")
PACKAGE_PREFIX = "package:"
DEMO_ROOT = paths.DEMO_DATA.as_posix()


def script(kind: str) -> str:
    return f"stages/{kind}.py"


def command(kind: str, root: Path) -> str:
    """``python stages/<kind>.py`` in a clone, the installed package's stage elsewhere."""
    return layout.stage_command(kind, root)


def code(root: Path, *entries: str) -> list[str]:
    return closure(entries, root)


def spec(path: Path) -> str:
    return path.as_posix()


def kept(path: str, **options: Any) -> dict[str, dict[str, Any]]:
    """An output DVC leaves in place while its stage runs (``persist``), instead of
    deleting it first: a failing run keeps the last good one, since the stage writes
    the new one beside it and renames it in only when complete. Used for outputs that
    are costly to remake (features, manifests), that a user may have edited (the demo's
    lists), the specs (uncached: no run-cache to lose) and the scores, whose stage is
    the first to read its method's hyperparameters (score_stage). ``persist`` turns
    DVC's run-cache off for the stage, so fc and subspace outputs do not persist: an
    experiment returning to an earlier setting restores them without recomputing."""
    return {path: {"persist": True, **options}}


Stages = dict[str, dict[str, Any]]


def build(params: dict[str, Any], root: Path = Path()) -> dict[str, Stages]:
    """Every stage of the benchmark in params.yaml, by pipeline file, in dependency order:
    ``dvc.yaml`` holds what all backbones share (demo, check, materialize, and evaluate,
    which reads every backbone's scores), ``pipelines/<bb>/dvc.yaml`` one backbone's
    extract, fc and subspace stages, ``pipelines/score-<m>/dvc.yaml`` the score stage of
    method key <m> (method_pipeline)."""
    bench = Benchmark.of(params)
    shared: Stages = {}
    if not layout.is_clone(root):
        shared["package"] = package_stage(root)
    if demo_used(params, bench):
        shared["demo"] = demo_stage(root)
    shared["check"] = check_stage(params, bench, root)
    for dataset in bench.datasets:
        shared[f"materialize-{dataset}"] = materialize_stage(dataset, root)
    shared |= tune_set_stages(params, bench, root)
    shared["evaluate"] = evaluate_stage(bench, root, csid_sets(params, bench))
    files = {paths.PIPELINE.as_posix(): shared}
    for backbone in bench.backbones:
        files[paths.backbone_pipeline(backbone).as_posix()] = backbone_stages(
            params, bench, backbone, root
        )
    for method in bench.all_methods:
        file = method_pipeline(method)
        stage = score_stage(params, bench, method, root)
        files[file.as_posix()] = {"score": {"wdir": up_to_root(file), **stage}}
    return files


def method_pipeline(method: str) -> Path:
    """``pipelines/score-<m>/dvc.yaml``: the score stage of method key <m>, for every
    backbone that runs it, in a file of its own (a backbone's folder name has no '-').
    One stage per method rather than per backbone and method: DVC's own cost grows with
    its stages and their params dependencies (it parses params.yaml once per declared
    params key at every `dvc status`), and an experiment on one method reruns one score
    stage; a lock file each, as DVC rewrites a stage's lock file after running it."""
    return paths.BACKBONE_PIPELINES / f"score-{method}" / "dvc.yaml"


def up_to_root(file: Path) -> str:
    """The ``wdir`` of a stage in `file`: the project root, where every stage runs."""
    return "/".join([".."] * (len(file.parts) - 1))


def backbone_stages(params: dict[str, Any], bench: Benchmark, backbone: str, root: Path) -> Stages:
    """One backbone's stages; they run in the project root (``wdir``), like the others."""
    stages: Stages = {}
    source = bench.features_of(backbone)
    model = model_block(params, source)
    if source == backbone and model.get("imported") is not None:  # features from elsewhere
        for dataset in extracted_datasets(params, bench, backbone, root):
            stages[f"import-{dataset}"] = import_stage(backbone, model["imported"], dataset, root)
    elif source == backbone:  # an entry with `features: <bb>` reuses <bb>'s features
        code_group = extract_group(params, backbone)
        for dataset in extracted_datasets(params, bench, backbone, root):
            stages[f"extract-{dataset}"] = extract_stage(backbone, model, dataset, root, code_group)
    head = backbone_block(params, backbone)
    stages["fc"] = fc_stage(bench, backbone, head, root, fc_group(params, bench, backbone))
    if precomputed_by(params, bench.methods_of(backbone), root):
        stages["subspace"] = subspace_stage(bench, backbone, root)
    up = up_to_root(paths.backbone_pipeline(backbone))
    return {name: {"wdir": up, **stage} for name, stage in stages.items()}


def extracted_datasets(
    params: dict[str, Any], bench: Benchmark, source: str, root: Path = Path()
) -> list[str]:
    """The datasets whose features of `source` some stage of the backbone files reads:
    ID val and the OOD sets (score, evaluate), and ID train only when a backbone reading
    `source`'s features trains its head on it or runs a method that fits on it. An
    extract stage nothing reads would never run under `dvc repro` (which runs the stages
    dvc.yaml needs) and would leave `dvc status` dirty for good."""
    readers = [b for b in bench.backbones if bench.features_of(b) == source]
    train = any(reads_id_train(params, bench, b, root) for b in readers)
    wanted = {bench.id_val, *bench.ood, *([bench.id_train] if train else [])}
    return [d for d in bench.datasets if d in wanted]


def reads_id_train(
    params: dict[str, Any], bench: Benchmark, backbone: str, root: Path = Path()
) -> bool:
    """Whether a stage of `backbone` reads its ID train features: a trained head (the fc
    stage), or a method fitting on train (its score stage; the subspace stage's methods)."""
    head = backbone_block(params, backbone)
    trained = head.get("fc", "head") in TRAINED_HEADS
    return trained or any(
        reads_train(method_name(params, m), f"methods.{m}", root)
        for m in bench.methods_of(backbone)
    )


def tune_set_stages(params: dict[str, Any], bench: Benchmark, root: Path) -> Stages:
    """``extract-<bb>-<ds>`` of ``benchmark.tune_ood`` for every backbone that extracts.
    Only ``oodbench tune`` reads these features, no stage, so they live in dvc.yaml,
    whose stages `dvc repro` always runs, rather than unread in a backbone's file."""
    stages: Stages = {}
    tune = bench.tune_ood
    for backbone in bench.backbones:
        extracts = bench.features_of(backbone) == backbone
        if tune and extracts and tune not in extracted_datasets(params, bench, backbone, root):
            model = model_block(params, backbone)
            if model.get("imported") is not None:
                stage = import_stage(backbone, model["imported"], tune, root)
                stages[f"import-{backbone}-{tune}"] = stage
            else:
                group = extract_group(params, backbone)
                stages[f"extract-{backbone}-{tune}"] = extract_stage(
                    backbone, model, tune, root, group
                )
    return stages


def demo_used(params: dict[str, Any], bench: Benchmark) -> bool:
    """The demo stage runs only when a benchmark dataset is one of its lists under its root."""
    from oodbench.data.demo import DATASETS

    datasets = params.get("datasets") or {}
    return "demo" in params and any(
        d in DATASETS and (datasets.get(d) or {}).get("root") == DEMO_ROOT for d in bench.datasets
    )


def model_block(params: dict[str, Any], backbone: str) -> dict[str, Any]:
    """``backbones.<bb>`` with its preset expanded: which files the stages read."""
    from oodbench.models.presets import expand

    block = (params.get("backbones") or {}).get(backbone)
    return expand(backbone, block) if isinstance(block, dict) else {}


def local_file(ref: Any) -> list[str]:
    """[path] when a params value names a file (not a ``package:`` wheel or timm's list)."""
    if not isinstance(ref, str) or ref.startswith(PACKAGE_PREFIX) or ref == "imagenet":
        return []
    return [ref]


def checkpoints(params: dict[str, Any], bench: Benchmark) -> list[str]:
    """The local weights files of the benchmark's backbones, each once."""
    refs = [model_block(params, b).get("checkpoint") for b in bench.backbones]
    return list(dict.fromkeys(path for ref in refs for path in local_file(ref)))


def package_stage(root: Path) -> dict[str, Any]:
    """Outside a clone: the installed package's identity, checked at every ``dvc repro``
    (DVC cannot see a package); the file changes, and the check stage reruns, only when
    the package does."""
    return {
        "cmd": command("package", root),
        "always_changed": True,
        "outs": [{spec(specs.package_spec()): {"cache": False}}],
    }


def package_code(root: Path, *entries: str) -> list[str]:
    """A stage's own code dependencies: its closure in a clone, else the package's identity."""
    return code(root, *entries) if layout.is_clone(root) else [spec(specs.package_spec())]


def demo_stage(root: Path) -> dict[str, Any]:
    from oodbench.data.demo import DATASETS

    return {
        "cmd": command("demo", root),
        "deps": package_code(root, script("demo")),
        "params": ["demo"],
        # kept: the demo stage refuses to overwrite a list the user edited (data/demo.py)
        "outs": [kept(DEMO_ROOT), *(kept(paths.datalist_path(d).as_posix()) for d in DATASETS)],
    }


def check_stage(params: dict[str, Any], bench: Benchmark, root: Path) -> dict[str, Any]:
    package = ["oodbench", "stages"] if layout.is_clone(root) else [spec(specs.package_spec())]
    return {
        "cmd": command("check", root),
        # the lists decide which classes files exist (DVC refuses dvc.yaml as a dependency);
        # the code: the package, and the user's own files (methods, models) it digests; the
        # checkpoints: a replaced one is checked for damage before a stage loads it
        "deps": [
            paths.DATALISTS.as_posix(),
            *package,
            *layout.all_user_files(params, bench, root),
            *checkpoints(params, bench),
        ],
        "params": check_params(params, bench),
        # the spec files as one folder, not one output each (70 on the demo): DVC parses
        # every output of every stage at each `dvc status` and experiment, and rewrites
        # this lock entry each time the check stage runs (README, iteration). Stages
        # depend on the files in it, each on its own
        "outs": [kept(specs.SPECS.as_posix(), cache=False)],
    }


#: the params.yaml sections the check stage resolves into specs (every other stage reads
#: its own: ``demo`` the demo stage, ``methods.<key>`` a score stage); ``probe`` only
#: when a backbone trains its head
CHECKED_SECTIONS = ("benchmark", "datasets", "backbones", "extract", "probe")


def check_params(params: dict[str, Any], bench: Benchmark) -> list[Any]:
    """The params keys the check stage reads: its sections, and the ``method:`` of each
    benchmark method block that names one (which method a key runs decides its code).
    Not the hyperparameters: each score stage declares its own block, so changing one
    reruns that method's stages only, not ``check`` (about a second of an experiment).
    DVC refuses to run a stage whose declared key is missing, so a section absent from
    params.yaml cannot be declared, and one added later would go unseen: then the stage
    declares the whole file, as if every section were its own. (``probe`` counts only
    with a trained head: a head added to a backbone changes ``backbones``, and the check
    stage then finds this file stale.)"""
    trains = any(backbone_block(params, b).get("fc") in TRAINED_HEADS for b in bench.backbones)
    needed = [s for s in CHECKED_SECTIONS if s != "probe" or trains or s in params]
    if any(section not in params for section in needed):
        return [{P.PARAMS_FILE.as_posix(): None}]
    blocks = params.get("methods") or {}
    named = [
        k for k in bench.all_methods if isinstance(blocks.get(k), dict) and "method" in blocks[k]
    ]
    return [*needed, *(f"methods.{key}.method" for key in named)]


def materialize_stage(dataset: str, root: Path) -> dict[str, Any]:
    classes = paths.classes_list_path(dataset)
    return {
        "cmd": f"{command('materialize', root)} --dataset {dataset}",
        "deps": [
            spec(specs.dataset_spec(dataset)),
            paths.datalist_path(dataset).as_posix(),
            *([classes.as_posix()] if (root / classes).is_file() else []),
            spec(specs.code_digest("materialize")),
        ],
        "outs": [
            kept(paths.manifest_path(dataset).as_posix()),
            kept(paths.classes_record_path(dataset).as_posix()),
        ],
    }


def extract_stage(
    backbone: str, model: dict[str, Any], dataset: str, root: Path, code_group: str = "extract"
) -> dict[str, Any]:
    return {
        "cmd": f"{command('extract', root)} --backbone {backbone} --dataset {dataset}",
        "deps": [
            spec(specs.model_spec(backbone)),
            spec(specs.extract_spec()),
            paths.manifest_path(dataset).as_posix(),
            *local_file(model.get("checkpoint")),
            *local_file(model.get("clip_config")),  # a CLIP architecture file
            spec(specs.code_digest(code_group)),  # with a user's model file (model:)
        ],
        "outs": [kept(paths.features_dir(backbone, dataset).as_posix())],
    }


def import_stage(backbone: str, folder: str, dataset: str, root: Path) -> dict[str, Any]:
    """Features extracted elsewhere (``imported: <folder>``): the dataset's file, checked
    against the manifest's rows and the classifier's width (oodbench/data/imported.py)."""
    from oodbench.data.imported import fc_source, feature_source

    return {
        "cmd": f"{command(IMPORT, root)} --backbone {backbone} --dataset {dataset}",
        "deps": [
            spec(specs.model_spec(backbone)),
            paths.manifest_path(dataset).as_posix(),
            feature_source(folder, dataset, root),
            *([fc] if (fc := fc_source(folder, root)) else []),
            spec(specs.code_digest(IMPORT)),
        ],
        "outs": [kept(paths.features_dir(backbone, dataset).as_posix())],
    }


def features_option(bench: Benchmark, backbone: str) -> str:
    """`` --features <bb>`` on the command line of an entry that shares <bb>'s features."""
    source = bench.features_of(backbone)
    return f" --features {source}" if source != backbone else ""


def fc_stage(
    bench: Benchmark, backbone: str, model: dict[str, Any], root: Path, code_group: str = "fc"
) -> dict[str, Any]:
    kind = model.get("fc", "head")
    trained = kind in TRAINED_HEADS
    loads_model = fc_loads_model(model)  # its head; CLIP: the projection and text tower
    source = bench.features_of(backbone)
    imported = model.get("imported")
    if imported is not None and kind == "head":  # the classifier that came with the features
        from oodbench.data.imported import fc_source

        head_file = [fc_source(imported, root) or f"{imported}/fc.safetensors"]
    else:
        head_file = []
    return {
        "cmd": f"{command('fc', root)} --backbone {backbone}{features_option(bench, backbone)}",
        "deps": [
            spec(specs.fc_spec(backbone)),
            *([paths.features_dir(source, bench.id_train).as_posix()] if trained else []),
            # a probe's outputs, CLIP prompts, MOS classes, a fine-tuned head's names
            paths.classes_record_path(bench.id_train).as_posix(),
            *(local_file(model.get("checkpoint")) if loads_model else []),
            *(local_file(model.get("clip_config")) if loads_model else []),
            *head_file,
            *local_file(model.get("groups")),
            *local_file(model.get("classes")),
            spec(specs.code_digest(code_group)),  # with a user's model file (model:)
        ],
        "outs": [paths.fc_path(backbone).as_posix()],
    }


def precomputed_by(params: dict[str, Any], methods: list[str], root: Path = Path()) -> set[str]:
    """The files computed ahead for these methods (``Detector.precomputed``: the ViM
    subspace, shared by vim and residual)."""
    found = set()
    for key in methods:
        try:
            found.add(lookup(method_name(params, key), f"methods.{key}", root).precomputed)
        except OodbenchError:
            continue  # an unknown method, a broken user file: the check stage says so
    return found - {None}


def subspace_stage(bench: Benchmark, backbone: str, root: Path = Path()) -> dict[str, Any]:
    """The ViM subspace of ID train, once per backbone for its vim and residual stages."""
    source = bench.features_of(backbone)
    option = features_option(bench, backbone)
    return {
        "cmd": f"{command('subspace', root)} --backbone {backbone}{option}",
        "deps": [
            spec(specs.scoring_spec()),
            paths.features_dir(source, bench.id_train).as_posix(),
            paths.fc_path(backbone).as_posix(),
            paths.classes_record_path(bench.id_train).as_posix(),
            spec(specs.code_digest("subspace")),
        ],
        "outs": [paths.subspace_path(backbone).as_posix()],
    }


def reads_train(name: str, where: str | None = None, root: Path = Path()) -> bool:
    """Whether the method fits on ID train (an unknown one: the check stage says so); one
    that fits on ID val only reads the val features every score stage depends on."""
    try:
        return bool(lookup(name, where, root).requires & {"train", "labels"})
    except OodbenchError:
        return True


def score_stage(
    params: dict[str, Any], bench: Benchmark, method: str, root: Path
) -> dict[str, Any]:
    """A method's scores on every backbone that runs it. A backbone's features are one
    dependency, its whole feature folder (every set, the classifier, the ViM subspace),
    not one per set: DVC builds the tree of every folder dependency of every stage in
    each `dvc status` and `dvc repro`, so at the full matrix (11 backbones x 25 methods x
    12 sets) one folder instead of twelve took no-op `dvc status` from 5.7 s to 3.4 s
    (README, Speed). What that costs: a method that does not fit on ID train also reruns
    when only the ID train features change (an edited ID train list), and writes the
    same bytes, so nothing after it reruns; and a change to one backbone's features
    reruns the stage for all of its backbones, the others' scores coming back from the
    score cache (oodbench/results/scorecache.py) without a fit."""
    backbones = [b for b in bench.backbones if method in bench.methods_of(b)]
    deps = [spec(specs.method_spec(method))]  # method, datasets, backbones, code digest
    for backbone in backbones:
        source = bench.features_of(backbone)
        deps.append(paths.backbone_features(source).as_posix())
        if source != backbone:  # an entry sharing `source`'s features: its own head
            deps.append(paths.fc_path(backbone).as_posix())
            if precomputed_by(params, [method], root):
                deps.append(paths.subspace_path(backbone).as_posix())
    deps += [
        paths.classes_record_path(bench.id_train).as_posix(),
        paths.classes_record_path(bench.id_val).as_posix(),
    ]
    return {
        "cmd": f"{command('score', root)} --method {method} --backbones {','.join(backbones)}",
        "deps": list(dict.fromkeys(deps)),
        # the block's hyperparameters: the stage reads them from params.yaml
        "params": [f"methods.{method}"],
        # persist: a bad hyperparameter is refused by this stage, not by check (which an
        # experiment on one method does not rerun), so the last scores stay until then
        "outs": [kept(paths.scores_path(b, method).as_posix()) for b in backbones],
    }


def csid_sets(params: dict[str, Any], bench: Benchmark) -> list[str]:
    """The benchmark's covariate-shifted ID sets (``group: csid``), OpenOOD's full-spectrum
    ID: scored with the OOD sets, counted as ID in the ``fsood`` metrics."""
    datasets = params.get("datasets") or {}
    return [d for d in bench.ood if (datasets.get(d) or {}).get("group") == "csid"]


def evaluate_stage(bench: Benchmark, root: Path, csid: list[str] | None = None) -> dict[str, Any]:
    """Every backbone's metrics and plots and the leaderboard, in one stage (results/
    evaluate.py ``evaluate_benchmark`` says why); as the last stage of dvc.yaml it also
    makes a plain `dvc repro` run every backbone's pipeline file."""
    backbones = bench.backbones
    return {
        "cmd": f"{command('evaluate', root)} --backbones {','.join(backbones)}",
        "deps": list(dict.fromkeys(d for b in backbones for d in evaluate_deps(bench, b, csid))),
        # persist: DVC deletes a stage's outputs before running it; the results a user
        # has stay until evaluate writes new ones (atomically), even if a stage fails.
        # The per-set detail is a plain output, the per-method summaries are the metrics:
        # DVC draws one column per key, so `dvc metrics show` stays six columns wide. One
        # folder of them, not a file each: every declared path costs DVC time in each
        # `dvc exp run` (lock entries, status, locks, git staging)
        "outs": [
            *(
                {paths.metrics_path(b).as_posix(): {"cache": False, "persist": True}}
                for b in backbones
            ),
            {paths.LEADERBOARD.as_posix(): {"cache": False, "persist": True}},
        ],
        "metrics": [
            {paths.summary_dir(b).as_posix(): {"cache": False, "persist": True}} for b in backbones
        ],
        "plots": [plot for b in backbones for plot in evaluate_plots(b)],
    }


def evaluate_deps(bench: Benchmark, backbone: str, csid: list[str] | None) -> list[str]:
    """What evaluating `backbone` reads."""
    source = bench.features_of(backbone)
    return [
        spec(specs.evaluate_spec(backbone)),
        # the folder of its methods' scores, one dependency for all (see score_stage)
        paths.scores_dir(backbone).as_posix(),
        paths.features_dir(source, bench.id_val).as_posix(),
        # ID accuracy over ID + csid (full-spectrum)
        *(paths.features_dir(source, d).as_posix() for d in csid or []),
        paths.fc_path(backbone).as_posix(),
        # skipped-image counts (skip_bad) and ID val class names reach the metrics
        *(paths.manifest_path(d).as_posix() for d in [bench.id_val, *bench.ood]),
        paths.classes_record_path(bench.id_val).as_posix(),
        spec(specs.code_digest("evaluate")),
    ]


def evaluate_plots(backbone: str) -> list[dict[str, Any]]:
    """The backbone's plot folders, as DVC plots: ROC points and score histograms."""
    roc = {
        "persist": True,
        "x": "fpr",
        "y": "tpr",
        "x_label": "FPR (OOD accepted)",
        "y_label": "TPR (ID kept)",
        "template": "simple",
    }
    hist = {"persist": True, "x": "score", "y": "density", "template": "id_ood_histogram"}
    folder = paths.plots_dir(backbone)
    return [{(folder / "roc").as_posix(): roc}, {(folder / "hist").as_posix(): hist}]
