"""How every command ends: one ``error:`` line and exit code 2 for a user error, 130 on Ctrl-C.

Used by the DVC stage scripts (``stages/*.py``) and the ``oodbench`` CLI alike, so a
bad input gives the same one-line message whichever way it was run.
"""

from __future__ import annotations

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
