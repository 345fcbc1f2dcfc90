"""Resolved specs ``build/specs/*.json``: what each stage reads instead of params.yaml.

The ``check`` stage (oodbench/pipeline/check.py) is the only stage that reads
params.yaml: it validates it and writes, per consumer, the settings that change that
consumer's numbers, with every default filled in and in a canonical form (sorted keys).
A stage depends on its spec files, so
- it reruns exactly when a value it uses changes, including a key added or removed
  (DVC does not rerun a stage whose declared params key disappeared), and never for a
  value it does not use (``extract.num_workers``, a backbone's ``fc`` for extraction, a
  default written out explicitly);
- it cannot read a setting DVC does not see.

Files (``<bb>`` a backbone, ``<ds>`` a dataset, ``<m>`` a method key):
  ``datasets/<ds>.json``     root, skip_bad, classes_file               (materialize)
  ``extract.json``           batch_size, precision, shard_rows, decoder (extract)
  ``backbones/<bb>.model.json``  the model: timm|clip, checkpoint, preprocess, ... (extract)
  ``backbones/<bb>.fc.json``     the classifier: kind, classes, groups, probe, model (fc)
  ``backbones/<bb>.evaluate.json``  methods, id_val, ood, groups, one_class (evaluate)
  ``methods/<m>.json``       key, method, hyperparameters, and a copy of scoring.json
                             and the sha256 of the code digest         (score)
  ``scoring.json``           id_train, id_val, ood, one_class           (subspace)
and the code each stage runs, ``code/<kind>.json`` (``code/score-<method>.json``,
``code/score-user-<key>.json`` for a user's own method): the sha256 of every file in the
closure of its imports (oodbench/pipeline/closure.py), so an edit reruns exactly the
stages whose code it touches, through one small dependency. In a project that runs the
installed package (``oodbench init``), ``build/package.json`` (the ``package`` stage)
holds the package's version and digest, which every code digest records instead of its
files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oodbench.core.errors import DataError
from oodbench.formats.atomic import write_text_if_changed

SPECS = Path("build/specs")


def dataset_spec(dataset: str) -> Path:
    return SPECS / "datasets" / f"{dataset}.json"


def extract_spec() -> Path:
    return SPECS / "extract.json"


def model_spec(backbone: str) -> Path:
    return SPECS / "backbones" / f"{backbone}.model.json"


def fc_spec(backbone: str) -> Path:
    return SPECS / "backbones" / f"{backbone}.fc.json"


def method_spec(method: str) -> Path:
    return SPECS / "methods" / f"{method}.json"


def scoring_spec() -> Path:
    return SPECS / "scoring.json"


def evaluate_spec(backbone: str) -> Path:
    return SPECS / "backbones" / f"{backbone}.evaluate.json"


def code_digest(group: str) -> Path:
    """``build/specs/code/<group>.json``: a stage kind (``extract``) or ``score-<method>``."""
    return SPECS / "code" / f"{group}.json"


def package_spec() -> Path:
    """The installed oodbench's identity (oodbench/pipeline/layout.py), outside a clone:
    beside ``build/specs``, the check stage's output folder, not in it (the ``package``
    stage writes it, and DVC refuses an output inside another stage's)."""
    return SPECS.parent / "package.json"


def dumps(spec: dict[str, Any]) -> str:
    """Canonical JSON: the same settings always give the same bytes (and DVC hash)."""
    return json.dumps(spec, sort_keys=True, indent=1) + "\n"


def write_spec(path: Path, spec: dict[str, Any]) -> None:
    """Write `spec` unless the file already holds exactly it (keeps its mtime)."""
    write_text_if_changed(path, dumps(spec))


def read_spec(path: Path, key: str) -> dict[str, Any]:
    """The spec of params key `key` (``methods.knn``) the check stage wrote; a missing
    or unreadable one says how to get it."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"{key}: no resolved settings ({path}); the check stage writes them for every "
            "backbone, dataset and method the benchmark in params.yaml lists: list it there "
            "and run `dvc repro`"
        ) from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable ({err}); rerun `dvc repro`") from err
    if not isinstance(spec, dict):
        raise DataError(f"{path}: expected a JSON object; rerun `dvc repro`")
    return spec
