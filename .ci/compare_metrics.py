"""Fail when regenerated metrics differ from the committed ones beyond a tolerance.

Every JSON file under the folders counts, at any depth: the per-backbone detail
(``<bb>.json``) and the per-method summaries (``<bb>/<method>.json``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def leaves(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def compare(old_dir: Path, new_dir: Path, tol: float) -> list[str]:
    problems = []
    old_files = {p.relative_to(old_dir).as_posix() for p in old_dir.rglob("*.json")}
    new_files = {p.relative_to(new_dir).as_posix() for p in new_dir.rglob("*.json")}
    problems += [f"{name}: missing after dvc repro" for name in sorted(old_files - new_files)]
    problems += [f"{name}: new, not committed" for name in sorted(new_files - old_files)]
    for name in sorted(old_files & new_files):
        old = leaves(json.loads((old_dir / name).read_text()))
        new = leaves(json.loads((new_dir / name).read_text()))
        for key in sorted(old.keys() | new.keys()):
            a, b = old.get(key), new.get(key)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                if not math.isclose(a, b, rel_tol=0.0, abs_tol=tol):
                    problems.append(f"{name}: {key} committed {a} regenerated {b}")
            elif a != b:
                problems.append(f"{name}: {key} committed {a!r} regenerated {b!r}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("committed", type=Path)
    parser.add_argument("regenerated", type=Path)
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args()
    problems = compare(args.committed, args.regenerated, args.tol)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"{len(problems)} metric values differ beyond {args.tol}", file=sys.stderr)
        return 1
    print(f"metrics match the committed ones within {args.tol}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
