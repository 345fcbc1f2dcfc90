"""DVC stage ``demo``: write the embedded demo's images (data/demo) and datalists."""

from oodbench.core.entry import run_main, stage_args
from oodbench.data.demo import write_demo


def main() -> None:
    stage_args(__doc__)
    write_demo()


if __name__ == "__main__":
    run_main(main)
