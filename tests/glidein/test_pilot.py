"""The pilot end to end, as the unprivileged user on this host without /cvmfs: the staged bootstrap verifies and
starts the runtime, scripts run in GlideinWMS order with the helpers, CVMFS comes from the node layer, the
payload reads /cvmfs, and the pilot cleans up and reports, however it ends."""

import base64
import json
import os
import signal
import stat
import subprocess
import time

import pytest

from support.exec_env import ONE, TWO, wait_for_file
from support.pilot_env import HELPERS_PREAMBLE, PilotEnv


@pytest.fixture
def pilot_env(exec_env):
    return PilotEnv(exec_env)


def _outcome(report):
    return report["outcome"], report["failure_class"], report["exit_code"]


def test_a_pilot_gives_its_job_cvmfs(pilot_env):
    after = HELPERS_PREAMBLE + ('cat /cvmfs/{}/hello.txt > "$(gconfig_get GLIDEIN_WORK_DIR)/seen-by-script"\n'
                                '"$error_gen" -ok after.sh\n').format(ONE)
    pilot_env.stage(pilot_env.cvmfs_attributes(), payload=[
        ["cat", "/cvmfs/{}/hello.txt".format(ONE)], ["/cvmfs/{}/bin/tool.sh".format(ONE)],
        ["sh", "-c", 'cat "$GLIDEIN_WORK_DIR/seen-by-script"']], files=[("after.sh", "after_file_list", "exec",
                                                                          after)])
    result, report = pilot_env.run_pilot()
    assert result.returncode == 0, result.stdout + result.stderr
    assert _outcome(report) == ("success", None, 0)
    assert report["cvmfs"]["mode"] == "userns" and report["cvmfs"]["engine"] == "python"
    assert [p["stdout_tail"] for p in report["payload"]] == ["hello from one\n", "tool of one\n", "hello from one\n"]
    assert [s["result"] for s in report["steps"]] == ["ok"] * len(report["steps"])
    assert os.listdir(pilot_env.pilots) == []  # the work directory is gone


def test_scripts_run_in_glideinwms_order_with_the_helpers(pilot_env):
    def script(name):
        return HELPERS_PREAMBLE + textwrap_script(name)

    files = [("first.sh", "file_list", "exec", script("first")),
             ("pre.sh", "precvmfs_file_list", "exec", script("pre")),
             ("at.sh", "at_file_list", "exec", script("at")),
             ("after.sh", "after_file_list", "exec", script("after"))]
    entry_files = [("entry.sh", "file_list", "exec", script("entry"))]
    frontend = {"attributes": {"FRONTEND_SAYS": "frontend"},
                "files": [("client.sh", "file_list", "exec", script("client"))]}
    pilot_env.stage(pilot_env.cvmfs_attributes(FRONTEND_SAYS="factory", ENTRY_SAYS="factory"), files=files,
                    entry_files=entry_files, entry_attributes={"ENTRY_SAYS": "entry"}, frontend=frontend,
                    payload=[["sh", "-c", 'echo "$ORDER_JOB_ENV"']])
    result, report = pilot_env.run_pilot()
    assert result.returncode == 0, result.stdout + result.stderr
    # each script appended its name and id to ORDER; the last one exported it to the job through condor vars
    assert report["payload"][0]["stdout_tail"].split() == [
        "first:main", "entry:entry", "pre:main", "at:main", "client:client", "after:main",
        "frontend", "entry"]
    names = [s["name"] for s in report["steps"]]
    assert names.index("precvmfs_file_list main pre.sh") < names.index("cvmfs") < names.index(
        "at_file_list main at.sh")


def textwrap_script(name):
    """A script that appends "<name>:<id>" to the glidein_config key ORDER and exports the result to the job."""
    return ('order="$(gconfig_get ORDER) {name}:$2"\n'
            'gconfig_add ORDER "$order"\n'
            'gconfig_add ORDER_JOB_ENV "$order $(gconfig_get FRONTEND_SAYS) $(gconfig_get ENTRY_SAYS)"\n'
            'add_condor_vars_line ORDER_JOB_ENV "S" "-" "+" "N" "N" "+"\n'
            '"$error_gen" -ok "{name}.sh" order "$order"\n').format(name=name)


def test_a_tampered_staged_file_stops_the_pilot_before_it_runs_anything(pilot_env):
    marker = pilot_env.exec_env.scratch / "ran"
    first = "#!/bin/sh\ntouch {}\n".format(marker)
    pilot_env.stage(pilot_env.cvmfs_attributes(), payload=[["touch", str(marker)]],
                    files=[("first.sh", "file_list", "exec", first),
                           ("later.sh", "after_file_list", "exec", "#!/bin/sh\nexit 0\n")])
    listed = json.loads((pilot_env.staging / "index.json").read_text())["files"]["later.sh"]
    for copy in (pilot_env.staging / "files" / "later.sh", pilot_env.staging / "objects" / listed["sha256"]):
        copy.write_text("#!/bin/sh\nexit 1\n")  # changed on the web server (both copies), same size
    result, report = pilot_env.run_pilot()
    assert result.returncode == 11
    assert _outcome(report) == ("failed", "config", 11)
    assert "later.sh" in report["reason"] and "SHA-256" in report["reason"] and "refused" in report["reason"]
    assert not marker.exists()
    assert os.listdir(pilot_env.pilots) == []


