"""Which backbones the evaluate stage can leave as they are.

The evaluate stage evaluates every backbone in one process (results/evaluate.py
``evaluate_benchmark`` says why), so DVC reruns it when any backbone's scores change. A
backbone whose inputs and outputs are byte for byte what they were right after its last
evaluation is left as it is: so a change to one backbone re-evaluates that backbone
only, as a stage per backbone did, which at ImageNet scale is seconds per backbone.

Its inputs are what its part of the stage reads (dvcyaml.py ``evaluate_deps``): its
spec, the evaluate code digest, its score files, classifier, manifests and class names,
and the ID val (and csid) features, which count by their ``info.json`` (every shard's
sha256) and row index as in the score cache (results/scorecache.py), so comparing them
reads kilobytes, not the features. Its outputs are its metrics, summaries and plots. The pair
of digests is recorded in ``build/evaluated/<bb>.json`` after each evaluation; without
the record (a fresh clone, ``rm -rf build``) the backbone is evaluated again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from oodbench.formats.atomic import write_text
from oodbench.formats.class_names import classes_sidecar
from oodbench.formats.features import file_digest, folder_digest
from oodbench.formats.paths import (
    classes_record_path,
    fc_path,
    features_dir,
    manifest_path,
    metrics_path,
    plots_dir,
    scores_dir,
    summary_dir,
)
from oodbench.formats.specs import code_digest, evaluate_spec

RECORDS = Path("build/evaluated")


def record_path(backbone: str) -> Path:
    return RECORDS / f"{backbone}.json"


def files_digest(paths: list[Path]) -> str:
    """sha256 over each path and its bytes' digest, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.as_posix()}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()


def folder_files(folder: Path) -> list[Path]:
    """Every file under `folder`, sorted, leaving out a killed writer's hidden temp files
    (``.<name>.<random>.tmp``, which .dvcignore leaves out of DVC's hashes too)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def inputs_digest(backbone: str, spec: dict[str, Any]) -> str:
    """What evaluating `backbone` reads, by its evaluate spec (`spec`)."""
    sets = [spec["id_val"], *spec["ood"]]
    csid = [name for name in spec["ood"] if spec["groups"].get(name) == "csid"]
    files = [
        evaluate_spec(backbone),
        code_digest("evaluate"),
        fc_path(backbone),
        *folder_files(scores_dir(backbone)),
        *(manifest_path(name) for name in sets),
        classes_record_path(spec["id_val"]),
        classes_sidecar(manifest_path(spec["id_val"])),
    ]
    features = "".join(
        folder_digest(features_dir(spec["features"], name)) for name in [spec["id_val"], *csid]
    )
    return hashlib.sha256((files_digest(files) + features).encode()).hexdigest()


def outputs_digest(backbone: str) -> str:
    """What evaluating `backbone` writes: its metrics, summaries and plots."""
    files = [
        metrics_path(backbone),
        *folder_files(summary_dir(backbone)),
        *folder_files(plots_dir(backbone)),
    ]
    return files_digest(files)


def unchanged(backbone: str, inputs: str) -> bool:
    """Whether `backbone`'s inputs (their digest `inputs`) and outputs are as after its
    last evaluation."""
    path = record_path(backbone)
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or recorded.get("inputs") != inputs:
        return False
    return recorded.get("outputs") == outputs_digest(backbone)  # a missing file: "absent"


def record(backbone: str, inputs: str) -> None:
    """After evaluating `backbone`: the digests of what it read and what it wrote."""
    entry = {"inputs": inputs, "outputs": outputs_digest(backbone)}
    write_text(record_path(backbone), json.dumps(entry, indent=1) + "\n")
