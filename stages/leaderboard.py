"""DVC stage ``leaderboard``: every backbone's metrics as one Markdown leaderboard."""

import argparse

from oodbench.core.entry import run_main
from oodbench.results.leaderboard import write_leaderboard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbones", required=True, help="comma-separated backbone keys")
    args = parser.parse_args()
    write_leaderboard([b for b in args.backbones.split(",") if b])


if __name__ == "__main__":
    run_main(main)
