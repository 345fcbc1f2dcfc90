"""DVC stage ``check``: validate params.yaml, and dvc.yaml against it, before any other stage."""

from oodbench.core.entry import run_main, stage_args
from oodbench.pipeline.check import check_benchmark


def main() -> None:
    stage_args(__doc__)
    check_benchmark()


if __name__ == "__main__":
    run_main(main)
