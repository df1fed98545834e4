"""One exception type for user-facing problems; the CLI prints it as a single line."""
from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any


class LiifError(Exception):
    """A problem with the user's input (file, option, checkpoint), reported in one line."""


def _warning_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    print(f"liif: warning: {message}", file=sys.stderr)


def run_reporting_errors(command: Callable[[], int]) -> int:
    """Run a CLI command: a LiifError becomes ``liif: error: ...`` on stderr and exit code 1;
    Python warnings raised on the way are one ``liif: warning: ...`` line each."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line
            return int(command())
    except LiifError as e:
        print(f"liif: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("liif: interrupted", file=sys.stderr)
        return 130
