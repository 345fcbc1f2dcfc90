"""DVC stage ``pipelines/<bb>/dvc.yaml:fc``: the classifier W, b (model head, probe, PLP or MOS group head)."""

from oodbench.core.entry import run_main, stage_args
from oodbench.heads.export import export_classifier


def main() -> None:
    args = stage_args(__doc__, "backbone", "features")
    export_classifier(args.backbone, features=args.features)


if __name__ == "__main__":
    run_main(main)
