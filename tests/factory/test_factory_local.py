"""submit, status and remove with the local provider, with a stand-in bootstrap (the mechanics only; real pilots
run in the end-to-end tests)."""

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cvmfs_pilot.factory import FactoryError, PilotRecord, SubmitError, load_config, remove, stage, status, submit
from cvmfs_pilot.factory.pilots import active_pilot_ids

from support.factory_env import BASE_TOML, FAKE_PILOT, process_alive, wait_for, write_factory

PROJECT = Path(__file__).resolve().parent.parent.parent
CVMFS_PILOT = [sys.executable, "-m", "cvmfs_pilot"]


def state_of(config, pilot_id):
    return next(item for item in status(config) if item["id"] == pilot_id)


@pytest.fixture
def staged(config, fake_bootstrap):
    stage(config)
    return config


@pytest.fixture
def pilots_mode(monkeypatch):
    """Set what the stand-in pilots do ($FAKE_PILOT, inherited by local pilots)."""
    return lambda mode: monkeypatch.setenv("FAKE_PILOT", mode)


@pytest.fixture
def cleanup_processes():
    """Kill what a test leaves behind: register pids with the returned list."""
    pids = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def test_submit_running_finished(staged, pilots_mode, cleanup_processes):
    config = staged
    pilots_mode("wait")
    records = submit(config, "local-test", 2)
    cleanup_processes.extend(r.details["pid"] for r in records)
    assert len({r.id for r in records}) == 2
    digest = (config.staging_dir / "index.json.sha256").read_text().split()[0]
    for record in records:
        assert record.id.startswith("local-test-") and record.directory == config.pilots_dir / "local-test" / record.id
        saved = json.loads((record.directory / "pilot.json").read_bytes())
        assert saved["id"] == record.id and saved["entry"] == "local-test" and saved["provider"] == "local"
        assert saved["job_id"] == str(saved["details"]["pid"]) and saved["details"]["start_time"] > 0
        assert saved["index_sha256"] == digest and saved["submitted"].endswith("Z")
        assert saved["command"] == [str(record.directory / "glidein_startup.sh"), "-factory", "http://127.0.0.1:8080/",
                                    "-factory-sha256", digest, "-entry", "local-test", "-id", record.id,
                                    "-work-dir", str(record.directory / "work"),
                                    "-report", str(record.directory / "report.json")]
        assert saved["submission"] == ["/bin/sh"] + saved["command"]
        assert PilotRecord.load(record.directory) == record
        assert (record.directory / "glidein_startup.sh").read_text() == FAKE_PILOT
        assert stat.S_IMODE((record.directory / "glidein_startup.sh").stat().st_mode) == 0o755
        assert (record.directory / "work").is_dir()
        args = wait_for(lambda: (record.directory / "args").exists() and (record.directory / "args").read_text())
        assert args.splitlines() == saved["command"][1:]
    first, second = records
    assert [item["state"] for item in status(config, "local-test")] == ["running", "running"]
    assert active_pilot_ids(config, "local-test") == [first.id, second.id]

    (first.directory / "go").touch()
    wait_for(lambda: state_of(config, first.id)["state"] == "finished", what="the first pilot finishing")
    item = state_of(config, first.id)
    assert item == {"id": first.id, "entry": "local-test", "provider": "local", "job_id": first.job_id,
                    "submitted": first.submitted, "state": "finished", "outcome": "success", "failure_class": None,
                    "duration": 1.5, "reason": None, "exit_code": 0, "directory": str(first.directory)}
    assert state_of(config, second.id)["state"] == "running"
    (second.directory / "go").touch()
    wait_for(lambda: state_of(config, second.id)["state"] == "finished")
    assert not process_alive(first.details["pid"]) and not process_alive(second.details["pid"])


def test_a_pilot_that_ends_without_a_report_is_lost(staged, pilots_mode):
    pilots_mode("crash")
    [record] = submit(staged, "local-test", 1)
    wait_for(lambda: state_of(staged, record.id)["state"] == "lost")
    assert state_of(staged, record.id)["outcome"] is None
    assert remove(staged, [record.id]) == [{"id": record.id, "state": "lost", "removed": False}]


