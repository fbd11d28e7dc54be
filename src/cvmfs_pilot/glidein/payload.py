"""Running the payload's commands, and scripts, under the pilot's lifetime limits and signals.

Each command runs in its own process group. At the walltime deadline, or when the pilot is told to stop
(SIGTERM, SIGINT, SIGQUIT from the batch system), the group gets SIGTERM, then SIGKILL after the grace time.
"""

import os
import signal
import subprocess
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
TAIL = 2000


class Stop(object):
    """Records the stop signals the pilot receives (installed for its lifetime)."""

    def __init__(self):
        self.signal = None
        for number in STOP_SIGNALS:
            signal.signal(number, self._on_signal)

    def _on_signal(self, number, frame):
        if self.signal is None:
            self.signal = number


def _tail(path):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - TAIL))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run(command, stop, deadline=None, grace=30.0, env=None, cwd=None, stdout=None, stderr=None):
    """Run command; (exit status as the shell gives it — 128 + N for signal N —, how it ended: "exited",
    "deadline" or "stopped"). stdout/stderr: file paths (None: inherited)."""
    outputs = [open(path, "ab") if path else None for path in (stdout, stderr)]
    try:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=outputs[0],
                                   stderr=outputs[1], start_new_session=True)
    finally:
        for output in outputs:
            if output is not None:
                output.close()
    ended, killed_at = "exited", None
    while process.poll() is None:
        now = time.monotonic()
        if ended == "exited" and (stop.signal is not None or (deadline is not None and time.time() >= deadline)):
            ended = "stopped" if stop.signal is not None else "deadline"
            _signal_group(process.pid, signal.SIGTERM)
            killed_at = now + grace
        elif killed_at is not None and now >= killed_at:
            _signal_group(process.pid, signal.SIGKILL)
            killed_at = float("inf")
        try:
            process.wait(0.05)  # returns within a millisecond or two of the command's end
        except subprocess.TimeoutExpired:
            pass
    if ended == "exited" and stop.signal is not None:
        ended = "stopped"  # the batch system signalled the command too (scancel signals every process)
    if ended != "exited" or process.returncode < 0:
        _signal_group(process.pid, signal.SIGKILL)  # what is left of the group
    status = process.returncode
    return (128 - status if status < 0 else status), ended


def _signal_group(pid, number):
    try:
        os.killpg(pid, number)
    except OSError:
        pass


def tails(stdout, stderr):
    return _tail(stdout), _tail(stderr)
