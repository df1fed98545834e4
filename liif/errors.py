"""One exception type for user-facing problems; the CLI prints it as a single line."""
from __future__ import annotations

import sys
from collections.abc import Callable


class LiifError(Exception):
    """A problem with the user's input (file, option, checkpoint), reported in one line."""


def run_reporting_errors(command: Callable[[], int]) -> int:
    """Run a CLI command: a LiifError becomes ``liif: error: ...`` on stderr and exit code 1."""
    try:
        return int(command())
    except LiifError as e:
        print(f"liif: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("liif: interrupted", file=sys.stderr)
        return 130
