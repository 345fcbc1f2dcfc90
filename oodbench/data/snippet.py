"""``datasets:`` entries for params.yaml, for registry datasets and a user's own lists.

A registry dataset (oodbench/data/registry.py) knows its root and group. A list the
registry does not know (``datalists/<ds>.txt`` made by ``from-folder``,
``import-openood`` or by hand) says less, so its entry is guessed from what is there:

- root: the ``# root: ...`` comment ``from-folder`` writes at the top of its lists, else
  ``data/<ds>``; the guess is kept only when the first listed files exist under it.
  Otherwise the root is the placeholder ``CHANGE-ME`` with a comment saying what to put
  there, which the check stage refuses (no such folder) until it is replaced.
- group: ``id`` when the list has class labels, ``far`` when every label is -1 (OOD),
  with a comment saying to choose ``near`` where that fits.
"""

from __future__ import annotations

from pathlib import Path

from oodbench.core.errors import ParamsError
from oodbench.data import registry as D
from oodbench.data.classes import classes_file_of
from oodbench.data.datalist import parse_datalist
from oodbench.data.folder import recorded_root

PLACEHOLDER_ROOT = "CHANGE-ME"
SAMPLED_FILES = 5  # listed files looked up to confirm a guessed root


def params_snippet(keys: list[str], datalists: Path) -> str:
    """The ``datasets:`` block for `keys` (registry keys or lists in `datalists`)."""
    if not keys:
        raise ParamsError("name at least one dataset; known: " + ", ".join(D.REGISTRY))
    lines = ["datasets:"]
    for key in dict.fromkeys(keys):
        if key in D.REGISTRY:
            lines += D.entry_lines(D.REGISTRY[key])
            continue
        datalist = datalists / f"{key}.txt"
        if not datalist.is_file():
            raise ParamsError(
                f"unknown dataset {key!r}: not in the registry and no {datalist.as_posix()} "
                f"(make it with `oodbench datalists from-folder` or `import-openood`); "
                f"registry: {', '.join(D.REGISTRY)}"
            )
        lines += list_entry(key, datalist)
    return "\n".join(lines) + "\n"


def list_entry(key: str, datalist: Path) -> list[str]:
    """The commented params lines of one user datalist."""
    entries = parse_datalist(datalist)
    labelled = [e.label for e in entries if e.label >= 0]
    classes = classes_file_of(datalist)
    if labelled:
        count = len(set(labelled))
        about = f"{len(entries)} images, {count} classes" + (
            f" (names: {classes.as_posix()})" if classes.is_file() else ""
        )
        group = "id  # labelled: the ID set; an OOD set with its own labels is near or far"
    else:
        about = f"{len(entries)} images, labels -1 (OOD)"
        group = "far  # OOD; write near when it is semantically close to the ID classes"
    sample = [e.path for e in entries[:SAMPLED_FILES]]
    root, how = guess_root(key, datalist, sample)
    return [
        f"  # {datalist.as_posix()}: {about}; not in the registry, so checked here: {how}",
        f"  {key}:",
        f"    root: {root}",
        f"    group: {group}",
    ]


def guess_root(key: str, datalist: Path, sample: list[str]) -> tuple[str, str]:
    """(root, how it was found) for a list's paths; the placeholder when nothing fits."""
    recorded = recorded_root(datalist)
    candidates = [c for c in (recorded, f"data/{key}") if c]
    for candidate in dict.fromkeys(candidates):
        if all((Path(candidate) / rel).is_file() for rel in sample):
            source = "the list's `# root:` line" if candidate == recorded else "guessed"
            return candidate, f"root {source}, its first {len(sample)} listed files exist there"
    tried = " or ".join(dict.fromkeys(candidates))
    placeholder = (
        f"{PLACEHOLDER_ROOT}  # the folder the paths of {datalist.as_posix()} are relative "
        f"to ({sample[0]!r} was not found under {tried})"
    )
    return placeholder, "root unknown, REPLACE the CHANGE-ME placeholder below"
