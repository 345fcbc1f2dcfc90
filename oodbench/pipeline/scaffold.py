"""``oodbench new-method NAME``: a commented, working template of a user's own method.

The file it writes is a complete method that passes ``oodbench check-method NAME``
(tests/test_own_method.py runs it through the contract and through ``dvc repro``): the
cosine similarity of a feature to the ID class means. Its params block is added to
params.yaml (``methods.<NAME>``, comments kept), not to ``benchmark.methods``: listing it
there is the user's decision, after which ``oodbench pipeline`` and ``dvc repro`` run it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from oodbench.core import params as P
from oodbench.core.errors import OodbenchError, ParamsError
from oodbench.core.usercode import CodeRef
from oodbench.formats.atomic import write_text

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

TEMPLATE = '''\
"""{name}: an OOD score of your own, benchmarked by oodbench (docs/extending.md).

Written by `oodbench new-method {name}` as a working example to edit: the cosine
similarity of a feature to the ID class means. params.yaml runs it as

    methods:
      {name}:
        method: {path}:{cls}
        k: 1
        center: true

List `{name}` under benchmark.methods, then `oodbench pipeline && dvc repro`. Check it
first with `oodbench check-method {name}`: on synthetic features it tests what the score
stage relies on (one finite float per row, determinism, row blocks, no in-place edits,
NotFittedError before fit, typed hyperparameters). Editing this file (or a project
module it imports) reruns only this method's score stages and what follows from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from oodbench import Detector, FitData, ParamsError


# A dataclass: its fields are the hyperparameters, with their defaults. Building it from
# params.yaml checks every field against its type hint (a wrong type is refused naming
# methods.{name}.<field>) and then calls validate() for the values.
@dataclass
class {cls}(Detector):
    """Mean of the k largest cosines between a feature and the ID class means.

    ``center``: subtract the mean ID train feature first (pooled activations are all
    positive, so uncentred cosines are all close to 1)."""

    # What fit() needs besides the classifier: "train" features, their "labels", "val".
    requires = frozenset({{"train", "labels"}})
    # The score reads the features only: the score stage passes logits=None and saves
    # the product x W^T + b (leave True to receive the classifier's float32 logits).
    reads_logits = False
    # The values `oodbench tune BACKBONE {name}` searches (on held-out ID train).
    grid: ClassVar[dict[str, list[Any]]] = {{"k": [1, 2, 3], "center": [True, False]}}
    # Shown by `oodbench methods`.
    paper: ClassVar[str] = ""

    k: int = 1
    center: bool = True

    def validate(self) -> None:
        # values, once the types are checked; name the key in every error
        if self.k < 1:
            raise ParamsError(f"{{self.params_key}}.k: must be >= 1, got {{self.k}}")

    def _fit(self, data: FitData) -> None:
        # ID train features [N, D] float32 and labels [N]; never modify them in place
        train = data.require_train(self.params_key)
        classes = np.unique(train.labels)
        if self.k > len(classes):
            raise ParamsError(
                f"{{self.params_key}}.k: {{self.k}} exceeds the {{len(classes)}} ID classes"
            )
        x = train.features.astype(np.float64)
        # fitted attributes end in "_"; score() refuses to run before fit() sets them
        self.offset_ = x.mean(axis=0) if self.center else np.zeros(x.shape[1])
        means = np.stack([x[train.labels == c].mean(axis=0) for c in classes]) - self.offset_
        self.means_ = means / np.linalg.norm(means, axis=1, keepdims=True)

    def _score(self, features: np.ndarray, logits: np.ndarray | None) -> np.ndarray:
        # One float per row, higher = more in-distribution. A row's score must not depend
        # on the other rows of the call: the stage scores blocks of 4096 rows, in threads.
        x = features.astype(np.float64) - self.offset_
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        cosines = x @ self.means_.T
        return np.sort(cosines, axis=1)[:, -self.k :].mean(axis=1)
'''


def class_name(name: str) -> str:
    """``my_cosine`` -> ``MyCosine``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Method"


def params_block(name: str, reference: str) -> dict[str, Any]:
    return {"method": reference, "k": 1, "center": True}


def new_method(name: str, folder: str = "methods", root: Path = Path()) -> tuple[Path, str, bool]:
    """Write ``<folder>/<name>.py`` under `root` and add ``methods.<name>`` to its
    params.yaml when there is one. Returns (the file, the params block as YAML text,
    whether params.yaml was changed). Refuses, before writing anything, a name that is
    no Python identifier, an existing file, and a params.yaml that has the key already."""
    if not NAME_RE.fullmatch(name):
        raise ParamsError(
            f"new-method: {name!r} is not a valid name (letters, digits and '_', not "
            "starting with a digit): it becomes the params key and the module name"
        )
    cls = class_name(name)
    relative = f"{folder.strip('/')}/{name}.py"
    ref = CodeRef.parse(f"{relative}:{cls}", "new-method")
    path = root / ref.path
    if path.exists():
        raise OodbenchError(
            f"new-method: {ref.path} exists; nothing written (choose another NAME or --dir)"
        )
    params_file = root / P.PARAMS_FILE
    params = P.read_params_file(params_file) if params_file.is_file() else None
    if params is not None and name in (params.get("methods") or {}):
        raise OodbenchError(
            f"new-method: params.yaml already has methods.{name}; nothing written (choose "
            "another NAME)"
        )
    package_init = path.parent / "__init__.py"
    if not path.parent.exists():
        write_text(package_init, "")  # a package of the project's own methods
    write_text(path, TEMPLATE.format(name=name, cls=cls, path=ref.path))
    block = params_block(name, str(ref))
    text = f"methods:\n  {name}:\n" + "".join(
        f"    {k}: {yaml_value(v)}\n" for k, v in block.items()
    )
    if params is None:
        return path, text, False
    from oodbench.results.tune import write_choice

    write_choice(params_file, name, block)
    return path, text, True


def yaml_value(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)
