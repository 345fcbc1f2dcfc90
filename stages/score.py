"""DVC stage ``pipelines/<bb>/dvc.yaml:score-<method>``: fit one OOD method on ID train, score ID val and OOD sets."""

import argparse

from oodbench.core.entry import run_main
from oodbench.results.scoring import score_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", required=True, help="backbone key under `backbones:`")
    parser.add_argument("--method", required=True, help="method key under `methods:`")
    parser.add_argument(
        "--features", help="another backbone whose features this one reuses (`features:`)"
    )
    args = parser.parse_args()
    score_method(args.backbone, args.method, features=args.features)


if __name__ == "__main__":
    run_main(main)
