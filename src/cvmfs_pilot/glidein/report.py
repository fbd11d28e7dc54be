"""The pilot's final report (docs/glidein.md): every step with its duration and result, the CVMFS setup, the
payload, and the outcome with its failure class and exit code."""

import calendar
import json
import socket
import time

from cvmfs_pilot.node import atomic_file

SITE, CONFIG, JOB = "site", "config", "job"
EXIT_CODES = {None: 0, SITE: 10, CONFIG: 11, JOB: 12}
MARKER = "=== cvmfs-pilot report ==="


class PilotFailure(Exception):
    """The pilot cannot go on: ``failure_class`` (site, config, job) and why."""

    def __init__(self, failure_class, reason):
        Exception.__init__(self, reason)
        self.failure_class = failure_class
        self.reason = reason


def timestamp(seconds=None):
    """UTC, ISO 8601 with milliseconds."""
    seconds = time.time() if seconds is None else seconds
    return "{}.{:03d}Z".format(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)), int(seconds % 1 * 1000))


class Report(object):
    def __init__(self, pilot_id, entry, factory=""):
        self.started = time.time()
        self.data = {"format": 1, "pilot": pilot_id, "entry": entry, "factory": factory,
                     "host": socket.gethostname(), "started": timestamp(self.started), "outcome": None,
                     "failure_class": None, "reason": None, "exit_code": None, "steps": [], "cvmfs": None,
                     "payload": []}

    def step(self, name, result, started, detail=None):
        self.data["steps"].append({"name": name, "started": timestamp(started),
                                   "duration": round(time.time() - started, 3), "result": result,
                                   "detail": detail})

    def run_step(self, name, action):
        """Run action() as step name; a PilotFailure (or any error, as a config failure) is recorded and
        raised."""
        started = time.time()
        try:
            detail = action()
        except PilotFailure as failure:
            self.step(name, "failed", started, failure.reason)
            raise
        self.step(name, "ok", started, detail if isinstance(detail, str) else None)
        return detail

    def merge(self, other):
        """Add the steps and payload of a report part written by the pilot's continuation; the CVMFS step lasts
        until the continuation started (its mounts were made by then)."""
        for step in self.data["steps"]:
            if step["name"] == "cvmfs" and other.get("started"):
                started = calendar.timegm(time.strptime(step["started"][:19], "%Y-%m-%dT%H:%M:%S"))
                started += float("0." + step["started"][20:23])
                step["duration"] = round(other["started"] - started, 3)
        self.data["steps"] += other.get("steps") or []
        self.data["payload"] += other.get("payload") or []

    def fail(self, failure_class, reason):
        if self.data["failure_class"] is None:
            self.data["failure_class"], self.data["reason"] = failure_class, reason

    def finish(self):
        ended = time.time()
        failure = self.data["failure_class"]
        self.data.update(ended=timestamp(ended), duration=round(ended - self.started, 3),
                         outcome="success" if failure is None else "failed", exit_code=EXIT_CODES[failure])
        return self.data["exit_code"]

    def write(self, path):
        atomic_file.write_atomically(path, (json.dumps(self.data, indent=1) + "\n").encode("utf-8"))

    def text(self):
        return "{0}\n{1}\n{0}\n".format(MARKER, json.dumps(self.data, indent=1))
