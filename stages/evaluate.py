"""DVC stage ``pipelines/<bb>/dvc.yaml:evaluate``: scores -> metrics/<bb>.json (AUROC, FPR95, AUPR) and plots/<bb>/."""

from oodbench.core.entry import run_main, stage_args
from oodbench.results.evaluate import evaluate_backbone


def main() -> None:
    args = stage_args(__doc__, "backbone", "features")
    evaluate_backbone(args.backbone, features=args.features)


if __name__ == "__main__":
    run_main(main)
