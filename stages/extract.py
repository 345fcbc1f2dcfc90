"""DVC stage ``pipelines/<bb>/dvc.yaml:extract-<ds>``: manifest + backbone -> features/<bb>/<ds>/ (NPY shards).

Runs under torchrun as it is (``torchrun --nproc_per_node N stages/extract.py ...``)."""

import argparse

from oodbench.core.entry import run_main
from oodbench.models.extract import extract_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", required=True, help="backbone key under `backbones:`")
    parser.add_argument("--dataset", required=True, help="dataset key under `datasets:`")
    args = parser.parse_args()
    extract_dataset(args.backbone, args.dataset)


if __name__ == "__main__":
    run_main(main)
