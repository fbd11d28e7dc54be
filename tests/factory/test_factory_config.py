"""factory.toml: what it gives, and each kind of mistake giving a message that names the file, the key and what
to do."""

import pytest

from cvmfs_pilot.factory import ConfigError, load_config

from support.factory_env import BASE_TOML, write_factory


def test_the_base_configuration(factory_dir):
    config = load_config(factory_dir / "factory.toml")
    assert config.name == "test-factory"
    assert config.work_dir == factory_dir / "work"
    assert config.staging_dir == factory_dir / "work" / "staging"
    assert config.staging_urls == ("http://127.0.0.1:8080/",)
    assert config.pilots_dir == factory_dir / "work" / "pilots"
    assert config.payload == [["sh", "-c", "echo hello"]]
    [script] = config.files
    assert (script.path, script.name, script.list, script.type) == (
        factory_dir / "scripts" / "check_disk.sh", "check_disk.sh", "file_list", "exec")
    entry = config.entry("local-test")
    assert entry.provider == "local" and entry.provider_options == {"kill_after": 2}
    assert entry.attributes == {"GLIDEIN_CVMFS_REPOS": "demo.example.org", "GLIDEIN_MAX_WALLTIME": "3600",
                                "GLIDEIN_RETIRE_TIME": "3000", "GLIDEIN_GRACE_TIME": "30"}
    assert [f.name for f in entry.files] == ["entry_check.sh"] and entry.files[0].list == "file_list"
    assert entry.payload is None and entry.credential is None
    assert config.cvmfs is None and config.frontend is None


def test_conversions_defaults_and_optional_sections(tmp_path):
    toml = BASE_TOML.replace('GLIDEIN_CVMFS = "preferred"', 'GLIDEIN_CVMFS = "preferred"\nN = 4\nFLAG = true\n'
                                                           'OFF = false') + """
[entries.cluster]
provider = "slurm"
credential = "token"
provider_options = {partition = "debug", time = "1-00:00:00", extra_args = ["--mem=100M"]}

[entries.ce]
provider = "htcondor"
provider_options = {universe = "grid", grid_resource = "condor ce.example.org ce.example.org:9619", extra = {request_memory = 2000, "+Owner" = "undefined", getenv = true}}

[entries.ce.payload]
commands = [["true"]]

[cvmfs]
dist_staging_dir = "dists"
dist_staging_urls = ["http://127.0.0.1:8080/dists", "http://mirror.example.org/dists/"]

[frontend]
name = "vo"
staging_dir = "/srv/frontend"
staging_urls = ["https://vo.example.org/stage"]
attributes = {VO = "demo"}

[[frontend.files]]
path = "scripts/check_disk.sh"
name = "vo_check.sh"
type = "source"
config_out = "VO_CHECK"
cond = "USE_VO_CHECK"
"""
    config = load_config(write_factory(tmp_path, toml))
    assert config.attributes == {"GLIDEIN_CVMFS": "preferred", "N": "4", "FLAG": "True", "OFF": "False"}
    cluster = config.entry("cluster")
    assert cluster.credential == tmp_path / "token"
    assert cluster.provider_options == {"partition": "debug", "time": "1-00:00:00", "extra_args": ["--mem=100M"]}
    assert cluster.lifetime.max_walltime is None and cluster.attributes == {}
    ce = config.entry("ce")
    assert ce.provider_options == {"universe": "grid", "grid_resource": "condor ce.example.org ce.example.org:9619",
                                   "requirements": None,
                                   "extra": {"request_memory": "2000", "+Owner": "undefined", "getenv": "true"}}
    assert ce.payload == [["true"]]
    assert config.cvmfs.staging_dir == tmp_path / "dists"
    assert config.cvmfs.staging_urls == ("http://127.0.0.1:8080/dists/", "http://mirror.example.org/dists/")
    frontend = config.frontend
    assert (frontend.name, str(frontend.staging_dir), frontend.staging_urls) == (
        "vo", "/srv/frontend", ("https://vo.example.org/stage/",))
    assert frontend.attributes == {"VO": "demo"}
    assert frontend.files[0].list_item() == {"name": "vo_check.sh", "type": "source", "config_out": "VO_CHECK",
                                             "cond": "USE_VO_CHECK"}


def test_an_unknown_entry_is_named_with_the_configured_ones(config):
    with pytest.raises(ConfigError, match=r"there is no entry 'nope' \(configured: local-test\); add "
                                          r"\[entries.nope\]"):
        config.entry("nope")


def test_a_missing_file_says_how_to_give_one(tmp_path):
    with pytest.raises(ConfigError, match="no such file; write a factory.toml"):
        load_config(tmp_path / "factory.toml")


def _replace(old, new):
    assert old in BASE_TOML
    return BASE_TOML.replace(old, new)


