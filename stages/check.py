"""DVC stage ``check``: validate params.yaml, and dvc.yaml against it, before any other stage."""

from oodbench.core.entry import run_main
from oodbench.pipeline.check import check_benchmark


def main() -> None:
    check_benchmark()


if __name__ == "__main__":
    run_main(main)
