"""params.yaml -> the resolved spec of every stage (format: oodbench/formats/specs.py).

Each spec holds exactly what changes its consumer's numbers, defaults filled in, so
that writing a default out or changing a speed-only setting reruns nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from oodbench.core import params as P
from oodbench.formats import paths, specs
from oodbench.pipeline import layout
from oodbench.pipeline.benchmark import Benchmark
from oodbench.pipeline.closure import closure

TRAINED_HEADS = ("probe", "plp", "mos")
#: extract settings that change the numbers; core/params.py UNTRACKED_KEYS change none
EXTRACT_KEYS = ("batch_size", "precision", "shard_rows", "decoder")


def resolve(params: dict[str, Any], bench: Benchmark, root: Path = Path()) -> dict[Path, dict]:
    """Every spec file of the benchmark and its content (params already validated)."""
    out: dict[Path, dict] = {}
    images = reads_images(params, bench)
    for dataset in bench.datasets:
        out[specs.dataset_spec(dataset)] = dataset_spec(params, dataset, root, images)
    out[specs.extract_spec()] = extract_spec(params)
    for backbone in bench.backbones:
        model = model_spec(params, bench.features_of(backbone))
        if bench.features_of(backbone) == backbone:  # a sharing backbone extracts nothing
            out[specs.model_spec(backbone)] = model
        out[specs.fc_spec(backbone)] = fc_spec(params, bench, backbone, model)
        out[specs.evaluate_spec(backbone)] = evaluate_spec(params, bench, backbone)
    clone = layout.is_clone(root)
    code = {g: code_spec(e, root, clone) for g, e in code_groups(params, bench, root).items()}
    scoring = scoring_spec(params, bench)
    for method in bench.all_methods:
        features = {
            b: bench.features_of(b) for b in bench.backbones if method in bench.methods_of(b)
        }
        out[specs.method_spec(method)] = score_spec(params, method, scoring, features, code, root)
    out[specs.scoring_spec()] = scoring
    for group, digest in code.items():
        out[specs.code_digest(group)] = digest
    return out


def score_spec(
    params: dict[str, Any],
    key: str,
    scoring: dict[str, Any],
    features: dict[str, str],
    code: dict[str, dict[str, Any]],
    root: Path = Path(),
) -> dict[str, Any]:
    """All the score stage of ``methods.<key>`` reads from the specs, in its one spec
    file: the method (not its hyperparameters: method_spec), the datasets it scores, the
    backbones it scores with the backbone whose features each reads (`features`: itself,
    or the one it shares with ``features:``), and the sha256 of its code digest. One
    dependency instead of three: DVC parses every lock entry at each `dvc status` and
    rewrites a stage's lock file after it runs (README, iteration)."""
    from oodbench.methods.usermethod import code_group

    method = method_spec(params, key, root)
    digest = specs.dumps(code[code_group(key, method["method"])]).encode()
    return {
        **method,
        "scoring": scoring,
        "features": features,
        "code": hashlib.sha256(digest).hexdigest(),
    }


def code_groups(
    params: dict[str, Any], bench: Benchmark, root: Path = Path()
) -> dict[str, list[str]]:
    """The entry files of each group of stages that run the same code: a stage kind, or
    the score stages of one registered method (``score-<name>``: the script + its module),
    or of one key running a user's own class (``score-user-<key>``: the script + the
    user's file and its packages). Outside a clone a kind's entry is the package module
    its stage runs (layout.py ``STAGE_MODULES``) instead of ``stages/<kind>.py``."""
    from oodbench.methods.usermethod import code_group

    def script(kind: str) -> str:
        return layout.stage_entry(kind, root)

    kinds = ("materialize", "extract", "fc", "evaluate", "subspace")
    groups = {kind: [script(kind)] for kind in kinds}
    users = layout.user_methods(params, bench)
    for key in bench.all_methods:
        name = method_name(params, key)
        if key in users:
            entries = layout.entry_files(users[key], root)
            groups[code_group(key, name)] = [script("score"), *entries]
        else:
            groups[code_group(key, name)] = [script("score"), f"oodbench/methods/{name}.py"]
    models = layout.user_models(params, bench)
    for backbone in bench.backbones:  # a user's model file: code of that backbone's stages only
        source = bench.features_of(backbone)
        if source not in models:
            continue
        entries = layout.entry_files(models[source], root)
        if source == backbone:
            groups[extract_group(params, backbone)] = [script("extract"), *entries]
        if fc_loads_model(backbone_block(params, backbone)):
            groups[fc_group(params, bench, backbone)] = [script("fc"), *entries]
    if any(backbone_block(params, b).get("imported") for b in bench.backbones):
        groups[IMPORT] = [script(IMPORT)]
    return groups