MISTAKES = [
    ("invalid TOML", BASE_TOML + "[factory\n", ["not valid TOML", "fix the syntax"]),
    ("no [factory]", '[entries.x]\nprovider = "local"\n', ["factory is missing", "set it to a table ([factory])"]),
    ("misspelt key", _replace('name = "test-factory"', 'name = "test-factory"\nstaging_url = "x"'),
     ["unknown key(s) factory.staging_url", "remove them or fix their spelling"]),
    ("misspelt top-level table", BASE_TOML + "[frontned]\nname = 'x'\n", ["unknown key(s) frontned"]),
    ("name not a string", _replace('name = "test-factory"', "name = 5"),
     ["factory.name: 5 is a number; set it to a name"]),
    ("name with a slash", _replace('name = "test-factory"', 'name = "a/b"'),
     ["factory.name: 'a/b' is not a name (letters, digits"]),
    ("no work_dir", _replace('work_dir = "work"\n', ""), ["factory.work_dir is missing; set it to a path"]),
    ("no staging URLs", _replace('staging_urls = ["http://127.0.0.1:8080/"]', "staging_urls = []"),
     ["factory.staging_urls: is empty; give a non-empty list"]),
    ("a staging URL that is not one", _replace('"http://127.0.0.1:8080/"', '"127.0.0.1:8080"'),
     ["factory.staging_urls: '127.0.0.1:8080' is not an http://, https:// or file:// URL"]),
    ("a list attribute", _replace('GLIDEIN_CVMFS = "preferred"', 'GLIDEIN_CVMFS = ["a"]'),
     ["factory.attributes.GLIDEIN_CVMFS: ['a'] is a list; set it to a string, a whole number or a boolean"]),
    ("a float attribute", _replace('GLIDEIN_CVMFS = "preferred"', 'GLIDEIN_CVMFS = 1.5'),
     ["factory.attributes.GLIDEIN_CVMFS: 1.5 is a number; set it to a string, a whole number or a boolean"]),
    ("an attribute name with a dash", _replace('GLIDEIN_CVMFS = "preferred"', '"GLIDEIN-CVMFS" = "x"'),
     ["factory.attributes.GLIDEIN-CVMFS: is not an attribute name", "rename it"]),
    ("a multi-line attribute", _replace('GLIDEIN_CVMFS = "preferred"', 'GLIDEIN_CVMFS = "a\\nb"'),
     ["factory.attributes.GLIDEIN_CVMFS: contains a line break"]),
    ("a file without path", _replace('path = "scripts/check_disk.sh"\n', ""),
     ["factory.files[1].path is missing; set it to a path"]),
    ("a file without list", _replace('list = "file_list"\n', ""),
     ["factory.files[1].list is missing; set it to one of file_list, precvmfs_file_list"]),
    ("an unknown list", _replace('list = "file_list"', 'list = "file_lsit"'),
     ["factory.files[1].list: 'file_lsit' is not one of file_list, precvmfs_file_list, at_file_list, "
      "after_file_list, cleanup, last_script; use one of them"]),
    ("an unknown type", _replace('list = "file_list"\ntype = "exec"', 'list = "file_list"\ntype = "script"'),
     ["factory.files[1].type: 'script' is not one of exec, source, regular, untar"]),
    ("a cleanup script that is not exec", _replace('list = "file_list"\ntype = "exec"',
                                                   'list = "cleanup"\ntype = "source"'),
     ["factory.files[1].type: must be 'exec' for a file in cleanup"]),
    ("a hidden file name", _replace('list = "file_list"\ntype = "exec"',
                                    'list = "file_list"\ntype = "exec"\nname = ".hidden"'),
     ["factory.files[1].name: '.hidden' is not a file name", "not starting with '.'"]),
    ("a bad config_out", _replace('list = "file_list"\ntype = "exec"',
                                  'list = "file_list"\ntype = "exec"\nconfig_out = "A B"'),
     ["factory.files[1].config_out: 'A B' is not an attribute name"]),
    ("files not an array of tables", _replace('[[factory.files]]\npath = "scripts/check_disk.sh"\nlist = '
                                              '"file_list"\ntype = "exec"\n', "").replace(
        'work_dir = "work"', 'work_dir = "work"\nfiles = ["scripts/check_disk.sh"]'),
     ["factory.files[1]: is a string; write it as a table [[factory.files]]"]),
    ("two last scripts", BASE_TOML.replace("[factory.payload]", '[[factory.files]]\npath = "a.sh"\nlist = '
                                           '"last_script"\ntype = "exec"\n[[factory.files]]\npath = "b.sh"\n'
                                           'list = "last_script"\ntype = "exec"\n[factory.payload]'),
     ["factory.files[2] and factory.files[3]: both are the last_script"]),
    ("a payload that is a string", _replace('commands = [["sh", "-c", "echo hello"]]', 'commands = "echo hello"'),
     ["factory.payload.commands: 'echo hello' is a string; set it to a list of commands"]),
    ("a payload with an empty command", _replace('commands = [["sh", "-c", "echo hello"]]', 'commands = [[]]'),
     ["factory.payload.commands: [[]] is not a list of commands, each a non-empty list of strings"]),
    ("no entries", BASE_TOML.split("[entries.local-test]")[0], ["entries is missing; set it to a table"]),
    ("an unknown provider", _replace('provider = "local"', 'provider = "pbs"'),
     ["entries.local-test.provider: 'pbs' is not one of local, slurm, htcondor; use one of them"]),
    ("no provider", _replace('provider = "local"\n', ""),
     ["entries.local-test.provider is missing; set it to one of local, slurm, htcondor"]),
    ("a bad entry name", _replace("[entries.local-test]", '[entries."local test"]').replace(
        "[entries.local-test.", '[entries."local test".').replace("[[entries.local-test.", '[[entries."local test".'),
     ["entries.local test: the entry name may hold letters, digits and '_.-'"]),
    ("retire after max_walltime", _replace("retire = 3000", "retire = 4000"),
     ["entries.local-test.lifetime.retire: 4000 is after max_walltime (3600)", "set retire below max_walltime"]),
    ("a negative walltime", _replace("max_walltime = 3600", "max_walltime = -1"),
     ["entries.local-test.lifetime.max_walltime: -1 is less than 1; set it to 1 or more"]),
    ("a walltime in a string", _replace("max_walltime = 3600", 'max_walltime = "1h"'),
     ["entries.local-test.lifetime.max_walltime: '1h' is a string; set it to a whole number of seconds"]),
    ("a misspelt lifetime key", _replace("grace = 30", "grace_time = 30"),
     ["unknown key(s) entries.local-test.lifetime.grace_time"]),
    ("a lifetime attribute twice", _replace('GLIDEIN_CVMFS_REPOS = "demo.example.org"',
                                            'GLIDEIN_CVMFS_REPOS = "demo.example.org"\nGLIDEIN_MAX_WALLTIME = 10'),
     ["entries.local-test.attributes.GLIDEIN_MAX_WALLTIME: is also set by lifetime.max_walltime; keep one"]),
    ("an option of another provider", _replace("provider_options = {kill_after = 2}",
                                               'provider_options = {partition = "debug"}'),
     ["unknown key(s) entries.local-test.provider_options.partition"]),
    ("an entry file in another list", _replace('path = "scripts/entry_check.sh"\ntype = "exec"',
                                               'path = "scripts/entry_check.sh"\ntype = "exec"\nlist = "cleanup"'),
     ["entries.local-test.files[1].list: must be 'file_list' here (these files form the entry's list)"]),
    ("a slurm time that is not one", _replace('provider = "local"', 'provider = "slurm"').replace(
        "provider_options = {kill_after = 2}", 'provider_options = {time = "90 minutes"}'),
     ["entries.local-test.provider_options.time: '90 minutes' is not a time limit \"HH:MM:SS\""]),
    ("a slurm time shorter than the lifetime", _replace('provider = "local"', 'provider = "slurm"').replace(
        "provider_options = {kill_after = 2}", 'provider_options = {time = "01:00:00"}'),
     ["entries.local-test.provider_options.time: 01:00:00 is shorter than the pilot's lifetime (max_walltime plus "
      "grace, 3630 s)", "raise it or lower max_walltime"]),
    ("slurm extra_args not strings", _replace('provider = "local"', 'provider = "slurm"').replace(
        "provider_options = {kill_after = 2}", 'provider_options = {extra_args = ["--mem", 100]}'),
     ["entries.local-test.provider_options.extra_args: ['--mem', 100] is not a list of sbatch arguments"]),
    ("the grid universe without grid_resource", _replace('provider = "local"', 'provider = "htcondor"').replace(
        "provider_options = {kill_after = 2}", 'provider_options = {universe = "grid"}'),
     ["entries.local-test.provider_options.grid_resource: is missing; the grid universe needs it"]),
    ("an unknown universe", _replace('provider = "local"', 'provider = "htcondor"').replace(
        "provider_options = {kill_after = 2}", 'provider_options = {universe = "docker"}'),
     ["entries.local-test.provider_options.universe: 'docker' is not 'vanilla' or 'grid'"]),
    ("a dist staging attribute twice", _replace('GLIDEIN_CVMFS = "preferred"', 'CVMFS_DIST_STAGING = "x"') +
     '[cvmfs]\ndist_staging_dir = "d"\ndist_staging_urls = ["http://h/"]\n',
     ["factory.attributes.CVMFS_DIST_STAGING: is also set by [cvmfs]; keep one of them"]),
    ("a frontend without staging_dir", BASE_TOML + '[frontend]\nname = "vo"\nstaging_urls = ["http://h/"]\n',
     ["frontend.staging_dir is missing; set it to a path"]),
]


@pytest.mark.parametrize("toml, expected", [case[1:] for case in MISTAKES], ids=[case[0] for case in MISTAKES])
def test_a_mistake_names_the_file_the_key_and_what_to_do(tmp_path, toml, expected):
    path = write_factory(tmp_path, toml)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(str(path) + ": "), message
    for fragment in expected:
        assert fragment in message, message
