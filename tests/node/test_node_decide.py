"""The decision table over recorded probes of other platforms (tests/node/probes/*.json), and the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cvmfs_pilot.node import decide, probe
from cvmfs_pilot.node.decide import CVMFS2, EXPORT, FUSERMOUNT, HOST, NATIVE, NONE, PYTHON, USERNS

PROBES = Path(__file__).resolve().parent / "probes"
SRC = Path(__file__).resolve().parents[2] / "src"
DISTS = [{"engine": CVMFS2, "platform": p, "arch": a, "name": "cvmfs2-osg-{}-{}".format(p, a)}
         for p, a in [("el7", "x86_64"), ("el8", "x86_64"), ("el9", "x86_64"), ("el9", "aarch64"),
                      ("suse15", "x86_64")]] + [{"engine": PYTHON, "platform": "any", "arch": "noarch"}]
SUBTREES = ["sw.example.org/x86_64"]


def recorded(name):
    return probe.load(str(PROBES / (name + ".json")))


def with_native_cvmfs(node):
    record = node.to_dict()
    for check in record["checks"]:
        if check["name"] == "cvmfs":
            check.update(result="yes", reason="answering: cms.cern.ch", details={"answering": ["cms.cern.ch"]})
    return probe.Probe.from_dict(record)


# (probe, requirement, subtrees) -> (mode, engine, failed)
TABLE = [
    ("rhel7", "required", [], FUSERMOUNT, CVMFS2, False),
    ("rhel7", "preferred", [], FUSERMOUNT, CVMFS2, False),
    ("rhel7", "optional", [], NONE, None, False),
    ("rhel7", "never", [], NONE, None, False),
    ("suse15", "required", [], USERNS, CVMFS2, False),
    ("suse15", "optional", [], USERNS, CVMFS2, False),
    ("ubuntu24-apparmor", "required", [], FUSERMOUNT, CVMFS2, False),  # el9-aarch64 serves Ubuntu 24 on arm
    ("ubuntu24-apparmor", "optional", [], NONE, None, False),
    ("container-masked-proc", "REQUIRED", [], NONE, None, True),
    ("container-masked-proc", "Required", SUBTREES, EXPORT, PYTHON, False),
    ("container-masked-proc", "preferred", [], NONE, None, False),
    ("container-masked-proc", "optional", SUBTREES, NONE, None, False),
    ("debian12-live", "required", [], USERNS, CVMFS2, False),  # Debian 12 runs the el9 build
    ("debian12-live", "never", [], NONE, None, False),
]


@pytest.mark.parametrize("name, requirement, subtrees, mode, engine, failed", TABLE)
def test_decision_table(name, requirement, subtrees, mode, engine, failed):
    decision = decide.decide(recorded(name), requirement, DISTS, subtrees=subtrees)
    assert (decision.mode, decision.engine, decision.failed) == (mode, engine, failed), decision.reasons


def test_reasons_say_why_each_better_mode_was_passed_over():
    reasons = decide.decide(recorded("rhel7"), "required", DISTS).reasons
    assert reasons[0] == "requirement: required"
    assert reasons[1] == "mode native: not available, /cvmfs: /cvmfs does not exist"
    assert reasons[2].startswith("mode userns: not available, user_namespaces: user.max_user_namespaces is 0")
    assert reasons[3] == "mode fusermount: chosen, /dev/fuse is usable and /usr/bin/fusermount is setuid root"
    assert reasons[4] == "engine cvmfs2: the staged el7-x86_64 distribution cvmfs2-osg-el7-x86_64 fits el7-x86_64"


def test_apparmor_restriction_is_the_reason_on_ubuntu24():
    decision = decide.decide(recorded("ubuntu24-apparmor"), "optional", DISTS)
    assert any("apparmor_restrict_unprivileged_userns is 1" in reason for reason in decision.reasons)
    assert decision.reasons[-1] == "mode none: no mode that optional allows works here"


def test_a_failed_requirement_explains_itself():
    decision = decide.decide(recorded("container-masked-proc"), "required", DISTS)
    assert "dev_fuse: /dev/fuse is missing" in " ".join(decision.reasons)
    assert decision.reasons[-1].startswith("error: CVMFS is required but cannot be provided")


def test_native_cvmfs_comes_first():
    decision = decide.decide(with_native_cvmfs(recorded("suse15")), "optional", DISTS, forced_engine=PYTHON)
    assert (decision.mode, decision.engine) == (NATIVE, HOST)
    assert decision.reasons[-1] == "engine: the host's own client serves /cvmfs (--engine python does not apply)"


def test_engine_falls_back_to_python():
    assert decide.decide(recorded("suse15"), "required", []).engine == PYTHON
    failing = [dict(d, runs=False) for d in DISTS]
    decision = decide.decide(recorded("suse15"), "required", failing)
    assert decision.engine == PYTHON
    assert decision.reasons[-1] == "engine python: no staged cvmfs2 distribution fits suse15-x86_64"


def test_forced_mode_and_engine():
    forced = decide.decide(recorded("suse15"), "preferred", DISTS, forced_mode=FUSERMOUNT, forced_engine=PYTHON)
    assert (forced.mode, forced.engine, forced.failed) == (FUSERMOUNT, PYTHON, False)
    assert forced.reasons[1] == ("mode fusermount: forced by --mode; the probe says it will not work: fusermount: "
                                 "neither fusermount3 nor fusermount is installed")
    assert forced.attributes["CVMFS_MOUNT_DIR"] == "/tmp/pilot/cvmfs"
    never = decide.decide(recorded("suse15"), "never", DISTS, forced_mode=USERNS)
    assert never.mode == NONE and "does not apply" in never.reasons[1]
    no_build = decide.decide(recorded("container-masked-proc"), "preferred", [], forced_mode=USERNS,
                             forced_engine=CVMFS2)
    assert (no_build.mode, no_build.failed) == (NONE, True)
    assert "no staged cvmfs2 distribution fits el9-x86_64" in no_build.reasons[-1]
    export = decide.decide(recorded("suse15"), "preferred", DISTS, forced_mode=EXPORT, forced_engine=CVMFS2)
    assert export.failed and "cannot export without FUSE" in export.reasons[-1]


def test_glidein_attributes():
    assert decide.decide(recorded("suse15"), "required", DISTS).attributes == {
        "HAS_UNPRIVILEGED_USER_NAMESPACES": "enabled"}
    assert decide.decide(recorded("rhel7"), "required", DISTS).attributes == {
        "HAS_UNPRIVILEGED_USER_NAMESPACES": "disabled", "CVMFS_MOUNT_DIR": "/scratch/glidein_1/cvmfs"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(requirement="sometimes"), "unknown requirement level 'sometimes'"),
    (dict(requirement="required", forced_mode="magic"), "unknown mode 'magic'"),
    (dict(requirement="required", forced_engine="cvmfs3"), "unknown engine 'cvmfs3'"),
])
def test_bad_requests_are_refused(kwargs, message):
    with pytest.raises(decide.DecisionError, match=message):
        decide.decide(recorded("suse15"), **kwargs)


def test_a_record_that_is_not_a_probe_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 99}')
    with pytest.raises(ValueError, match="not a probe record"):
        probe.load(str(bad))


def _node(*args):
    return subprocess.run([sys.executable, "-m", "cvmfs_pilot", "node"] + list(args),
                          env=dict(os.environ, PYTHONPATH=str(SRC)), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


def test_cli_decides_from_a_recorded_probe_and_writes_the_record(tmp_path):
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"format": 1, "distributions": DISTS}))
    done = _node("decide", "--probe-file", str(PROBES / "rhel7.json"), "--require", "Required",
                 "--distributions", str(index), "--work-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "mode fusermount, engine cvmfs2"
    assert "HAS_UNPRIVILEGED_USER_NAMESPACES = disabled" in done.stdout
    record = json.loads((tmp_path / "cvmfs-pilot-decision.json").read_text())
    assert record["decision"]["mode"] == FUSERMOUNT and record["probe"]["format"] == probe.FORMAT
    assert sorted(os.listdir(str(tmp_path))) == ["cvmfs-pilot-decision.json", "index.json"]


def test_cli_fails_when_cvmfs_is_required_but_impossible():
    done = _node("decide", "--probe-file", str(PROBES / "container-masked-proc.json"), "--require", "required",
                 "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["failed"] is True


def test_cli_reports_bad_input(tmp_path):
    done = _node("decide", "--probe-file", str(tmp_path / "missing.json"))
    assert done.returncode == 2 and "missing.json" in done.stderr
    done = _node("decide", "--probe-file", str(PROBES / "suse15.json"), "--require", "maybe")
    assert done.returncode == 2 and "unknown requirement level 'maybe'" in done.stderr


def test_cli_decides_live():
    done = _node("decide", "--require", "preferred", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["mode"] == USERNS
