"""DVC stage ``check``: validate params.yaml, and dvc.yaml against it, before any other stage."""

import argparse

from oodbench.core.entry import run_main
from oodbench.pipeline.check import check_benchmark


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    check_benchmark()


if __name__ == "__main__":
    run_main(main)
