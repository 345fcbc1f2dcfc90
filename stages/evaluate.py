"""DVC stage ``pipelines/<bb>/dvc.yaml:evaluate``: scores -> metrics/<bb>.json (AUROC, FPR95, AUPR) and plots/<bb>/."""

import argparse

from oodbench.core.entry import run_main
from oodbench.results.evaluate import evaluate_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", required=True, help="backbone key under `backbones:`")
    parser.add_argument(
        "--features", help="another backbone whose features this one reuses (`features:`)"
    )
    args = parser.parse_args()
    evaluate_backbone(args.backbone, features=args.features)


if __name__ == "__main__":
    run_main(main)
