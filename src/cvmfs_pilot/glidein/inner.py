"""The pilot's inner part (``glidein continue STATE``), run inside the CVMFS environment the node layer set up:
at_file_list, the client file_list, after_file_list, the last script and the payload; it writes its part of the
report. Also the script runner both parts use. It imports only what it needs: it starts while the job waits."""

import json
import os
import sys
import time

from cvmfs_pilot.glidein import glidein_config, payload, results
from cvmfs_pilot.glidein.report import CONFIG, JOB, SITE, PilotFailure, Report
from cvmfs_pilot.node import atomic_file

PREFIXES = {"main": "", "entry": "ENTRY_", "client": "GLIDECLIENT_"}
DEFAULT_GRACE = 30.0


def files_state(files):
    return [{"name": f.name, "type": f.type, "path": f.path, "config_out": f.config_out, "cond": f.cond}
            for f in files]


class ScriptRunner(object):
    """Runs listed files as GlideinWMS does: exec files as ``FILE glidein_config ID``, others only noted in
    glidein_config (config_out). A failing script stops the pilot with its failure class."""

    def __init__(self, report, config_path, results_path, logs_dir, stop, environ):
        self.report = report
        self.config = glidein_config.GlideinConfig(config_path)
        self.config_path = config_path
        self.results_path = results_path
        self.logs_dir = logs_dir
        self.stop = stop
        self.environ = environ

    def run_list(self, files, ident, list_name):
        for listed in files:
            self.run_file(listed, ident, list_name)

    def run_file(self, listed, ident, list_name):
        name = "{} {} {}".format(list_name, ident, listed["name"])
        started = time.time()
        if listed.get("cond") and not self.config.get_bool(listed["cond"]):
            self.report.step(name, "skipped", started, "{} is not true".format(listed["cond"]))
            return
        if listed.get("config_out"):
            self.config.add(PREFIXES[ident] + listed["config_out"], listed["path"])
        if listed["type"] != "exec":
            return
        if self.stop.signal is not None:
            raise PilotFailure(SITE, "terminated by signal {}".format(self.stop.signal))
        before = len(results.read_results(self.results_path)) if os.path.exists(self.results_path) else 0
        out = os.path.join(self.logs_dir, listed["name"] + ".out")
        err = os.path.join(self.logs_dir, listed["name"] + ".err")
        environ = dict(self.environ, CVMFS_PILOT_RESULTS=self.results_path, glidein_config=self.config_path)
        status, ended = payload.run([listed["path"], self.config_path, ident], self.stop, env=environ,
                                    cwd=os.path.dirname(listed["path"]), stdout=out, stderr=err)
        recorded = results.read_results(self.results_path)[before:] if os.path.exists(self.results_path) else []
        if ended == "stopped":
            self.report.step(name, "failed", started, "stopped by signal {}".format(self.stop.signal))
            raise PilotFailure(SITE, "terminated by signal {}".format(self.stop.signal))
        failure_class, detail = results.classify(recorded, status, listed["name"])
        if failure_class is not None:
            detail = "{} (stderr: {})".format(detail, payload.tails(out, err)[1].strip()[-300:] or "empty")
            self.report.step(name, "failed", started, detail)
            raise PilotFailure(failure_class, "{}: {}".format(listed["name"], detail))
        self.report.step(name, "ok", started, "; ".join(r.get("script", "") + " ok" for r in recorded) or None)


def run_inner(state_path):
    """``glidein continue STATE``: the scripts after the CVMFS step and the payload; writes the report part.
    Exit status 0, or that of its failure class."""
    with open(state_path) as handle:
        state = json.load(handle)
    report = Report("", "")
    stop = payload.Stop()
    environ = dict(os.environ)
    runner = ScriptRunner(report, state["glidein_config"], state["results"], state["logs"], stop, environ)
    try:
        for ident, list_name, files in state["steps"]:
            runner.run_list(files, ident, list_name)
        condor_vars = glidein_config.CondorVars(runner.config.get("CONDOR_VARS_FILE"))
        try:
            environ.update(condor_vars.job_environment(runner.config))
        except ValueError as exc:
            raise PilotFailure(CONFIG, "condor vars: {}".format(exc))
        _run_payload(report, state, stop, environ)
    except PilotFailure as failure:
        report.fail(failure.failure_class, failure.reason)
    part = {"started": report.started, "steps": report.data["steps"], "payload": report.data["payload"],
            "failure_class": report.data["failure_class"], "reason": report.data["reason"]}
    atomic_file.write_atomically(state["report_part"], json.dumps(part).encode("utf-8"))
    return report.finish()


def _run_payload(report, state, stop, environ):
    outputs = os.path.join(state["work_dir"], "payload")
    os.makedirs(outputs, mode=0o700, exist_ok=True)
    environ = dict(environ, GLIDEIN_WORK_DIR=os.path.join(state["work_dir"], "main"))
    for number, command in enumerate(state["payload"] or []):
        started = time.time()
        name = "payload {}".format(number)
        if state.get("retire") and started >= state["retire"]:
            report.step(name, "skipped", started, "past the retire time")
            continue
        if stop.signal is not None:
            raise PilotFailure(SITE, "terminated by signal {}".format(stop.signal))
        out = os.path.join(outputs, "{}.out".format(number))
        err = os.path.join(outputs, "{}.err".format(number))
        try:
            status, ended = payload.run(command, stop, state.get("deadline"), state.get("grace", DEFAULT_GRACE),
                                        env=environ, cwd=os.path.join(state["work_dir"], "main"), stdout=out,
                                        stderr=err)
        except OSError as exc:
            status, ended = 127, "exited"
            with open(err, "a") as handle:
                handle.write("cannot run {}: {}\n".format(command[0], exc.strerror or exc))
        stdout_tail, stderr_tail = payload.tails(out, err)
        sys.stdout.write(stdout_tail)
        report.data["payload"].append({"command": command, "exit_status": status, "ended": ended,
                                       "duration": round(time.time() - started, 3), "stdout_tail": stdout_tail,
                                       "stderr_tail": stderr_tail})
        if ended == "stopped":
            report.step(name, "failed", started, "stopped by signal {}".format(stop.signal))
            raise PilotFailure(SITE, "terminated by signal {}".format(stop.signal))
        if ended == "deadline":
            report.step(name, "failed", started, "killed at the walltime limit")
            raise PilotFailure(JOB, "payload command {} was killed at the walltime limit".format(number))
        report.step(name, "ok" if status == 0 else "failed", started, "exit status {}".format(status))
        if status != 0:
            raise PilotFailure(JOB, "payload command {} ({}) exited with status {}".format(
                number, command[0], status))
