"""DVC stage ``demo``: write the embedded demo's images (data/demo) and datalists."""

import argparse

from oodbench.core.entry import run_main
from oodbench.data.demo import write_demo


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    write_demo()


if __name__ == "__main__":
    run_main(main)
