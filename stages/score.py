"""DVC stage ``pipelines/<bb>/dvc.yaml:score-<method>``: fit one OOD method on ID train, score ID val and OOD sets."""

from oodbench.core.entry import run_main, stage_args
from oodbench.results.scoring import score_method


def main() -> None:
    args = stage_args(__doc__, "backbone", "method", "features")
    score_method(args.backbone, args.method, features=args.features)


if __name__ == "__main__":
    run_main(main)
