"""DVC stage ``pipelines/score-<method>/dvc.yaml:score``: fit one OOD method on ID train, score ID val and OOD sets, on each backbone that runs it."""

import sys

from oodbench.core.entry import run_main, stage_args
from oodbench.results.scoring import score_stage


def main() -> None:
    args = stage_args(__doc__, "method", "backbones")
    backbones = [b for b in args.backbones.split(",") if b]
    # a backbone per process: this script for that backbone alone
    child = [sys.executable, __file__, "--method", args.method, "--backbones"]
    score_stage(args.method, backbones, lambda backbone: [*child, backbone])


if __name__ == "__main__":
    run_main(main)
