"""DVC stage ``materialize-<ds>``: datalists/<ds>.txt -> data/manifests/<ds>.parquet."""

import argparse

from oodbench.core.entry import run_main
from oodbench.data.materialize import materialize_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="dataset key under `datasets:`")
    args = parser.parse_args()
    materialize_dataset(args.dataset)


if __name__ == "__main__":
    run_main(main)
