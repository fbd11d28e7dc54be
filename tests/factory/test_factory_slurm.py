"""The slurm provider on the real single-node cluster (the ``slurm`` fixture), with a stand-in bootstrap (the
mechanics only). The factory's commands run as the unprivileged test user, as a factory does."""

import json
import sys

import pytest

from cvmfs_pilot.factory import PilotRecord, load_config, stage
from cvmfs_pilot.factory.providers import slurm as slurm_provider

from support.factory_env import BASE_TOML, wait_for, write_factory

CLUSTER_ENTRY = """
[entries.cluster]
provider = "slurm"
credential = "token"
lifetime = {max_walltime = 300, grace = 10}
provider_options = {partition = "debug", time = "00:10:00", extra_args = ["--mem=100M"]}

[entries.nowhere]
provider = "slurm"
provider_options = {partition = "no-such-partition"}
"""


@pytest.fixture
def cluster_factory(slurm, unprivileged, fake_bootstrap):
    directory = slurm.user_dir("factory")
    config = load_config(write_factory(directory, BASE_TOML + CLUSTER_ENTRY, {"token": "eyJ0eXAi.token.sig\n"}))
    stage(config)
    unprivileged.own(directory)  # the test user, who also owns the jobs
    return config


def factory_command(slurm, config, *args, mode="wait", check=True):
    """Run ``cvmfs-pilot ARGS --config F`` as the test user."""
    result = slurm.run([sys.executable, "-m", "cvmfs_pilot", *args, "--config", str(config.path)],
                       env={"FAKE_PILOT": mode}, check=False)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def pilot_states(slurm, config):
    return {item["id"]: item for item in json.loads(factory_command(slurm, config, "status", "--json").stdout)}


def test_submit_status_finish_and_remove(slurm, cluster_factory):
    config = cluster_factory
    lines = factory_command(slurm, config, "submit", "--entry", "cluster", "--count", "2").stdout.splitlines()
    assert len(lines) == 2
    records = [PilotRecord.load(config.pilots_dir / "cluster" / line.split()[0]) for line in lines]
    slurm.jobs.extend(record.job_id for record in records)  # cancelled at the end of the session if still there
    first, second = records
    for record in records:
        assert record.provider == "slurm" and record.job_id.isdigit()
        assert record.submission[:4] == ["sbatch", "--parsable", "--job-name", "cvmfs-pilot-cluster"]
        assert record.submission[-len(record.command):] == record.command
        assert ["--partition", "debug"] == record.submission[record.submission.index("--partition"):][:2]
        copy = record.directory / "credential" / "token"
        assert record.command[-2:] == ["-credential", str(copy)] and copy.stat().st_mode & 0o077 == 0
        slurm.wait(record.job_id, "RUNNING")
        job = slurm.job(record.job_id)
        assert job["JobName"] == "cvmfs-pilot-cluster" and job["StdOut"] == str(record.directory / "stdout")
        assert job["WorkDir"] == str(record.directory)
        assert job["TimeLimit"] == "00:10:00"
        args = wait_for(lambda: (record.directory / "args").exists() and (record.directory / "args").read_text())
        assert args.splitlines() == record.command[1:]
        assert (record.directory / "args").stat().st_uid == slurm.user.pw_uid  # ran as the user, in its record
    states = pilot_states(slurm, config)
    assert [states[r.id]["state"] for r in records] == ["running", "running"]
    assert states[first.id]["job_id"] == first.job_id

    (first.directory / "go").touch()
    slurm.wait(first.job_id, "COMPLETED")
    item = pilot_states(slurm, config)[first.id]
    assert (item["state"], item["outcome"], item["duration"], item["exit_code"]) == ("finished", "success", 1.5, 0)

    result = factory_command(slurm, config, "remove", "--entry", "cluster")
    assert result.stdout == "{} removed\n".format(second.id)
    slurm.wait(second.job_id, "CANCELLED")
    assert pilot_states(slurm, config)[second.id]["state"] == "removed"
    table = factory_command(slurm, config, "status", "--entry", "cluster").stdout
    assert "{}  removed".format(second.id) in table and "finished" in table


def test_the_state_queries_behind_squeue(slurm, cluster_factory):
    """squeue first; sacct (accounting), sacct --completion and scontrol are the fallbacks once squeue has
    forgotten a job. Each is asked here about a live job."""
    config = cluster_factory
    line = factory_command(slurm, config, "submit", "--entry", "cluster").stdout
    record = PilotRecord.load(config.pilots_dir / "cluster" / line.split()[0])
    slurm.jobs.append(record.job_id)
    slurm.wait(record.job_id, "RUNNING")
    assert slurm_provider.squeue_state(record.job_id) == "RUNNING"
    assert slurm_provider.scontrol_state(record.job_id) == "RUNNING"
    assert slurm_provider.sacct_state(record.job_id) in (None, "RUNNING")  # None: no accounting storage here
    assert slurm_provider.squeue_state("999999999") is None
    assert slurm_provider.scontrol_state("999999999") is None
    provider = slurm_provider.SlurmProvider({})
    assert provider.batch_state(record) == "running"
    forgotten = PilotRecord.load(record.directory)
    forgotten.job_id = "999999999"
    assert provider.state(forgotten) == "lost"  # no batch system knows it, and there is no report
    (record.directory / "go").touch()
    slurm.wait(record.job_id, "COMPLETED")
    assert provider.state(record) == "finished"


def test_sbatch_refusing_a_pilot_leaves_no_record(slurm, cluster_factory):
    config = cluster_factory
    result = factory_command(slurm, config, "submit", "--entry", "nowhere", check=False)
    assert result.returncode == 1
    assert "pilot 1 of 1 to entry nowhere failed: sbatch refused the pilot (exit status 1)" in result.stderr
    assert "invalid partition" in result.stderr.lower() and "check the entry's provider_options" in result.stderr
    assert not list((config.pilots_dir / "nowhere").iterdir())