def test_a_pilot_queued_with_an_older_index_gets_the_files_of_that_index(pilot_env):
    """Re-staging replaces files/check.sh; the pilot submitted before holds the old index hash and gets the old
    version from objects/<sha256>, verified against its own index."""
    def check(word):
        return HELPERS_PREAMBLE + 'gconfig_add CHECK_VERSION {}\n"$error_gen" -ok check.sh\n'.format(word)

    payload = [["sh", "-c", 'grep "^CHECK_VERSION " "$GLIDEIN_WORK_DIR/../glidein_config"']]
    old = pilot_env.stage(pilot_env.cvmfs_attributes(GLIDEIN_CVMFS="never"), payload=payload,
                          files=[("check.sh", "file_list", "exec", check("old"))])
    new = pilot_env.stage(pilot_env.cvmfs_attributes(GLIDEIN_CVMFS="never"), payload=payload,
                          files=[("check.sh", "file_list", "exec", check("new"))])
    assert old != new
    pilot_env.index_sha256 = old
    result, report = pilot_env.run_pilot()
    assert result.returncode == 0, result.stdout
    assert report["payload"][0]["stdout_tail"] == "CHECK_VERSION old\n"


def test_a_wrong_index_hash_stops_the_bootstrap(pilot_env):
    pilot_env.stage(pilot_env.cvmfs_attributes(), payload=[["true"]])
    pilot_env.index_sha256 = "f" * 64
    result, report = pilot_env.run_pilot()
    assert result.returncode == 11
    assert _outcome(report) == ("failed", "config", 11)
    assert "f" * 64 in report["reason"]
    assert os.listdir(pilot_env.pilots) == []


def test_a_failing_validation_script_stops_the_pilot_and_cleanup_still_runs(pilot_env):
    marker = pilot_env.exec_env.scratch / "payload-ran"
    cleaned = pilot_env.exec_env.scratch / "cleaned"
    check = HELPERS_PREAMBLE + ('"$error_gen" -error "check.sh" "WN_Resource" "not enough scratch space" '
                                '"free_mb" "12"\nexit 1\n')
    cleanup = "#!/bin/sh\ntouch {}\n".format(cleaned)
    pilot_env.stage(pilot_env.cvmfs_attributes(), payload=[["touch", str(marker)]],
                    files=[("check.sh", "file_list", "exec", check), ("cleanup.sh", "cleanup", "exec", cleanup)])
    result, report = pilot_env.run_pilot()
    assert result.returncode == 10
    assert _outcome(report) == ("failed", "site", 10)
    assert "not enough scratch space" in report["reason"] and "WN_Resource" in report["reason"]
    assert not marker.exists() and cleaned.exists()


def test_a_failing_payload_is_a_job_failure(pilot_env):
    pilot_env.stage(pilot_env.cvmfs_attributes(), payload=[["sh", "-c", "echo oops >&2; exit 3"], ["true"]])
    result, report = pilot_env.run_pilot()
    assert result.returncode == 12
    assert _outcome(report) == ("failed", "job", 12)
    assert report["payload"][0]["exit_status"] == 3 and report["payload"][0]["stderr_tail"] == "oops\n"
    assert len(report["payload"]) == 1


def test_the_walltime_limit_ends_the_payload(pilot_env):
    pilot_env.stage(pilot_env.cvmfs_attributes(), payload=[["sleep", "120"]],
                    lifetime={"max_walltime": 4, "grace": 1})
    started = time.monotonic()
    result, report = pilot_env.run_pilot()
    assert time.monotonic() - started < 60
    assert result.returncode == 12
    assert "walltime" in report["reason"]
    assert report["payload"][0]["ended"] == "deadline"


def test_no_payload_command_starts_after_the_retire_time(pilot_env):
    pilot_env.stage(pilot_env.cvmfs_attributes(), payload=[["sleep", "3"], ["echo", "too late"]],
                    lifetime={"max_walltime": 600, "retire": 2})
    result, report = pilot_env.run_pilot()
    assert result.returncode == 0, result.stderr
    assert [s["result"] for s in report["steps"] if s["name"].startswith("payload")] == ["ok", "skipped"]


@pytest.mark.parametrize("attributes, outcome, mode", [
    ({"GLIDEIN_CVMFS": "NEVER"}, ("success", None, 0), "none"),
    ({"GLIDEIN_CVMFS": "Preferred", "GLIDEIN_CVMFS_MODE": "fusermount"}, ("success", None, 0), "fusermount"),
    ({"GLIDEIN_CVMFS": "required", "GLIDEIN_CVMFS_REPOS": "missing.exec.test"}, ("failed", "site", 10), None),
    ({"GLIDEIN_CVMFS": "preferred", "GLIDEIN_CVMFS_REPOS": "missing.exec.test"}, ("success", None, 0), "none"),
    ({"CVMFS_SRC": "nonsense"}, ("failed", "config", 11), None),
    ({"GLIDEIN_CVMFS": "sometimes"}, ("failed", "config", 11), None),
])
def test_cvmfs_attributes(pilot_env, attributes, outcome, mode):
    pilot_env.stage(pilot_env.cvmfs_attributes(**attributes), payload=[["true"]])
    result, report = pilot_env.run_pilot()
    assert _outcome(report) == outcome, report["reason"]
    assert result.returncode == outcome[2]
    if mode is not None:
        assert report["cvmfs"]["mode"] == mode


