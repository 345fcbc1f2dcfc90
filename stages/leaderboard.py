"""DVC stage ``leaderboard``: every backbone's metrics as one Markdown leaderboard."""

from oodbench.core.entry import run_main, stage_args
from oodbench.results.leaderboard import write_leaderboard


def main() -> None:
    args = stage_args(__doc__, "backbones")
    write_leaderboard([b for b in args.backbones.split(",") if b])


if __name__ == "__main__":
    run_main(main)
