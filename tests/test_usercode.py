"""User code named in params.yaml (``path/file.py:Name``): loading, errors, and the
project files its imports pull in (the code dependencies of the stages that run it)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from oodbench.core.errors import ParamsError
from oodbench.core.usercode import CodeRef, describe, is_reference, load
from oodbench.pipeline.closure import closure


@pytest.fixture
def project(tmp_path: Path):
    """A project with a package of the user's own (relative and absolute imports)."""
    (tmp_path / "mymethods").mkdir()
    (tmp_path / "mymethods" / "__init__.py").write_text("")
    (tmp_path / "mymethods" / "common.py").write_text("SCALE = 2\n")
    (tmp_path / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    (tmp_path / "mymethods" / "cosine.py").write_text(
        "from . import common\nimport helpers\nimport numpy\n\n"
        "class Cosine:\n    scale = common.SCALE\n\n"
        "def broken():\n    return 1 / 0\n"
    )
    yield tmp_path
    for name in [m for m in sys.modules if m.split(".")[0] in ("mymethods", "helpers")]:
        del sys.modules[name]
    if str(tmp_path.resolve()) in sys.path:
        sys.path.remove(str(tmp_path.resolve()))


def test_parse_and_load(project: Path) -> None:
    ref = CodeRef.parse("mymethods/cosine.py:Cosine", "methods.cos.method")
    assert (ref.path, ref.name, ref.module) == ("mymethods/cosine.py", "Cosine", "mymethods.cosine")
    assert load(ref, project, "methods.cos.method").scale == 2
    assert is_reference("a/b.py:C") and not is_reference("knn")


def test_closure_follows_the_users_imports(project: Path) -> None:
    assert closure(["mymethods/cosine.py"], project) == [
        "helpers.py",
        "mymethods/__init__.py",
        "mymethods/common.py",
        "mymethods/cosine.py",
    ]


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("cosine", "expected 'path/to/file.py:Name'"),
        ("/abs/x.py:C", "must be a path inside the project"),
        ("../x.py:C", "must be a path inside the project"),
        ("my-methods/x.py:C", "'my-methods' is not a Python module name"),
    ],
)
def test_malformed_references_name_the_key(ref: str, needle: str) -> None:
    with pytest.raises(ParamsError, match=r"methods\.cos\.method") as err:
        CodeRef.parse(ref, "methods.cos.method")
    assert needle in str(err.value)


def test_missing_file_syntax_error_and_missing_name(project: Path) -> None:
    where = "methods.cos.method"
    with pytest.raises(ParamsError, match=r"file nope\.py not found"):
        load(CodeRef.parse("nope.py:C", where), project, where)
    (project / "bad.py").write_text("x = 1\ndef f(:\n")
    with pytest.raises(ParamsError, match=r"^bad\.py:2: syntax error .* methods\.cos\.method"):
        load(CodeRef.parse("bad.py:f", where), project, where)
    with pytest.raises(ParamsError, match=r"defines no 'Nope'; it defines Cosine, broken"):
        load(CodeRef.parse("mymethods/cosine.py:Nope", where), project, where)
    (project / "raises.py").write_text("import helpers\n\nraise RuntimeError('boom')\n")
    with pytest.raises(ParamsError, match=r"raises\.py:3: RuntimeError: boom"):
        load(CodeRef.parse("raises.py:f", where), project, where)


def test_describe_names_the_users_line(project: Path) -> None:
    broken = load(CodeRef.parse("mymethods/cosine.py:broken", "k"), project, "k")
    with pytest.raises(ZeroDivisionError) as err:
        broken()
    assert describe(err.value, project) == (
        "mymethods/cosine.py:9: ZeroDivisionError: division by zero"
    )


def test_a_module_name_taken_by_an_installed_module_is_refused(tmp_path: Path) -> None:
    (tmp_path / "json.py").write_text("class C: ...\n")
    try:
        with pytest.raises(ParamsError, match=r"module name .json. of json\.py is already taken"):
            load(CodeRef.parse("json.py:C", "k"), tmp_path, "k")
    finally:
        sys.path.remove(str(tmp_path.resolve()))


def test_two_projects_with_the_same_module_names_load_in_turn(tmp_path: Path) -> None:
    """One process (a notebook, a test session) may load the code of two projects that
    both hold mynets/resnet.py: each load gets its own project's file, and going back to
    the first project imports its file again."""
    roots = [tmp_path / "a", tmp_path / "b"]
    for depth, root in enumerate(roots):
        (root / "mynets").mkdir(parents=True)  # a namespace package: no __init__.py
        (root / "mynets" / "parts.py").write_text(f"DEPTH = {depth + 1}\n")
        (root / "mynets" / "resnet.py").write_text(
            "from mynets.parts import DEPTH\n\nclass Net:\n    depth = DEPTH\n"
        )
    ref = CodeRef.parse("mynets/resnet.py:Net", "backbones.own.model")
    saved = list(sys.path)
    try:
        got = [load(ref, root, "backbones.own.model").depth for root in (*roots, roots[0])]
        assert got == [1, 2, 1]
        assert str(roots[1].resolve()) not in sys.path  # the project left is off the path
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "mynets"]:
            del sys.modules[name]
        sys.path[:] = saved


NESTED = """
import a0
if x:
    import a1
elif y:
    import a2
else:
    from a3 import b
for i in z:
    import a4
else:
    import a5
while w:
    import a6
try:
    import a7
except ImportError:
    import a8
else:
    import a9
finally:
    import a10
with c:
    import a11
class K:
    import a12
    def m(self):
        async def inner():
            async with d:
                import a13
            async for e in f:
                import a14
        return inner
match v:
    case 1:
        import a15
    case _:
        from .a16 import g
x = [lambda: 0 for _ in range(3)]
"""


def import_nodes(nodes: Iterable[ast.AST]) -> set[str]:
    """The import statements among `nodes`, as comparable text."""
    return {ast.dump(n) for n in nodes if isinstance(n, ast.Import | ast.ImportFrom)}


def test_imports_are_found_in_every_kind_of_block(tmp_path: Path) -> None:
    """The closure visits statements only (expressions cannot import): it finds what a
    walk of every node finds, in every block statement, and in every file of the package."""
    from oodbench.pipeline.closure import direct_imports, statements

    path = tmp_path / "nested.py"
    path.write_text(NESTED)
    found = direct_imports(path, ("pkg",))
    assert [n for n in found if n.startswith("a")] == [
        *[f"a{i}" for i in range(3)], "a3", "a3.b", *[f"a{i}" for i in range(4, 16)]
    ]  # fmt: skip
    assert found[-2:] == ("pkg.a16", "pkg.a16.g")
    root = Path(__file__).resolve().parents[1]
    for source in [path, *sorted((root / "oodbench").rglob("*.py"))]:
        tree = ast.parse(source.read_text(encoding="utf-8"))
        # the slow way visits every node, expressions included
        assert import_nodes(statements(tree.body)) == import_nodes(ast.walk(tree)), source
