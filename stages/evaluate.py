"""DVC stage ``evaluate``: every backbone's scores -> metrics/<bb>.json (AUROC, FPR95, AUPR), plots/<bb>/ and metrics/leaderboard.md."""

from oodbench.core.entry import run_main, stage_args
from oodbench.results.evaluate import evaluate_benchmark


def main() -> None:
    args = stage_args(__doc__, "backbones")
    evaluate_benchmark([b for b in args.backbones.split(",") if b])


if __name__ == "__main__":
    run_main(main)
