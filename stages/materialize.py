"""DVC stage ``materialize-<ds>``: datalists/<ds>.txt -> data/manifests/<ds>.parquet."""

from oodbench.core.entry import run_main, stage_args
from oodbench.data.materialize import materialize_dataset


def main() -> None:
    args = stage_args(__doc__, "dataset")
    materialize_dataset(args.dataset)


if __name__ == "__main__":
    run_main(main)
