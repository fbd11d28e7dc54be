"""A factory configuration and staging area for pilot tests, on top of an ExecEnv (support/exec_env.py): the
repositories it serves, its client configuration, and its unprivileged user, who runs the pilots.

``PilotEnv.stage(...)`` writes ``factory.toml`` (scripts given as text) and stages it with the real factory code;
``run_pilot()`` runs the staged ``glidein_startup.sh`` as the user, as a batch system would, and returns the
process result and the report it wrote.
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from cvmfs_pilot.factory import load_config, stage

ENTRY = "test-entry"
HELPERS_PREAMBLE = textwrap.dedent("""\
    #!/bin/bash
    # a GlideinWMS-style script: helpers found through glidein_config, as the documented conventions say
    glidein_config="$1"
    add_config_line_source=$(grep -m1 '^ADD_CONFIG_LINE_SOURCE ' "$glidein_config" | cut -d ' ' -f 2-)
    source "$add_config_line_source"
    error_gen=$(gconfig_get ERROR_GEN_PATH "$glidein_config")
    """)


def _toml_value(value):
    return json.dumps(value)  # JSON strings, numbers, lists and booleans are TOML too


class PilotEnv:
    def __init__(self, exec_env):
        self.exec_env = exec_env
        self.root = exec_env.scratch / "factory"
        self.pilots = exec_env.scratch / "pilots"
        self.root.mkdir()
        self.pilots.mkdir()
        exec_env.unprivileged.own(self.pilots)
        self.index_sha256 = None
        self.frontend_sha256 = None

    def cvmfs_attributes(self, repos=("one.exec.test",), **more):
        attributes = {"GLIDEIN_CVMFS": "required", "GLIDEIN_CVMFS_REPOS": ",".join(repos),
                      "GLIDEIN_CVMFS_CONFIG_DIR": str(self.exec_env.etc)}
        attributes.update(more)
        return attributes

    def stage(self, attributes, payload=(), files=(), entry_files=(), entry_attributes=None, frontend=None,
              lifetime=None, provider="local", provider_options=None):
        """files/entry_files: (name, list, type, text) — scripts written next to factory.toml."""
        lines = ["[factory]", 'name = "test-factory"', "work_dir = {}".format(_toml_value(str(self.root / "work"))),
                 "staging_urls = {}".format(_toml_value(["file://{}/".format(self.root / "work" / "staging")])),
                 "", "[factory.attributes]"]
        lines += ["{} = {}".format(key, _toml_value(value)) for key, value in attributes.items()]
        for name, list_name, kind, text in files:
            self._script(name, text)
            lines += ["", "[[factory.files]]", "path = {}".format(_toml_value("scripts/" + name)),
                      "list = {}".format(_toml_value(list_name)), "type = {}".format(_toml_value(kind))]
        lines += ["", "[entries.{}]".format(ENTRY), "provider = {}".format(_toml_value(provider))]
        if provider_options:
            lines.append("provider_options = {{{}}}".format(", ".join(
                "{} = {}".format(k, _toml_value(v)) for k, v in provider_options.items())))
        if lifetime:
            lines.append("lifetime = {{{}}}".format(", ".join("{} = {}".format(k, v) for k, v in lifetime.items())))
        if payload:
            lines += ["", "[entries.{}.payload]".format(ENTRY), "commands = {}".format(_toml_value(list(payload)))]
        if entry_attributes:
            lines += ["", "[entries.{}.attributes]".format(ENTRY)]
            lines += ["{} = {}".format(key, _toml_value(value)) for key, value in entry_attributes.items()]
        for name, _, kind, text in entry_files:
            self._script(name, text)
            lines += ["", "[[entries.{}.files]]".format(ENTRY), "path = {}".format(_toml_value("scripts/" + name)),
                      "type = {}".format(_toml_value(kind))]
        if frontend:
            lines += ["", "[frontend]", 'name = "test-frontend"',
                      "staging_dir = {}".format(_toml_value(str(self.root / "frontend"))),
                      "staging_urls = {}".format(_toml_value(["file://{}/".format(self.root / "frontend")])),
                      "", "[frontend.attributes]"]
            lines += ["{} = {}".format(k, _toml_value(v)) for k, v in frontend.get("attributes", {}).items()]
            for name, _, kind, text in frontend.get("files", ()):
                self._script(name, text)
                lines += ["", "[[frontend.files]]", "path = {}".format(_toml_value("scripts/" + name)),
                          "type = {}".format(_toml_value(kind))]
        (self.root / "factory.toml").write_text("\n".join(lines) + "\n")
        self.index_sha256, self.frontend_sha256 = stage(load_config(self.root / "factory.toml"))
        self.exec_env.unprivileged.own(self.root)
        return self.index_sha256

    def _script(self, name, text):
        path = self.root / "scripts" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)

    @property
    def staging(self):
        return self.root / "work" / "staging"

    def pilot_command(self, pilot_id="p1", *extra):
        command = ["/bin/sh", str(self.staging / "files" / "glidein_startup.sh"), "-factory",
                   "file://{}/".format(self.staging), "-factory-sha256", self.index_sha256, "-entry", ENTRY,
                   "-id", pilot_id, "-work-dir", str(self.pilots), "-report", str(self.report_path(pilot_id))]
        if self.frontend_sha256:
            command += ["-frontend", "file://{}/".format(self.root / "frontend"), "-frontend-sha256",
                        self.frontend_sha256]
        return command + list(extra)

    def report_path(self, pilot_id):
        return self.exec_env.scratch / "report-{}.json".format(pilot_id)

    def run_pilot(self, pilot_id="p1", *extra, timeout=180):
        result = self.exec_env.run(self.pilot_command(pilot_id, *extra), timeout=timeout)
        return result, self.report(pilot_id)

    def popen_pilot(self, pilot_id="p1", *extra):
        return self.exec_env.popen(self.pilot_command(pilot_id, *extra), stdout=subprocess.PIPE)

    def factory(self, *args):
        """``cvmfs-pilot ARGS --config factory.toml`` as the user (submit, status, remove: as a factory runs)."""
        command = [sys.executable, "-m", "cvmfs_pilot"] + list(args) + ["--config", str(self.root / "factory.toml")]
        result = self.exec_env.run(command, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def submit(self, count):
        self.factory("submit", "--entry", ENTRY, "--count", str(count))
        return [pilot["id"] for pilot in self.status()]

    def status(self):
        return json.loads(self.factory("status", "--json"))

    def wait_for_pilots(self, states=("finished", "lost", "removed"), timeout=180):
        deadline = time.monotonic() + timeout
        while True:
            pilots = self.status()
            if pilots and all(pilot["state"] in states for pilot in pilots):
                return pilots
            if time.monotonic() > deadline:
                raise AssertionError("the pilots did not end within {} s: {}".format(timeout, pilots))
            time.sleep(0.3)

    def record_report(self, pilot):
        path = Path(pilot["directory"]) / "report.json"
        return json.loads(path.read_text()) if path.exists() else None

    def report(self, pilot_id):
        path = self.report_path(pilot_id)
        return json.loads(Path(path).read_text()) if os.path.exists(path) else None

    def step(self, report, name):
        found = [step for step in report["steps"] if step["name"] == name]
        return found[0] if found else None
