"""Datalist parsing: every rejection names the file and line and says what to do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oodbench.core.errors import DataError
from oodbench.data.datalist import Entry, parse_datalist, parse_line
from tests.faults_catalogue import catalogue


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


@catalogue(
    "datalist",
    "the datalist has blank lines, `#` comments or bare paths",
    "blank and comment lines are skipped (line numbers stay the file's); a bare path gets label -1",
)
def test_parses_labels_comments_blank_lines_and_bare_paths(tmp_path: Path) -> None:
    lst = write(
        tmp_path / "a.txt", "# header\n\na/1.png 3\n  ./b/2.png   0  \nood/x.jpg\nood/y.jpg -1\n"
    )
    assert parse_datalist(lst) == [
        Entry(3, "a/1.png", 3),
        Entry(4, "b/2.png", 0),
        Entry(5, "ood/x.jpg", -1),
        Entry(6, "ood/y.jpg", -1),
    ]


@catalogue(
    "datalist",
    "the list has Windows line endings, a BOM, or UTF-8 paths with spaces",
    "read exactly like an LF/ASCII list",
)
def test_crlf_bom_and_utf8_paths_with_spaces(tmp_path: Path) -> None:
    lst = write(tmp_path / "a.txt", "\ufeffcafé/naïve photo.jpg 2\r\n# c\r\n日本/画像.png -1\r\n")
    assert parse_datalist(lst) == [
        Entry(1, "café/naïve photo.jpg", 2),
        Entry(3, "日本/画像.png", -1),
    ]


def test_no_trailing_newline(tmp_path: Path) -> None:
    assert parse_datalist(write(tmp_path / "a.txt", "x.png 1")) == [Entry(1, "x.png", 1)]


@catalogue(
    "datalist",
    "a path has `..`, is absolute, has a backslash, or a label is not an integer >= -1",
    "error `<list>: line N: ...` says what is wrong and how to write the line",
)
@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("img.png cat", "non-integer label 'cat'"),
        ("img.png 1.5", "non-integer label '1.5'"),
        ("my photo.jpg", "non-integer label 'photo.jpg'"),
        ("img.png -2", "label -2 < -1"),
        ("/abs/img.png 1", "absolute path"),
        ("C:/img.png 1", "absolute path"),
        ("../img.png 1", "contains '..'"),
        ("a/../../img.png 1", "contains '..'"),
        ("a\\img.png 1", "backslash"),
        (". 1", "names the root"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, needle: str) -> None:
    lst = write(tmp_path / "bad.txt", f"# ok\ngood.png 0\n{line}\n")
    with pytest.raises(DataError) as err:
        parse_datalist(lst)
    message = str(err.value)
    assert message.startswith(f"{lst}: line 3: ")
    assert needle in message
    assert "\n" not in message


@catalogue(
    "datalist", "a line is not valid UTF-8", "error names the line and the byte; re-save as UTF-8"
)
def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    lst = write(tmp_path / "bad.txt", b"a.png 0\nb\xff.png 1\n")
    with pytest.raises(DataError, match=r"bad\.txt: line 2: not valid UTF-8"):
        parse_datalist(lst)


@catalogue(
    "datalist",
    "a path is listed twice (also as `./a` vs `a`)",
    "error names the duplicate line and the first one",
)
def test_duplicates_after_normalisation(tmp_path: Path) -> None:
    lst = write(tmp_path / "d.txt", "a/b.png 0\nc.png 1\n./a/b.png 0\n")
    with pytest.raises(DataError, match=r"line 3: duplicate path 'a/b.png' \(first on line 1\)"):
        parse_datalist(lst)


@catalogue(
    "datalist",
    "many lines are bad",
    "all reported in one error, capped at 20 items plus `... and N more`",
)
def test_many_errors_are_listed_together_and_capped(tmp_path: Path) -> None:
    lst = write(tmp_path / "m.txt", "".join(f"img{i}.png x\n" for i in range(30)))
    with pytest.raises(DataError) as err:
        parse_datalist(lst)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{lst}: 30 bad lines; fix them and rerun"
    assert lines[1].startswith("  line 1: non-integer label")
    assert lines[-1] == "  ... and 10 more"
    assert len(lines) == 22


@catalogue(
    "datalist",
    "the datalist is empty, or holds only blank and comment lines",
    "error: `empty datalist` / `no entries`, with the expected `path label` format",
)
@pytest.mark.parametrize("content", ["", "\n\n  \n", "# only comments\n\n"])
def test_empty_lists(tmp_path: Path, content: str) -> None:
    with pytest.raises(DataError, match=r"empty datalist|no entries"):
        parse_datalist(write(tmp_path / "e.txt", content))


@catalogue(
    "datalist",
    "the datalist file is missing",
    "error names the file and says to create it (or run `oodbench materialize --demo`)",
)
def test_missing_list_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.txt: datalist not found; create it"):
        parse_datalist(tmp_path / "nope.txt")


def test_directory_is_not_a_list(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a file"):
        parse_datalist(tmp_path)


@catalogue(
    "datalist",
    "a listed path is a symlink that resolves outside the data root",
    "error names the line; links that stay inside the root are accepted",
)
def test_symlink_escaping_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "sub" / "link.png")
    os.symlink(root / "sub", root / "inner")  # a link that stays inside is fine
    lst = write(tmp_path / "s.txt", "inner/x.png 0\nsub/link.png 1\n")
    with pytest.raises(
        DataError, match=r"s\.txt: line 2: 'sub/link.png' resolves outside the root"
    ):
        parse_datalist(lst, root=root)
    lst_ok = write(tmp_path / "ok.txt", "inner/x.png 0\n")
    assert parse_datalist(lst_ok, root=root) == [Entry(1, "inner/x.png", 0)]


def test_parse_line_blank_and_comment() -> None:
    assert parse_line(b"   \r") is None
    assert parse_line(b"  # x 1") is None
    assert parse_line(b"x.png +4") == Entry(0, "x.png", 4)


@pytest.mark.parametrize(
    ("token", "ok"),
    [("9223372036854775807", True), ("9223372036854775808", False), ("-1", True),
     ("0000000000000000000000001", True), ("9" * 5000, False)],
)  # fmt: skip
def test_labels_must_fit_int64(tmp_path: Path, token: str, ok: bool) -> None:
    lst = write(tmp_path / "a.txt", f"x.png {token}\n")
    if ok:
        assert parse_datalist(lst) == [Entry(1, "x.png", int(token))]
        return
    with pytest.raises(DataError, match=r"a\.txt: line 1: label [0-9]+(\.\.\.)? is out of range"):
        parse_datalist(lst)
