"""One exception type for user-facing problems; the CLI prints it as a single line."""
from __future__ import annotations

import signal
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any


class LiifError(Exception):
    """A problem with the user's input (file, option, checkpoint), reported in one line."""


def _warning_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    print(f"liif: warning: {message}", file=sys.stderr)


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, so temp files are removed and no output is half-written."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def run_reporting_errors(command: Callable[[], int]) -> int:
    """Run a CLI command: a LiifError becomes ``liif: error: ...`` on stderr and exit code 1;
    Python warnings raised on the way are one ``liif: warning: ...`` line each; SIGTERM unwinds
    the command (exit code 143) instead of killing it where it stands."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
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
    except Terminated:
        print("liif: terminated", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
