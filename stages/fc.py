"""DVC stage ``pipelines/<bb>/dvc.yaml:fc``: the classifier W, b (model head, probe, PLP or MOS group head)."""

import argparse

from oodbench.core.entry import run_main
from oodbench.heads.export import export_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", required=True, help="backbone key under `backbones:`")
    parser.add_argument(
        "--features", help="another backbone whose features this one reuses (`features:`)"
    )
    args = parser.parse_args()
    export_classifier(args.backbone, features=args.features)


if __name__ == "__main__":
    run_main(main)
