"""Which model names a library knows, answered without importing the library.

The check stage validates ``backbones.<bb>.timm`` / ``.clip`` before any work, and runs
at every parameter change (``dvc exp run -S ...``), so it must start in a fraction of a
second; importing timm to ask ``timm.is_model`` costs seconds (timm imports torch and
torchvision). The names therefore come from a list cached per library *version*: the
version is read from the installed package's metadata (no import), and the list is made
once per version by a child process that imports the library, then kept in
``<cache>/model-names/<library>-<version>.json``. Installing another version makes a
new list; nothing has to be cleared by hand.

``<cache>`` is ``$OODBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/oodbench``, else
``~/.cache/oodbench``: outside the project, so the temporary copies that queued
experiments run in share it. An unwritable cache only costs the child process again.

    from oodbench.models import names
    names.is_known("timm", "resnet50.a1_in1k")   # tags after the first "." are ignored
    names.known("open_clip")                     # frozenset of architecture names

A new library (say torchvision's model builders) is one entry in ``LIBRARIES``: its
distribution name and the Python code that prints its names as a JSON list.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from oodbench.core.errors import ParamsError


@dataclass(frozen=True)
class Library:
    """A model library: its distribution (for the version), how to list its names, and
    what to tell a user who lacks it."""

    distribution: str
    #: Python source, run in a child process, that prints the names as a JSON list
    lister: str
    install: str


LIBRARIES = {
    # timm.is_model accepts every registered name, deprecated aliases included
    "timm": Library(
        distribution="timm",
        lister=(
            "import json, timm, timm.models\n"
            "names = set(timm.list_models()) | set(timm.models.get_deprecated_models())\n"
            "print(json.dumps(sorted(names)))\n"
        ),
        install="`pip install timm`",
    ),
    "open_clip": Library(
        distribution="open_clip_torch",
        lister="import json, open_clip\nprint(json.dumps(sorted(open_clip.list_models())))\n",
        install="`pip install oodbench[clip]`",
    ),
}


def cache_dir() -> Path:
    """Where the name lists are kept (see the module docstring)."""
    if os.environ.get("OODBENCH_CACHE_DIR"):
        return Path(os.environ["OODBENCH_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "oodbench"


def version(library: str) -> str:
    """The installed version of `library` (a key of ``LIBRARIES``), from its metadata."""
    lib = LIBRARIES[library]
    try:
        return importlib.metadata.version(lib.distribution)
    except importlib.metadata.PackageNotFoundError as err:
        raise ParamsError(f"{library} is not installed: {lib.install}") from err


def cache_file(library: str) -> Path:
    return cache_dir() / "model-names" / f"{library}-{version(library)}.json"


def known(library: str) -> frozenset[str]:
    """Every model name `library` knows, for its installed version."""
    return _known(library, version(library), cache_dir())


def is_known(library: str, name: str) -> bool:
    """Whether `library` knows the architecture of `name` (``arch`` or ``arch.tag``; the
    tag, which names a set of weights, is not checked here). open_clip also knows what
    this process registered itself (``open_clip.add_model_config``), which no cached
    list can: where it is imported already (a stage building the model), it is asked."""
    arch = name.partition(".")[0]
    if arch in known(library):
        return True
    live = sys.modules.get("open_clip") if library == "open_clip" else None
    return live is not None and arch in live.list_models()


@cache  # one read per process and version
def _known(library: str, installed: str, folder: Path) -> frozenset[str]:
    path = folder / "model-names" / f"{library}-{installed}.json"
    try:
        return frozenset(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass  # not made yet for this version (or damaged): make it
    listed = _list_in_child(library)
    _save(path, listed)
    return frozenset(listed)


def _list_in_child(library: str) -> list[str]:
    """The names, from a child process that imports the library (this one stays light)."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", LIBRARIES[library].lister],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        names = json.loads(result.stdout) if result.returncode == 0 else None
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ParamsError(f"could not list the models of {library} ({last})")
    return names


def _save(path: Path, names: list[str]) -> None:
    """Keep the list for the next process; a cache that cannot be written is skipped."""
    from oodbench.formats.atomic import write_text

    with contextlib.suppress(OSError):
        write_text(path, json.dumps(names) + "\n")
