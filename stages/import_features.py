"""DVC stage ``pipelines/<bb>/dvc.yaml:import-<ds>``: features extracted elsewhere (``backbones.<bb>.imported``) -> features/<bb>/<ds>/ (NPY shards)."""

from oodbench.core.entry import run_main, stage_args
from oodbench.data.imported import imported_dataset


def main() -> None:
    args = stage_args(__doc__, "backbone", "dataset")
    imported_dataset(args.backbone, args.dataset)


if __name__ == "__main__":
    run_main(main)
