"""Pilots submitted by the factory through real batch systems, as the unprivileged user: the local provider and
a real single-node Slurm each run pilots that reach a job reading /cvmfs; scancel (through 'cvmfs-pilot remove')
ends a pilot cleanly, leaving no mount or process. (HTCondor has no daemons here: tests/factory checks its
submit descriptions.)"""

import pytest

from support.exec_env import ONE, wait_for_file
from support.pilot_env import PilotEnv

JOB = ["sh", "-c", "cat /cvmfs/{0}/hello.txt && /cvmfs/{0}/bin/tool.sh".format(ONE)]


@pytest.fixture
def pilot_env(exec_env):
    return PilotEnv(exec_env)


def _assert_reached_the_job(pilot_env, pilots, count):
    assert len(pilots) == count
    for pilot in pilots:
        assert (pilot["state"], pilot["outcome"], pilot["exit_code"]) == ("finished", "success", 0), pilot
        report = pilot_env.record_report(pilot)
        assert report["cvmfs"]["mode"] == "userns"
        assert report["payload"][0]["stdout_tail"] == "hello from one\ntool of one\n"


def test_local_pilots_reach_a_job_reading_cvmfs(pilot_env):
    pilot_env.stage(pilot_env.cvmfs_attributes(), payload=[JOB])
    pilot_env.submit(2)
    _assert_reached_the_job(pilot_env, pilot_env.wait_for_pilots(), 2)


def test_slurm_pilots_reach_a_job_reading_cvmfs(pilot_env, slurm):
    pilot_env.stage(pilot_env.cvmfs_attributes(), payload=[JOB], provider="slurm",
                    provider_options={"partition": slurm.partition, "time": "00:10:00"})
    pilot_env.submit(2)
    _assert_reached_the_job(pilot_env, pilot_env.wait_for_pilots(), 2)


def test_scancel_ends_a_slurm_pilot_cleanly(pilot_env, slurm):
    started = pilot_env.exec_env.scratch / "started"
    pilot_env.stage(pilot_env.cvmfs_attributes(), provider="slurm",
                    provider_options={"partition": slurm.partition, "time": "00:10:00"},
                    payload=[["sh", "-c", "cat /cvmfs/{}/hello.txt; touch {}; sleep 300".format(ONE, started)]])
    (pilot_id,) = pilot_env.submit(1)
    wait_for_file(started, timeout=120)
    pilot_env.factory("remove", pilot_id)  # scancel: SIGTERM to every process of the job, SIGKILL after KillWait
    (pilot,) = pilot_env.wait_for_pilots()
    report = pilot_env.record_report(pilot)
    assert report is not None, "the pilot wrote no report before Slurm's KillWait ran out"
    assert (report["outcome"], report["failure_class"], report["exit_code"]) == ("failed", "site", 10)
    assert "terminated by signal 15" in report["reason"]
    assert report["payload"][0]["ended"] == "stopped"
    # exec_env's teardown fails the test if any process of the user or any mount is left below its directory