#: the stage kind that brings in features extracted elsewhere (oodbench/data/imported.py)
IMPORT = "import_features"


def backbone_block(params: dict[str, Any], backbone: str) -> dict[str, Any]:
    """``backbones.<bb>`` with its preset expanded, merged over the block of the backbone
    whose features it shares: the model and classifier keys its stages read."""
    from oodbench.models.presets import expand

    blocks = params.get("backbones") or {}
    own = blocks.get(backbone)
    own = expand(backbone, own) if isinstance(own, dict) else {}
    source = own.get("features")
    shared = blocks.get(source) if isinstance(source, str) else None
    return {**(expand(source, shared) if isinstance(shared, dict) else {}), **own}


def user_model_file(params: dict[str, Any], backbone: str) -> str | None:
    """The project file ``backbones.<bb>.model`` names (None: no user model, or a
    malformed reference, which the check stage reports)."""
    from oodbench.core.errors import ParamsError
    from oodbench.core.usercode import CodeRef

    ref = backbone_block(params, backbone).get("model")
    try:
        return CodeRef.parse(ref, f"backbones.{backbone}.model").path if ref else None
    except ParamsError:
        return None


def fc_loads_model(block: dict[str, Any]) -> bool:
    """Whether the fc stage builds the model: for its head, or CLIP's projection and text."""
    imported = block.get("imported") is not None
    return (block.get("fc", "head") == "head" and not imported) or "clip" in block


def extract_group(params: dict[str, Any], backbone: str) -> str:
    """The code group of the backbone's extract stages: its own when it runs user code."""
    return f"extract-{backbone}" if user_model_file(params, backbone) else "extract"


def fc_group(params: dict[str, Any], bench: Benchmark, backbone: str) -> str:
    """The code group of the backbone's fc stage: its own when it builds a user's model."""
    source = bench.features_of(backbone)
    own = user_model_file(params, source) and fc_loads_model(backbone_block(params, backbone))
    return f"fc-{backbone}" if own else "fc"


def reads_images(params: dict[str, Any], bench: Benchmark) -> bool:
    """Whether some backbone extracts features from the images (else every backbone is
    imported, and materialize lists the datasets without opening a file)."""
    return any(
        not backbone_block(params, b).get("imported")
        for b in bench.backbones
        if bench.features_of(b) == b
    )


def method_name(params: dict[str, Any], key: str) -> str:
    """The method a ``methods.<key>`` block runs: a registered name or ``path/file.py:Class``."""
    from oodbench.methods.base import method_of

    block = (params.get("methods") or {}).get(key)
    return method_of(key, block if isinstance(block, dict) else None)


