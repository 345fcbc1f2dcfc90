"""DVC stage ``subspace-<bb>``: the ViM subspace of ID train, computed once for vim and residual."""

import argparse

from oodbench.core.entry import run_main
from oodbench.results.subspace import write_subspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", required=True, help="backbone key under `backbones:`")
    parser.add_argument(
        "--features", help="another backbone whose features this one reuses (`features:`)"
    )
    args = parser.parse_args()
    write_subspace(args.backbone, features=args.features)


if __name__ == "__main__":
    run_main(main)
