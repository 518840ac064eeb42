"""Ctrl-C and a scheduler's SIGTERM as a request to stop cleanly: finish the step, checkpoint, exit.

The first SIGINT or SIGTERM only sets a flag (and says so on stderr). A
second signal does what it did before: a second SIGTERM terminates, a second
Ctrl-C raises KeyboardInterrupt, or kills the process where the caller made
SIGINT's default action the previous one (the command line does). With
`again`, it first prints one line that says what that leaves saved, so that
the last line a stopped run printed is true.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Callable, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(Exception):
    """The run stopped on a signal after writing a checkpoint; `exit_status` is 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + signum


class StopRequest:
    """A context manager that turns the first SIGINT or SIGTERM into `requested`.

    Outside the main thread (where Python cannot install handlers) it does
    nothing and `requested` stays False.
    """

    def __init__(
        self,
        announce: str = "finishing the current step and writing a checkpoint",
        again: Optional[Callable[[], str]] = None,
    ):
        self.announce, self.again = announce, again
        self.signum: Optional[int] = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if self.again is None:
            self._restore()
        else:  # the second signal says what is saved, then acts as before
            for other in self._previous:
                signal.signal(other, self._second)
        # os.write, not print: a handler may run in the middle of another write to the same stream.
        os.write(
            2,
            f"\n{signal.Signals(signum).name} received: {self.announce}; send it again to stop at once "
            "without saving\n".encode(),
        )

    def _second(self, signum: int, frame: Any) -> None:
        previous = self._previous.get(signum)
        os.write(2, f"\n{signal.Signals(signum).name} again: stopping now; {self.again()}\n".encode())
        self._restore()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            os.kill(os.getpid(), signum)  # the default action, now put back: the process ends

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def __exit__(self, *exc_info: Any) -> None:
        self._restore()
