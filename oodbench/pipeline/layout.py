"""Which kind of project a pipeline is generated for, and what its stages run and depend on.

A benchmark project is one of two kinds, told apart by its root:

- a **clone** of the oodbench repository (``stages/`` and ``oodbench/__init__.py`` in
  the root): stages run ``python stages/<kind>.py``, and their code dependencies are
  the package's own source files in the project (the closures of closure.py);
- any other folder, made by ``oodbench init`` (oodbench/pipeline/project.py): stages
  run the **installed** package, ``python -m oodbench.cli.stage <kind>``, and their code
  digests hold the closures of the package modules those run (:data:`STAGE_MODULES`),
  read in the installed package (:func:`package_root`), not in the project. DVC cannot
  see an installed package, so a small ``package`` stage records its identity (version
  and a digest of its files, :func:`package_identity`) in ``build/package.json`` at
  every ``dvc repro``: an upgrade (or an edit of an editable install) reruns the check
  stage, whose code digests then rerun exactly the stages whose code changed, as an
  edit does in a clone.

In both kinds the user's own files named in params.yaml (``methods.<key>.method:
path/file.py:Class``, ``backbones.<bb>.model: path/file.py:factory``) and the project
modules they import are code dependencies of the stages that run them, and of the
check stage that digests them.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from oodbench.core.errors import ParamsError
from oodbench.core.usercode import CodeRef, is_reference
from oodbench.formats.specs import package_spec, write_spec
from oodbench.pipeline.benchmark import Benchmark
from oodbench.pipeline.closure import closure, packages_of

STAGE_MODULE = "oodbench.cli.stage"
#: the dispatcher a project's stage commands run; part of every code digest outside a clone
DISPATCHER = "oodbench/cli/stage.py"
STAGE_ENTRY = "oodbench/core/entry.py"
PACKAGE_PREFIX = "oodbench/"
#: the package module each stage kind runs (oodbench/cli/stage.py imports it): outside a
#: clone the entry of the kind's code digest, as ``stages/<kind>.py`` is in a clone
STAGE_MODULES = {
    "materialize": "oodbench/data/materialize.py",
    "extract": "oodbench/models/extract.py",
    "fc": "oodbench/heads/export.py",
    "subspace": "oodbench/results/subspace.py",
    "score": "oodbench/results/scoring.py",
    "evaluate": "oodbench/results/evaluate.py",
    "import_features": "oodbench/data/imported.py",
}


def is_clone(root: Path) -> bool:
    """Whether `root` is a clone of the oodbench repository (its stages/ and package)."""
    return (root / "stages").is_dir() and (root / "oodbench" / "__init__.py").is_file()


def stage_command(kind: str, root: Path) -> str:
    """The start of a stage's command line: the clone's script or the installed package."""
    if is_clone(root):
        return f"python stages/{kind}.py"
    return f"python -m {STAGE_MODULE} {kind}"


def stage_entry(kind: str, root: Path) -> str:
    """The entry file of a stage kind's code: its script in a clone, its module elsewhere."""
    return f"stages/{kind}.py" if is_clone(root) else STAGE_MODULES[kind]


def package_root() -> Path:
    """The folder holding the installed ``oodbench`` package (site-packages, or the
    source tree of an editable install): the root its module paths are relative to."""
    import oodbench

    return Path(oodbench.__file__).resolve().parents[1]


@cache
def package_identity() -> dict[str, str]:
    """The installed oodbench: its version and the digest of its files, so that an
    editable install whose code changes under the same version is told apart as well
    as an upgrade."""
    import oodbench

    folder = Path(oodbench.__file__).resolve().parent
    return {"name": "oodbench", "version": oodbench.__version__, "sha256": folder_digest(folder)}


def folder_digest(folder: Path) -> str:
    """sha256 over every file under `folder` (its relative path and bytes, in path order),
    bytecode left out: it changes whenever Python recompiles, the sources are what count."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def write_package_identity(root: Path = Path()) -> None:
    """Stage ``package``: ``build/package.json``, rewritten only when it changes."""
    identity = package_identity()
    write_spec(root / package_spec(), identity)
    print(f"package: oodbench {identity['version']} ({identity['sha256'][:12]})")


def user_methods(params: dict[str, Any], bench: Benchmark) -> dict[str, CodeRef]:
    """The benchmark's method keys that run a user's own class, with its reference."""
    blocks = params.get("methods") or {}
    found = {}
    for key in bench.all_methods:
        block = blocks.get(key)
        method = block.get("method") if isinstance(block, dict) else None
        if is_reference(method):
            found[key] = CodeRef.parse(method, f"methods.{key}.method")
    return found


def entry_files(ref: CodeRef, root: Path) -> list[str]:
    """The user's file and the ``__init__.py`` of each package it lies in (importing
    ``mymethods.cosine`` runs ``mymethods/__init__.py`` first)."""
    return [ref.path, *packages_of(ref.module, root)]


def user_files(refs: list[CodeRef], root: Path, where: str) -> list[str]:
    """The users' files and every project module they import (closure.py), sorted; a
    missing file or a syntax error is one line naming `where` (the params key)."""
    for ref in refs:
        if not (root / ref.path).is_file():
            raise ParamsError(
                f"params.yaml: {where}: file {ref.path} not found (paths are relative to the "
                f"project root, {root.resolve()})"
            )
    try:
        return closure([f for ref in refs for f in entry_files(ref, root)], root)
    except SyntaxError as err:
        line = f":{err.lineno}" if err.lineno else ""
        file = Path(err.filename or "?").resolve()
        shown = file.relative_to(root.resolve()) if file.is_relative_to(root.resolve()) else file
        raise ParamsError(
            f"{shown.as_posix()}{line}: syntax error ({err.msg}) in the code of {where}"
        ) from err


def user_models(params: dict[str, Any], bench: Benchmark) -> dict[str, CodeRef]:
    """The benchmark's backbones whose model is a user's own (``backbones.<bb>.model:
    path/file.py:factory``), with its reference."""
    blocks = params.get("backbones") or {}
    found = {}
    for backbone in bench.backbones:
        block = blocks.get(backbone)
        model = block.get("model") if isinstance(block, dict) else None
        if model is not None:
            found[backbone] = CodeRef.parse(model, f"backbones.{backbone}.model")
    return found


def all_user_files(params: dict[str, Any], bench: Benchmark, root: Path) -> list[str]:
    """Every user file the benchmark's stages run (the check stage's code dependencies):
    the users' methods and models and the project modules they import."""
    files: set[str] = set()
    for key, ref in user_methods(params, bench).items():
        files.update(user_files([ref], root, f"methods.{key}.method"))
    for backbone, ref in user_models(params, bench).items():
        files.update(user_files([ref], root, f"backbones.{backbone}.model"))
    return sorted(files)
