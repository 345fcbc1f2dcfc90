"""DVC stage ``pipelines/<bb>/dvc.yaml:extract-<ds>``: manifest + backbone -> features/<bb>/<ds>/ (NPY shards).

Runs under torchrun as it is (``torchrun --nproc_per_node N stages/extract.py ...``)."""

from oodbench.core.entry import run_main, stage_args
from oodbench.models.extract import extract_dataset


def main() -> None:
    args = stage_args(__doc__, "backbone", "dataset")
    extract_dataset(args.backbone, args.dataset)


if __name__ == "__main__":
    run_main(main)