def code_spec(entries: list[str], root: Path, clone: bool = True) -> dict[str, Any]:
    """The sha256 of every file the entries run (the closure of their imports).

    Outside a clone the package's entries (``oodbench/...``) are followed in the
    installed package (layout.py ``package_root``) and the user's in the project, and the
    stage dispatcher the commands run is added: so an upgrade of oodbench, like an edit
    in a clone, reruns only the stages whose code it changes."""
    if clone:
        files = {f: sha256(root / f) for f in closure(entries, root)}
        return {"entries": entries, "files": files}
    installed = layout.package_root()
    ours = [e for e in entries if e.startswith(layout.PACKAGE_PREFIX)]
    theirs = [e for e in entries if not e.startswith(layout.PACKAGE_PREFIX)]
    ours += [layout.STAGE_ENTRY] if ours else []  # run_main: how every stage starts and ends
    package = [*closure(ours, installed, only="oodbench"), layout.DISPATCHER]
    files = {f: sha256(installed / f) for f in package}
    files |= {f: sha256(root / f) for f in closure(theirs, root)}
    return {"entries": entries, "files": files}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dataset_spec(
    params: dict[str, Any], dataset: str, root: Path, images: bool = True
) -> dict[str, Any]:
    """`images` False: no backbone reads the images (all imported), so none is opened."""
    block = P.get(params, f"datasets.{dataset}", dict)
    classes = paths.classes_list_path(dataset)
    return {
        "dataset": dataset,
        "root": P.get(params, f"datasets.{dataset}.root", str),
        "skip_bad": bool(block.get("skip_bad", False)),
        "classes_file": classes.as_posix() if (root / classes).is_file() else None,
        **({} if images else {"images": False}),
    }


def extract_spec(params: dict[str, Any]) -> dict[str, Any]:
    from oodbench.models.settings import ExtractSettings

    settings = ExtractSettings.from_params(params.get("extract") or {})
    return {key: getattr(settings, key) for key in EXTRACT_KEYS}


def model_spec(params: dict[str, Any], backbone: str) -> dict[str, Any]:
    """The validated model keys (preset expanded, defaults filled in)."""
    from oodbench.models.backbones import MODEL_KEYS, validate_spec

    cfg = validate_spec(backbone, P.get(params, f"backbones.{backbone}", dict))
    return {key: cfg[key] for key in MODEL_KEYS if cfg[key] is not None}


def fc_spec(
    params: dict[str, Any], bench: Benchmark, backbone: str, model: dict[str, Any]
) -> dict[str, Any]:
    """The classifier's keys, the probe recipe when one is trained, the model when it is
    loaded (a head is read from it; a CLIP backbone keeps its projection and text tower)."""
    from oodbench.heads.probe import ProbeConfig
    from oodbench.models.backbones import validate_spec

    cfg = validate_spec(backbone, P.get(params, f"backbones.{backbone}", dict))
    kind = cfg["fc"]
    trained = kind in TRAINED_HEADS
    probe = ProbeConfig.from_params(params.get("probe") or {})
    return {
        "backbone": backbone,
        "fc": kind,
        "classes": cfg["classes"],
        "groups": cfg["groups"],
        # a head fine-tuned on the ID classes is named after the ID train list's classes
        "id_train": bench.id_train,
        "probe": probe.as_dict() if trained else None,
        "model": model if kind == "head" or "clip" in model else None,
    }


def method_spec(params: dict[str, Any], key: str, root: Path = Path()) -> dict[str, Any]:
    """The method ``methods.<key>`` runs; not its hyperparameters, which the score stage
    reads from params.yaml itself (dvcyaml.py check_params says why). They are checked
    here all the same, so a bad one found by a check run stops `dvc repro` first."""
    from oodbench.methods.base import from_params

    detector = from_params(key, P.get(params, "methods", dict).get(key), root)
    return {"key": key, "method": detector.name}


def scoring_spec(params: dict[str, Any], bench: Benchmark) -> dict[str, Any]:
    from oodbench.data.oneclass import one_class_of

    return {
        "id_train": bench.id_train,
        "id_val": bench.id_val,
        "ood": bench.ood,
        "one_class": one_class_of(params),
    }


def evaluate_spec(params: dict[str, Any], bench: Benchmark, backbone: str) -> dict[str, Any]:
    from oodbench.data.oneclass import one_class_of

    datasets = P.get(params, "datasets", dict)
    return {
        "methods": bench.methods_of(backbone),
        # the backbone whose ID val features give the accuracy (``features:`` shares one)
        "features": bench.features_of(backbone),
        "id_val": bench.id_val,
        "ood": bench.ood,
        "groups": {name: (datasets.get(name) or {}).get("group", "far") for name in bench.ood},
        "one_class": one_class_of(params),
    }
