"""Shared command-line behaviour: one clear line for user errors, resumable Ctrl-C."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix (bad flag, missing file, ...): shown without a traceback."""


def run_main(main: Callable[[], None]) -> None:
    """Run a stage's main(); user errors and Ctrl-C end with a message and a non-zero code."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
