"""The htcondor provider: the submit descriptions, validated by the HTCondor Python bindings (no HTCondor daemon
runs here, so submitting must fail clearly)."""

import pytest

from cvmfs_pilot.cli import main
from cvmfs_pilot.factory import SubmitError, describe, load_config, stage, status, submit
from cvmfs_pilot.factory.providers.htcondor import bindings, condor_arguments

from support.factory_env import BASE_TOML, write_factory

ENTRIES = """
[entries.condor]
provider = "htcondor"
lifetime = {max_walltime = 7200}

[entries.ce]
provider = "htcondor"
credential = "x509up_u1000"

[entries.ce.provider_options]
universe = "grid"
grid_resource = "condor ce.example.org ce.example.org:9619"
requirements = "TARGET.HAS_SINGULARITY =?= true"
extra = {request_memory = 2048, "+ProjectName" = '"cvmfs"', x509userproxy = "/tmp/x509up_u1000"}
"""


@pytest.fixture
def condor_config(tmp_path):
    config = load_config(write_factory(tmp_path, BASE_TOML + ENTRIES, {"x509up_u1000": "-----BEGIN CERTIFICATE-----\n"}))
    stage(config)
    return config


def test_the_vanilla_universe_description(condor_config):
    config = condor_config
    [record] = submit(config, "condor", 1, dry_run=True)
    digest = (config.staging_dir / "index.json.sha256").read_text().split()[0]
    directory = record.directory
    assert record.command == [str(directory / "glidein_startup.sh"), "-factory", "http://127.0.0.1:8080/",
                              "-factory-sha256", digest, "-entry", "condor", "-id", record.id,
                              "-report", "report.json"]  # no -work-dir: the job's scratch directory
    assert describe(config, record) == "\n".join([
        "universe = vanilla",
        "executable = {}/glidein_startup.sh".format(directory),
        'arguments = "-factory http://127.0.0.1:8080/ -factory-sha256 {} -entry condor -id {} -report '
        'report.json"'.format(digest, record.id),
        "initialdir = {}".format(directory),
        "output = {}/stdout".format(directory),
        "error = {}/stderr".format(directory),
        "log = {}/condor.log".format(directory),
        "should_transfer_files = YES",
        "when_to_transfer_output = ON_EXIT",
        'MY.cvmfs_pilot_factory = "test-factory"',
        'MY.cvmfs_pilot_entry = "condor"',
        'MY.cvmfs_pilot_id = "{}"'.format(record.id),
        "queue",
        ""])


def test_the_grid_universe_description_with_a_credential(condor_config):
    config = condor_config
    [record] = submit(config, "ce", 1, dry_run=True)
    assert record.command[-4:] == ["-report", "report.json", "-credential", "x509up_u1000"]
    text = describe(config, record)
    lines = text.splitlines()
    assert lines[0] == "universe = grid"
    assert "grid_resource = condor ce.example.org ce.example.org:9619" in lines
    assert "transfer_input_files = {}/credential/x509up_u1000".format(record.directory) in lines
    assert "requirements = TARGET.HAS_SINGULARITY =?= true" in lines
    assert "request_memory = 2048" in lines and 'MY.ProjectName = "cvmfs"' in lines
    assert "x509userproxy = /tmp/x509up_u1000" in lines
    assert 'MY.cvmfs_pilot_entry = "ce"' in lines and lines[-1] == "queue"
    submit_object = bindings().Submit(record.submission)
    assert submit_object["universe"] == "grid" and submit_object["should_transfer_files"] == "YES"


def test_arguments_with_spaces_and_quotes():
    assert condor_arguments(["-a", "two words", "it's", 'say "hi"', ""]) == \
        '"-a \'two words\' \'it\'\'s\' \'say ""hi""\' \'\'"'
    description = bindings().Submit({"executable": "/bin/echo", "arguments": condor_arguments(["x y", "z"])})
    assert description["arguments"] == "\"'x y' z\""


def test_submitting_without_a_schedd_fails_clearly_and_leaves_nothing(condor_config, capsys):
    config = condor_config
    with pytest.raises(SubmitError, match=r"no HTCondor schedd is reachable from here .*run this on an HTCondor "
                                          r"access point \(submit host\), or use --dry-run"):
        submit(config, "condor", 1)
    assert status(config) == [] and not list((config.pilots_dir / "condor").iterdir())
    assert main(["submit", "--config", str(config.path), "--entry", "ce", "--dry-run", "--count", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("# pilot ce-") == 2 and out.count("universe = grid\n") == 2


def test_the_dry_run_of_every_provider(tmp_path, capsys):
    toml = BASE_TOML + ENTRIES + """
[entries.cluster]
provider = "slurm"
provider_options = {partition = "debug", time = "02:00:00", extra_args = ["--mem=500M"]}
"""
    config = load_config(write_factory(tmp_path, toml, {"x509up_u1000": "proxy\n"}))
    stage(config)
    for entry, expected in [("local-test", "/bin/sh {}/local-test/local-test-"),
                            ("cluster", "sbatch --parsable --job-name cvmfs-pilot-cluster --chdir {}/cluster/cluster-"),
                            ("condor", "universe = vanilla\nexecutable = {}/condor/condor-")]:
        assert main(["submit", "--config", str(config.path), "--entry", entry, "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("# pilot {}-".format(entry)) and expected.format(config.pilots_dir) in out, out
    assert not config.pilots_dir.exists()
