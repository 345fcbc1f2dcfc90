"""DVC stage ``pipelines/<bb>/dvc.yaml:subspace``: the ViM subspace of ID train, computed once for vim and residual."""

from oodbench.core.entry import run_main, stage_args
from oodbench.results.subspace import write_subspace


def main() -> None:
    args = stage_args(__doc__, "backbone", "features")
    write_subspace(args.backbone, features=args.features)


if __name__ == "__main__":
    run_main(main)