def test_remove_ends_the_process_group(staged, pilots_mode, cleanup_processes):
    pilots_mode("group")
    [record] = submit(staged, "local-test", 1)
    child = int(wait_for(lambda: (record.directory / "child").exists() and (record.directory / "child").read_text()))
    cleanup_processes.extend([record.details["pid"], child])
    assert os.getpgid(child) == record.details["pid"]
    assert remove(staged, [record.id]) == [{"id": record.id, "state": "running", "removed": True}]
    assert not process_alive(record.details["pid"]) and not process_alive(child)
    assert state_of(staged, record.id)["state"] == "removed"
    assert PilotRecord.load(record.directory).removed.endswith("Z")
    assert remove(staged, [record.id]) == [{"id": record.id, "state": "removed", "removed": False}]


def test_a_pilot_ignoring_sigterm_is_killed_after_kill_after(staged, pilots_mode, cleanup_processes):
    pilots_mode("stubborn")
    [record] = submit(staged, "local-test", 1)
    child = int(wait_for(lambda: (record.directory / "child").exists() and (record.directory / "child").read_text()))
    cleanup_processes.extend([record.details["pid"], child])
    started = time.monotonic()
    remove(staged, [record.id])
    assert time.monotonic() - started >= 2  # kill_after = 2 in the test configuration
    assert not process_alive(record.details["pid"]) and not process_alive(child)


def test_a_reused_pid_is_not_the_pilot(staged, pilots_mode, cleanup_processes):
    pilots_mode("wait")
    [record] = submit(staged, "local-test", 1)
    pid = record.details["pid"]
    cleanup_processes.append(pid)
    assert state_of(staged, record.id)["state"] == "running"
    # As if the pilot had died and another process had got its pid: same pid, another start time.
    saved = json.loads((record.directory / "pilot.json").read_bytes())
    saved["details"]["start_time"] -= 1
    (record.directory / "pilot.json").write_text(json.dumps(saved))
    assert state_of(staged, record.id)["state"] == "lost"
    assert active_pilot_ids(staged, "local-test") == []
    assert remove(staged, [record.id]) == [{"id": record.id, "state": "lost", "removed": False}]
    assert process_alive(pid)  # the other process was left alone
    (record.directory / "go").touch()
    wait_for(lambda: not process_alive(pid))


def test_dry_run_makes_nothing(staged):
    [record] = submit(staged, "local-test", 1, dry_run=True)
    assert not record.directory.exists() and record.job_id is None
    assert record.submission == ["/bin/sh"] + record.command
    assert status(staged) == []


def test_the_credential_is_copied_privately(tmp_path, fake_bootstrap, pilots_mode):
    toml = BASE_TOML.replace('provider = "local"', 'provider = "local"\ncredential = "secret/token"')
    config = load_config(write_factory(tmp_path, toml, {"secret/token": "eyJhbGciOi.token.sig\n"}))
    stage(config)
    pilots_mode("finish")
    [record] = submit(config, "local-test", 1)
    copy = record.directory / "credential" / "token"
    assert record.credential == str(copy) and copy.read_text() == "eyJhbGciOi.token.sig\n"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600 and stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
    assert record.command[-2:] == ["-credential", str(copy)]
    wait_for(lambda: state_of(config, record.id)["state"] == "finished")
    (tmp_path / "secret" / "token").unlink()
    with pytest.raises(SubmitError, match=r"entries.local-test.credential: .*/secret/token is not a file; renew"):
        submit(config, "local-test", 1)