def test_fusermount_mode_exports_the_mount_directory_to_scripts_and_job(pilot_env):
    at = HELPERS_PREAMBLE + 'test "$(gconfig_get CVMFS_MOUNT_DIR)" = "$CVMFS_MOUNT_DIR" || exit 1\n' \
                            '"$error_gen" -ok at.sh\n'
    pilot_env.stage(pilot_env.cvmfs_attributes(GLIDEIN_CVMFS_MODE="fusermount", GLIDEIN_CVMFS_REPOS=TWO),
                    files=[("at.sh", "at_file_list", "exec", at)],
                    payload=[["sh", "-c", 'cat "$CVMFS_MOUNT_DIR/{}/greeting.txt"'.format(TWO)]])
    result, report = pilot_env.run_pilot()
    assert result.returncode == 0, result.stdout
    assert report["payload"][0]["stdout_tail"] == "greetings from two\n"
    assert report["cvmfs"]["mount_dir"].endswith("/cvmfs")


def test_sigterm_ends_the_pilot_cleanly(pilot_env):
    started = pilot_env.exec_env.scratch / "started"
    pilot_env.stage(pilot_env.cvmfs_attributes(), payload=[
        ["sh", "-c", "touch {}; cat /cvmfs/{}/hello.txt; sleep 300".format(started, ONE)]])
    pilot = pilot_env.popen_pilot()
    wait_for_file(started)
    pilot.send_signal(signal.SIGTERM)
    pilot.communicate(timeout=120)
    assert pilot.returncode == 10
    report = pilot_env.report("p1")
    assert _outcome(report) == ("failed", "site", 10)
    assert "signal 15" in report["reason"]
    assert os.listdir(pilot_env.pilots) == []


def _token(expires):
    def part(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return "{}.{}.{}".format(part({"alg": "none"}), part({"sub": "pilot", "exp": expires}), "c2lnbmF0dXJl")


def test_a_bearer_token_reaches_the_job_and_is_never_shown(pilot_env):
    secret = _token(int(time.time()) + 3600)
    token = pilot_env.exec_env.scratch / "token"
    token.write_text(secret + "\n")
    pilot_env.exec_env.unprivileged.own(token)
    pilot_env.stage(pilot_env.cvmfs_attributes(), lifetime={"max_walltime": 7200}, payload=[
        ["sh", "-c", 'stat -c %a "$BEARER_TOKEN_FILE"; cut -c1-5 "$BEARER_TOKEN_FILE"']])
    result, report = pilot_env.run_pilot("p1", "-credential", str(token))
    assert result.returncode == 0, result.stdout
    assert report["payload"][0]["stdout_tail"].split() == ["600", secret[:5]]
    credential_step = pilot_env.step(report, "credential")
    assert "bearer token" in credential_step["detail"] and "WARNING" in credential_step["detail"]
    shown = result.stdout + result.stderr + json.dumps(report)
    assert secret not in shown and secret.split(".")[1] not in shown
    assert os.listdir(pilot_env.pilots) == []


def test_an_x509_proxy_reaches_the_job(pilot_env, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=pilot proxy"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    proxy = pilot_env.exec_env.scratch / "x509up"
    proxy.write_bytes(cert.read_bytes() + key.read_bytes())
    pilot_env.exec_env.unprivileged.own(proxy)
    pilot_env.stage(pilot_env.cvmfs_attributes(), lifetime={"max_walltime": 600}, payload=[
        ["sh", "-c", 'stat -c %a "$X509_USER_PROXY"; openssl x509 -noout -subject -in "$X509_USER_PROXY"']])
    result, report = pilot_env.run_pilot("p1", "-credential", str(proxy))
    assert result.returncode == 0, result.stdout
    mode, subject = report["payload"][0]["stdout_tail"].splitlines()
    assert mode == "600" and "pilot proxy" in subject
    detail = pilot_env.step(report, "credential")["detail"]
    assert detail.startswith("X.509 proxy expiring in") and "WARNING" not in detail
    assert "PRIVATE KEY" not in result.stdout + json.dumps(report)


def test_the_work_directory_is_kept_with_debug(pilot_env):
    pilot_env.stage(pilot_env.cvmfs_attributes(GLIDEIN_CVMFS="never"), payload=[["true"]])
    result, report = pilot_env.run_pilot("p1", "-debug")
    assert result.returncode == 0
    kept = os.listdir(pilot_env.pilots)
    assert len(kept) == 1
    work = pilot_env.pilots / kept[0]
    assert (work / "glidein_config").exists()
    assert stat.S_IMODE(os.stat(work).st_mode) == 0o700
