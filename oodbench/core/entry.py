"""How every command starts and ends: the stage scripts' command lines, and one ``error:``
line and exit code 2 for a user error, 130 on Ctrl-C.

Used by the DVC stage scripts (``stages/*.py``) and the ``oodbench`` CLI alike, so a
bad input gives the same one-line message whichever way it was run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from oodbench.core.errors import OodbenchError


def run_main(main: Callable[[], object]) -> None:
    """Call `main`; turn OodbenchError and KeyboardInterrupt into a message and exit code."""
    try:
        main()
    except OodbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept, rerun to resume", file=sys.stderr)
        sys.exit(130)


#: the options of the stage scripts: name -> (help, required)
STAGE_OPTIONS = {
    "backbone": ("backbone key under `backbones:`", True),
    "dataset": ("dataset key under `datasets:`", True),
    "method": ("method key under `methods:`", True),
    "features": ("another backbone whose features this one reuses (`features:`)", False),
    "backbones": ("comma-separated backbone keys", True),
}


def stage_args(doc: str | None, *options: str) -> argparse.Namespace:
    """The command line of a stage script: its docstring `doc` as ``--help``, and one
    ``--<name>`` per name in `options` (keys of :data:`STAGE_OPTIONS`)."""
    parser = argparse.ArgumentParser(description=doc)
    for name in options:
        help_text, required = STAGE_OPTIONS[name]
        parser.add_argument(f"--{name}", required=required, help=help_text)
    return parser.parse_args()