def test_submitting_needs_a_staged_area_with_the_entry(config, factory_dir, fake_bootstrap):
    with pytest.raises(SubmitError, match=r"the factory staging area .* has no index.json and index.json.sha256; "
                                          r"run 'cvmfs-pilot factory stage' first"):
        submit(config, "local-test", 1)
    stage(config)
    toml = BASE_TOML + '[entries.later]\nprovider = "local"\n'
    later = load_config(write_factory(factory_dir, toml))
    with pytest.raises(SubmitError, match=r"entry later is not in the staged index .*; run 'cvmfs-pilot factory "
                                          r"stage --config"):
        submit(later, "later", 1)
    (config.staging_dir / "files" / "glidein_startup.sh").write_text("#!/bin/sh\necho tampered\n")
    with pytest.raises(SubmitError, match=r"glidein_startup.sh differs from the one the staged index lists"):
        submit(config, "local-test", 1)
    with pytest.raises(FactoryError, match=r"there is no entry 'nope'"):
        submit(config, "nope", 1)
    with pytest.raises(SubmitError, match=r"--count is 0; submit at least one pilot"):
        submit(config, "local-test", 0)
    assert not config.pilots_dir.exists()


def test_unknown_pilot_ids_are_refused(staged):
    with pytest.raises(FactoryError, match=r"no pilot local-test-x below .*/work/pilots; 'cvmfs-pilot status' "
                                           r"lists them"):
        remove(staged, ["local-test-x"])


def test_the_commands_as_an_ordinary_user(tmp_path, fake_bootstrap, unprivileged, cleanup_processes):
    """A factory runs as an ordinary user: submit, status and remove from separate processes (the pilot is not
    the remover's child)."""
    scratch = unprivileged.scratch(tmp_path)
    config = load_config(write_factory(scratch, BASE_TOML))
    stage(config)
    unprivileged.own(scratch)
    env = dict(os.environ, FAKE_PILOT="wait", PYTHONPATH=str(PROJECT / "src"))

    def run(*args):
        result = unprivileged.run(CVMFS_PILOT + list(args) + ["--config", str(config.path)], env=env, cwd=str(scratch))
        assert result.returncode == 0, result.stderr
        return result.stdout

    lines = run("submit", "--entry", "local-test", "--count", "2").splitlines()
    ids = [line.split()[0] for line in lines]
    assert len(ids) == 2 and all(" local job " in line for line in lines)
    records = [PilotRecord.load(config.pilots_dir / "local-test" / pilot_id) for pilot_id in ids]
    cleanup_processes.extend(record.details["pid"] for record in records)
    assert all(os.stat("/proc/{}".format(r.details["pid"])).st_uid == unprivileged.uid for r in records)
    assert [item["state"] for item in json.loads(run("status", "--json"))] == ["running", "running"]
    table = run("status", "--entry", "local-test").splitlines()
    assert table[0].split() == ["id", "state", "job_id", "submitted", "outcome", "failure_class", "duration", "reason"]
    assert [line.split()[:2] for line in table[1:]] == [[ids[0], "running"], [ids[1], "running"]]

    assert run("remove", ids[0]) == "{} removed\n".format(ids[0])
    assert not process_alive(records[0].details["pid"])
    (records[1].directory / "go").touch()
    wait_for(lambda: json.loads(run("status", "--json"))[1]["state"] == "finished")
    assert run("remove", "--entry", "local-test") == "entry local-test has no queued or running pilots\n"
    items = json.loads(run("status", "--json"))
    assert [(item["state"], item["outcome"]) for item in items] == [("removed", None), ("finished", "success")]

    dry = run("submit", "--entry", "local-test", "--dry-run")
    assert dry.startswith("# pilot local-test-") and "\n/bin/sh {}/local-test/local-test-".format(
        config.pilots_dir) in dry
    result = unprivileged.run(CVMFS_PILOT + ["remove", "--config", str(config.path)], env=env)
    assert result.returncode == 2 and "give either --entry NAME or pilot ids" in result.stderr


def test_status_of_a_factory_without_pilots(config, capsys):
    from cvmfs_pilot.cli import main
    assert status(config) == []
    assert main(["status", "--config", str(config.path)]) == 0
    assert capsys.readouterr().out == "no pilots\n"
    assert main(["status", "--config", str(config.path), "--entry", "nope"]) == 1
    assert "there is no entry 'nope'" in capsys.readouterr().err


def test_the_dispatcher_lists_the_factory_groups():
    result = subprocess.run(CVMFS_PILOT + ["--help"], stdout=subprocess.PIPE, text=True, check=True)
    for group in ("factory", "submit", "status", "remove"):
        assert "\n  {:<10} ".format(group) in result.stdout
