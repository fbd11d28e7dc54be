"""The client configuration chain (cvmfs_pilot.client.config) and the bash-fragment reader under it
(cvmfs_pilot.client.shellvars): order and precedence, the config repository, @fqrn@/@org@, includes, quoting and
expansion, skipped shell constructs (never executed), malformed lines, readonly, overrides and typed getters."""

import os
import textwrap

import pytest

from cvmfs_pilot.client.config import ConfigurationError, config_repository_name, load_configuration
from cvmfs_pilot.client.shellvars import MAX_INCLUDE_DEPTH

CONFIG_REPOSITORY = "cvmfs-config.cern.ch"
CONFIG_REPOSITORY_ROOT = "/cvmfs/" + CONFIG_REPOSITORY


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


class FakeConfigRepository(object):
    """``read(relative_path) -> bytes or None`` over a dict, recording what was asked for."""

    def __init__(self, files):
        self.files = {path: textwrap.dedent(text).lstrip("\n").encode() for path, text in files.items()}
        self.requests = []

    def __call__(self, relative_path):
        self.requests.append(relative_path)
        return self.files.get(relative_path)


@pytest.fixture
def config_dir(tmp_path):
    """An /etc/cvmfs like the one cvmfs, cvmfs-config-default and makedist's default.local install."""
    etc = tmp_path / "etc" / "cvmfs"
    write(etc / "default.conf", """
        # Don't edit here.  Create /etc/cvmfs/default.local.
        CVMFS_CACHE_BASE=/var/lib/cvmfs
        CVMFS_QUOTA_LIMIT=4000
        CVMFS_TIMEOUT=5
        CVMFS_SHARED_CACHE=yes
        CVMFS_CLAIM_OWNERSHIP=yes
        CVMFS_PAC_URLS="http://wpad/wpad.dat"
        CVMFS_KEYS_DIR=/etc/cvmfs/keys
        CVMFS_USE_GEOAPI=no

        # Don't touch the following values unless you're absolutely
        # sure what you do.  Don't copy them to default.local either.
        if [ "x$CVMFS_BASE_ENV" = "x" ]; then
          readonly CVMFS_USER=cvmfs
          readonly CVMFS_MOUNT_DIR=/cvmfs
          readonly CVMFS_BASE_ENV=1
        fi
        """)
    write(etc / "default.d" / "50-cern.conf", """
        CVMFS_CONFIG_REPOSITORY=cvmfs-config.cern.ch
        CVMFS_DEFAULT_DOMAIN=cern.ch
        """)
    write(etc / "default.local", """
        CVMFS_HTTP_PROXY="auto;DIRECT"
        CVMFS_PAC_URLS="http://grid-wpad/wpad.dat;http://wpad/wpad.dat;http://cernvm-wpad.cern.ch/wpad.dat"
        CVMFS_REPOSITORIES=atlas,cms.cern.ch
        CVMFS_QUOTA_LIMIT=20000
        """)
    write(etc / "domain.d" / "cern.ch.conf", """
        CVMFS_SERVER_URL="http://a/cvmfs/@fqrn@;http://b/cvmfs/@fqrn@"
        CVMFS_KEYS_DIR=/etc/cvmfs/keys/cern.ch
        """)
    write(etc / "domain.d" / "cern.ch.local", "CVMFS_USE_GEOAPI=no\n")
    write(etc / "config.d" / "atlas.cern.ch.conf", "CVMFS_MAX_SERVERS=3\n")
    write(etc / "config.d" / "atlas.cern.ch.local", "CVMFS_QUOTA_LIMIT=30000\n")
    return etc


@pytest.fixture
def config_repository():
    return FakeConfigRepository({
        "etc/cvmfs/default.conf": "CVMFS_USE_GEOAPI=yes\nCVMFS_QUOTA_LIMIT=1000\nCVMFS_LOW_SPEED_LIMIT=1024\n",
        "etc/cvmfs/domain.d/cern.ch.conf": """
            CVMFS_SERVER_URL="http://cvmfs-stratum-one.cern.ch/cvmfs/@fqrn@"
            CVMFS_KEYS_DIR=/cvmfs/cvmfs-config.cern.ch/etc/cvmfs/keys/cern.ch
            CVMFS_FALLBACK_PROXY="http://fallback.cern.ch:3128"
            """,
        "etc/cvmfs/config.d/atlas.cern.ch.conf": "CVMFS_MAX_SERVERS=2\nCVMFS_FOLLOW_REDIRECTS=yes\n",
    })


def load_fragment(tmp_path, text, environ=None, fqrn=None):
    """The configuration that a default.conf holding text gives on its own."""
    etc = tmp_path / "fragment"
    write(etc / "default.conf", text)
    return load_configuration(fqrn, str(etc), environ=environ)


def warnings_about(configuration, needle):
    return [warning for warning in configuration.warnings if needle in warning]


# -- the chain -----------------------------------------------------------------------------------------------


def test_realistic_tree(config_dir, config_repository):
    config = load_configuration("atlas.cern.ch", str(config_dir), config_repository_files=config_repository)

    assert config.get("CVMFS_SERVER_URL") == "http://a/cvmfs/atlas.cern.ch;http://b/cvmfs/atlas.cern.ch"
    assert config.origin("CVMFS_SERVER_URL") == "{}/domain.d/cern.ch.conf:1".format(config_dir)
    assert config.get("CVMFS_KEYS_DIR") == "/etc/cvmfs/keys/cern.ch"
    assert config.get("CVMFS_CACHE_BASE") == "/var/lib/cvmfs"
    assert config.origin("CVMFS_CACHE_BASE") == "{}/default.conf:2".format(config_dir)
    assert config.get("CVMFS_HTTP_PROXY") == "auto;DIRECT"
    assert config.get("CVMFS_CONFIG_REPOSITORY") == CONFIG_REPOSITORY
    assert config.origin("CVMFS_CONFIG_REPOSITORY") == "{}/default.d/50-cern.conf:1".format(config_dir)
    assert config.get("CVMFS_QUOTA_LIMIT") == "30000"
    assert config.get("CVMFS_MAX_SERVERS") == "3"
    assert config.get("CVMFS_USE_GEOAPI") == "no"
    assert config.get("CVMFS_FOLLOW_REDIRECTS") == "yes"
    assert config.origin("CVMFS_FOLLOW_REDIRECTS") == (CONFIG_REPOSITORY_ROOT
                                                       + "/etc/cvmfs/config.d/atlas.cern.ch.conf:2")
    assert config.get("CVMFS_FALLBACK_PROXY") == "http://fallback.cern.ch:3128"
    assert config_repository.requests == ["etc/cvmfs/default.conf", "etc/cvmfs/domain.d/cern.ch.conf",
                                          "etc/cvmfs/config.d/atlas.cern.ch.conf"]
    # The real default.conf sets CVMFS_USER and CVMFS_MOUNT_DIR inside an `if`: skipped, left to the defaults.
    assert config.get("CVMFS_USER") is None
    assert config.warnings == ["{}/default.conf:13: skipped the `if` block (lines 13-17): shell control flow is "
                               "never evaluated, so settings inside it are ignored; set them unconditionally if "
                               "they are needed".format(config_dir)]
    assert config.list_repositories() == ["atlas.cern.ch", "cms.cern.ch"]


STEPS = [
    ("local", "default.conf"),
    ("local", "default.d/10-first.conf"),
    ("local", "default.d/20-second.conf"),
    ("repo", "etc/cvmfs/default.conf"),
    ("local", "default.local"),
    ("repo", "etc/cvmfs/domain.d/cern.ch.conf"),
    ("local", "domain.d/cern.ch.conf"),
    ("local", "domain.d/cern.ch.local"),
    ("repo", "etc/cvmfs/config.d/atlas.cern.ch.conf"),
    ("local", "config.d/atlas.cern.ch.conf"),
    ("local", "config.d/atlas.cern.ch.local"),
    ("override", "-o"),
]


def test_each_step_overrides_the_steps_before(tmp_path):
    """Step i sets STEP_i .. STEP_last, so STEP_k ends up set by step k exactly when the order is right."""
    etc = tmp_path / "etc" / "cvmfs"
    repository_files = {}
    overrides = {}
    for index, (kind, name) in enumerate(STEPS):
        assignments = {"STEP_{}".format(later): str(index) for later in range(index, len(STEPS))}
        text = "".join("{}={}\n".format(key, value) for key, value in sorted(assignments.items()))
        if kind == "local":
            write(etc / name, text + ("CVMFS_CONFIG_REPOSITORY=cvmfs-config.cern.ch\n" if index == 0 else ""))
        elif kind == "repo":
            repository_files[name] = text
        else:
            overrides = assignments
    write(etc / "default.d" / "99-not-a-conf-file.txt", "STEP_1=wrong\n")
    write(etc / "domain.d" / "other.org.conf", "STEP_6=wrong\n")
    write(etc / "config.d" / "cms.cern.ch.conf", "STEP_9=wrong\n")

    config = load_configuration("atlas.cern.ch", str(etc), overrides=overrides,
                                config_repository_files=FakeConfigRepository(repository_files))

    for index, (kind, name) in enumerate(STEPS):
        key = "STEP_{}".format(index)
        assert config.get(key) == str(index), key
        expected_file = {"local": "{}/{}:".format(etc, name), "repo": CONFIG_REPOSITORY_ROOT + "/" + name + ":",
                         "override": "-o"}[kind]
        assert config.origin(key).startswith(expected_file), key
    assert config.warnings == []


def test_fqrn_and_org_are_substituted_in_every_value(config_dir, config_repository):
    write(config_dir / "config.d" / "atlas.cern.ch.local", """
        CVMFS_CACHE_BASE=/scratch/@org@/@fqrn@/@org@
        TWICE="@fqrn@ @fqrn@"
        """)
    config = load_configuration("atlas.cern.ch", str(config_dir), overrides={"CVMFS_DEBUGLOG": "/tmp/@fqrn@.log"},
                                config_repository_files=config_repository)
    assert config.get("CVMFS_CACHE_BASE") == "/scratch/atlas/atlas.cern.ch/atlas"
    assert config.get("TWICE") == "atlas.cern.ch atlas.cern.ch"
    assert config.get("CVMFS_DEBUGLOG") == "/tmp/atlas.cern.ch.log"
    assert config.get("CVMFS_SERVER_URL") == "http://a/cvmfs/atlas.cern.ch;http://b/cvmfs/atlas.cern.ch"
    defaults_only = load_configuration(None, str(config_dir))
    assert defaults_only.get("CVMFS_SERVER_URL") is None  # domain.d is not read without a repository
    write(config_dir / "default.local", "CVMFS_CACHE_BASE=/scratch/@fqrn@\n")
    assert load_configuration(None, str(config_dir)).get("CVMFS_CACHE_BASE") == "/scratch/@fqrn@"


def test_domain_is_the_fqrn_without_its_first_label(tmp_path):
    etc = tmp_path / "etc"
    write(etc / "domain.d" / "opensciencegrid.org.conf", "DOMAIN_FILE=yes\nSERVER=@org@\n")
    write(etc / "domain.d" / "osgstorage.org.conf", "DOMAIN_FILE=wrong\n")
    config = load_configuration("ligo.osgstorage.opensciencegrid.org", str(etc))
    assert config.get("DOMAIN_FILE") is None
    write(etc / "domain.d" / "osgstorage.opensciencegrid.org.conf", "DOMAIN_FILE=yes\nSERVER=@org@\n")
    config = load_configuration("ligo.osgstorage.opensciencegrid.org", str(etc))
    assert (config.get("DOMAIN_FILE"), config.get("SERVER")) == ("yes", "ligo")


def test_cvmfs_fqrn_is_available_to_expansions(tmp_path):
    config = load_fragment(tmp_path, "LOG=/var/log/$CVMFS_FQRN.log\n", fqrn="atlas.cern.ch")
    assert config.get("LOG") == "/var/log/atlas.cern.ch.log"


# -- the config repository -----------------------------------------------------------------------------------


def test_config_repository_name_comes_from_the_local_default_files_and_overrides(config_dir):
    assert config_repository_name(str(config_dir)) == CONFIG_REPOSITORY
    write(config_dir / "default.local", "CVMFS_CONFIG_REPOSITORY=config-osg.opensciencegrid.org\n")
    assert config_repository_name(str(config_dir)) == "config-osg.opensciencegrid.org"
    assert config_repository_name(str(config_dir), {"CVMFS_CONFIG_REPOSITORY": "cfg.example.org"}) == \
        "cfg.example.org"
    assert config_repository_name(str(config_dir), {"CVMFS_CONFIG_REPOSITORY": ""}) is None
    write(config_dir / "domain.d" / "cern.ch.local", "CVMFS_CONFIG_REPOSITORY=not-from-here.cern.ch\n")
    write(config_dir / "default.local", "CVMFS_CONFIG_REPOSITORY=\n")
    assert config_repository_name(str(config_dir)) is None


def test_config_repository_name_must_be_a_repository_name(config_dir):
    write(config_dir / "default.local", "# site\nCVMFS_CONFIG_REPOSITORY=../../etc\n")
    expected = r"CVMFS_CONFIG_REPOSITORY \(set at .*default.local:2\) '\.\./\.\./etc' is not a fully qualified"
    with pytest.raises(ConfigurationError, match=expected):
        config_repository_name(str(config_dir))
    with pytest.raises(ConfigurationError, match="not a fully qualified repository name"):
        load_configuration("atlas.cern.ch", str(config_dir))


def test_config_repository_cannot_set_the_config_repository(config_dir):
    repository = FakeConfigRepository({
        "etc/cvmfs/default.conf": "CVMFS_CONFIG_REPOSITORY=evil.example.org\n",
        "etc/cvmfs/domain.d/cern.ch.conf": "A=1\nexport CVMFS_CONFIG_REPOSITORY=cvmfs-config.cern.ch\n",
    })
    write(config_dir / "domain.d" / "cern.ch.local", "CVMFS_CONFIG_REPOSITORY=other.cern.ch\n")
    config = load_configuration("atlas.cern.ch", str(config_dir), config_repository_files=repository)
    assert config.get("CVMFS_CONFIG_REPOSITORY") == CONFIG_REPOSITORY
    assert config.origin("CVMFS_CONFIG_REPOSITORY") == "{}/default.d/50-cern.conf:1".format(config_dir)
    protected = warnings_about(config, "CVMFS_CONFIG_REPOSITORY is protected")
    assert [warning.split(": ", 1)[0] for warning in protected] == [
        CONFIG_REPOSITORY_ROOT + "/etc/cvmfs/default.conf:1",
        CONFIG_REPOSITORY_ROOT + "/etc/cvmfs/domain.d/cern.ch.conf:2",
        "{}/domain.d/cern.ch.local:1".format(config_dir),
    ]
    assert not any("evil" in warning or "other.cern.ch" in warning for warning in config.warnings)


def test_default_local_may_choose_the_config_repository(config_dir):
    write(config_dir / "default.local", "CVMFS_CONFIG_REPOSITORY=config-osg.opensciencegrid.org\n")
    repository = FakeConfigRepository({"etc/cvmfs/domain.d/cern.ch.conf": "FROM_OSG=yes\n"})
    config = load_configuration("atlas.cern.ch", str(config_dir), config_repository_files=repository)
    assert config.get("CVMFS_CONFIG_REPOSITORY") == "config-osg.opensciencegrid.org"
    assert config.get("FROM_OSG") == "yes"
    assert config.origin("FROM_OSG") == "/cvmfs/config-osg.opensciencegrid.org/etc/cvmfs/domain.d/cern.ch.conf:1"
    assert config.warnings == warnings_about(config, "`if` block")


def test_loading_the_config_repository_itself_skips_the_config_repository_steps(config_dir, config_repository):
    write(config_dir / "config.d" / "cvmfs-config.cern.ch.conf", "CVMFS_HTTP_PROXY=DIRECT\n")
    config = load_configuration(CONFIG_REPOSITORY, str(config_dir), config_repository_files=config_repository)
    assert config_repository.requests == []
    assert config.get("CVMFS_HTTP_PROXY") == "DIRECT"
    assert config.get("CVMFS_SERVER_URL") == "http://a/cvmfs/cvmfs-config.cern.ch;http://b/cvmfs/cvmfs-config.cern.ch"


def test_without_a_config_repository_nothing_is_read_from_one(config_dir, config_repository):
    (config_dir / "default.d" / "50-cern.conf").unlink()
    config = load_configuration("atlas.cern.ch", str(config_dir), config_repository_files=config_repository)
    assert config_repository.requests == []
    assert config.get("CVMFS_CONFIG_REPOSITORY") is None


def test_without_a_reader_the_mounted_config_repository_is_read(config_dir, tmp_path):
    mount_dir = tmp_path / "mnt"
    write(config_dir / "default.d" / "60-mount.conf", "CVMFS_MOUNT_DIR={}\n".format(mount_dir))
    write(mount_dir / CONFIG_REPOSITORY / "etc" / "cvmfs" / "config.d" / "atlas.cern.ch.conf", "MOUNTED=yes\n")
    config = load_configuration("atlas.cern.ch", str(config_dir))
    assert config.get("MOUNTED") == "yes"
    assert config.origin("MOUNTED") == "{}/{}/etc/cvmfs/config.d/atlas.cern.ch.conf:1".format(mount_dir,
                                                                                               CONFIG_REPOSITORY)


def test_config_repository_mount_dir_follows_the_configuration(config_dir):
    write(config_dir / "default.d" / "60-mount.conf", "CVMFS_MOUNT_DIR=/opt/dist/cvmfs\n")
    repository = FakeConfigRepository({"etc/cvmfs/domain.d/cern.ch.conf": "FOUND=yes\n"})
    config = load_configuration("atlas.cern.ch", str(config_dir), config_repository_files=repository)
    assert config.origin("FOUND") == "/opt/dist/cvmfs/cvmfs-config.cern.ch/etc/cvmfs/domain.d/cern.ch.conf:1"
    config = load_configuration("atlas.cern.ch", str(config_dir), overrides={"CVMFS_MOUNT_DIR": "/o"},
                                config_repository_files=repository)
    assert config.origin("FOUND") == "/o/cvmfs-config.cern.ch/etc/cvmfs/domain.d/cern.ch.conf:1"


# -- includes ------------------------------------------------------------------------------------------------


def test_includes_relative_absolute_and_expanded(config_dir, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere / "absolute.conf", "ABSOLUTE=yes\n")
    write(config_dir / "site" / "relative.conf", ". nested.conf\nRELATIVE=yes\n")
    write(config_dir / "site" / "nested.conf", "NESTED=yes\n")
    write(config_dir / "default.local", """
        . site/relative.conf
        source "$SITE_DIR/absolute.conf"
        . {}/absolute.conf; AFTER=$ABSOLUTE
        """.format(elsewhere))
    working_dir = tmp_path / "cwd"
    working_dir.mkdir()
    write(working_dir / "site" / "relative.conf", "RELATIVE=wrong\n")
    monkeypatch.chdir(str(working_dir))

    config = load_configuration(None, str(config_dir), environ={"SITE_DIR": str(elsewhere)})

    assert config.get("RELATIVE") == "yes"
    assert config.get("NESTED") == "yes"
    assert config.origin("NESTED") == "{}/site/nested.conf:1".format(config_dir)
    assert config.get("ABSOLUTE") == "yes"
    assert config.get("AFTER") == "yes"
    assert config.warnings == warnings_about(config, "`if` block")


def test_includes_in_config_repository_files_resolve_inside_the_config_repository(config_dir, tmp_path):
    local = write(tmp_path / "local" / "site.conf", "LOCAL=yes\n")
    repository = FakeConfigRepository({
        "etc/cvmfs/domain.d/cern.ch.conf": """
            . ../common.conf
            . /cvmfs/cvmfs-config.cern.ch/etc/cvmfs/absolute.conf
            . {}
            """.format(local),
        "etc/cvmfs/common.conf": "COMMON=yes\n",
        "etc/cvmfs/absolute.conf": "ABSOLUTE=yes\n",
    })
    config = load_configuration("atlas.cern.ch", str(config_dir), config_repository_files=repository)
    assert (config.get("COMMON"), config.get("ABSOLUTE"), config.get("LOCAL")) == ("yes", "yes", "yes")
    assert config.origin("COMMON") == CONFIG_REPOSITORY_ROOT + "/etc/cvmfs/common.conf:1"
    assert "etc/cvmfs/common.conf" in repository.requests
    assert "etc/cvmfs/absolute.conf" in repository.requests


def test_include_loops_are_bounded(tmp_path):
    etc = tmp_path / "etc"
    write(etc / "default.conf", ". ./a.conf\n")
    write(etc / "a.conf", "COUNT=a$COUNT\n. ./b.conf\n")
    write(etc / "b.conf", ". ./a.conf\n")
    config = load_configuration(None, str(etc))
    assert config.get("COUNT") == "a" * ((MAX_INCLUDE_DEPTH + 1) // 2)
    assert len(config.warnings) == 1
    assert "includes nest deeper than {}".format(MAX_INCLUDE_DEPTH) in config.warnings[0]


def test_missing_include_is_a_warning_and_loading_goes_on(tmp_path):
    config = load_fragment(tmp_path, "A=1\n. ./missing.conf\nB=2\n")
    assert (config.get("A"), config.get("B")) == ("1", "2")
    assert config.warnings == ["{}/default.conf:2: the included file {}/missing.conf does not exist; skipped"
                               .format(tmp_path / "fragment", tmp_path / "fragment")]


def test_include_needs_one_file_name(tmp_path):
    config = load_fragment(tmp_path, ". ./a.conf extra\n.\nB=2\n")
    assert config.get("B") == "2"
    assert len(warnings_about(config, "need exactly one file name")) == 2


# -- quoting and expansion -----------------------------------------------------------------------------------


ENVIRON = {"X": "env-x", "EMPTY": "", "HOME": "/home/user"}


@pytest.mark.parametrize("text, expected", [
    ("A=plain", "plain"),
    ("export A=exported", "exported"),
    ("A='single $X ${X} \\ \" # ;'", 'single $X ${X} \\ " # ;'),
    ('A="double $X ${X}"', "double env-x env-x"),
    ('A="escapes \\" \\\\ \\$X \\a"', 'escapes " \\ $X \\a'),
    ("A=$X/${X}.d", "env-x/env-x.d"),
    ("A=${UNSET:-fallback}", "fallback"),
    ("A=${EMPTY:-fallback}", "fallback"),
    ("A=${EMPTY-fallback}", ""),
    ("A=${X:-fallback}", "env-x"),
    ('A="${UNSET:-two words}"', "two words"),
    ("A=${UNSET:-${X}}", "env-x"),
    ("A=${UNSET:-'two words'}", "two words"),
    ('A="${UNSET:-\'kept\'}"', "'kept'"),
    ("A=${UNSET}", ""),
    ("A=$UNSET", ""),
    ("A=\"x\"'y'$X", "xyenv-x"),
    ("A=un\\ quoted\\$X", "un quoted$X"),
    ("A=value # a comment", "value"),
    ("A=value#not-a-comment", "value#not-a-comment"),
    ('A="quoted # not a comment"', "quoted # not a comment"),
    ("A=", ""),
    ('A=""', ""),
    ("A=cost$", "cost$"),
    ("A=with\\\ncontinuation", "withcontinuation"),
    ('A="double \\\nquoted"', "double quoted"),
    ("A=1 \\\n  B=2; A=$A$B", "12"),
    ("A=1; A=${A}2;A=${A}3", "123"),
    ("A=first B=$A; A=$B-second", "first-second"),
    ("  \tA=indented  ", "indented"),
    ("readonly A=locked", "locked"),
])
def test_quoting_and_expansion(tmp_path, text, expected):
    config = load_fragment(tmp_path, "# leading comment\n\n" + text + "\n", environ=ENVIRON)
    assert config.get("A") == expected
    assert config.warnings == []


def test_colon_equals_assigns_the_default(tmp_path):
    config = load_fragment(tmp_path, "A=${NEW:=made}\nB=$NEW\nC=${X:=unused}\n", environ=ENVIRON)
    assert (config.get("A"), config.get("NEW"), config.get("B")) == ("made", "made", "made")
    assert config.origin("NEW").endswith("default.conf:1")
    assert config.get("C") == "env-x"
    assert config.get("X") is None


def test_variables_of_the_chain_come_before_the_environment(config_dir):
    write(config_dir / "default.d" / "60-x.conf", "CVMFS_CACHE_BASE=/chain\n")
    write(config_dir / "default.local", "DERIVED=$CVMFS_CACHE_BASE/shared\nFROM_ENV=$HOME\n")
    config = load_configuration(None, str(config_dir), environ={"CVMFS_CACHE_BASE": "/env", "HOME": "/home/u"})
    assert config.get("DERIVED") == "/chain/shared"
    assert config.get("FROM_ENV") == "/home/u"
    assert config.get("HOME") is None  # the environment is not configuration


def test_environment_defaults_to_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("CVMFS_PILOT_TEST_VARIABLE", "from-os-environ")
    assert load_fragment(tmp_path, "A=x$CVMFS_PILOT_TEST_VARIABLE\n").get("A") == "x"


# -- constructs that are skipped, never executed -------------------------------------------------------------


def test_if_blocks_are_skipped_with_nesting(tmp_path):
    config = load_fragment(tmp_path, """
        BEFORE=1
        if [ -z "$X" ]; then
          INSIDE=1
          if true
          then
            NESTED=1
          else NESTED=2
          fi
          INSIDE_AFTER_NESTED=1
        elif false; then ELIF=1
        fi
        AFTER=1
        if true; then ONE_LINE=1; fi; SAME_LINE_AFTER=1
        """)
    assert (config.get("BEFORE"), config.get("AFTER"), config.get("SAME_LINE_AFTER")) == ("1", "1", "1")
    for key in ("INSIDE", "NESTED", "INSIDE_AFTER_NESTED", "ELIF", "ONE_LINE"):
        assert config.get(key) is None, key
    path = tmp_path / "fragment" / "default.conf"
    assert [warning.split(" (")[0] for warning in config.warnings] == [
        "{}:2: skipped the `if` block".format(path), "{}:13: skipped the `if` block".format(path)]
    assert "(lines 2-11)" in config.warnings[0] and "(line 13)" in config.warnings[1]


def test_unclosed_block_skips_the_rest_of_the_file(tmp_path):
    config = load_fragment(tmp_path, "A=1\nif true; then\nB=1\n")
    assert (config.get("A"), config.get("B")) == ("1", None)
    assert config.warnings == ["{}:2: the `if` block is never closed; skipped lines 2 to the end of the file"
                               .format(tmp_path / "fragment" / "default.conf")]


@pytest.mark.parametrize("text, warning", [
    ("case $X in\n  a) IN_CASE=1 ;;\n  *) IN_CASE=2 ;;\nesac", "1: skipped the `case` block (lines 1-4)"),
    ("for i in 1 2; do\n  IN_LOOP=$i\ndone", "1: skipped the `for` loop (lines 1-3)"),
    ("while true; do IN_LOOP=1; done", "1: skipped the `while` loop (line 1)"),
    ("setup() {\n  IN_FUNCTION=1\n}", "1: skipped the definition of function `setup`"),
    ("setup()\n{\n  IN_FUNCTION=1\n}", "1: skipped the definition of function `setup`"),
    ("function setup { IN_FUNCTION=1; }", "1: skipped the definition of function `setup`"),
    ('[ -z "$X" ] && IN_AND=1', "1: skipped a command with `&&`"),
    ("test -d /x || IN_OR=1", "1: skipped a command with `||`"),
    ("IN_PIPE=1 | cat", "1: skipped a command with `|`"),
    ("IN_REDIRECT=1 > /dev/null", "1: skipped a command with `>`"),
    ("IN_BACKGROUND=1 &", "1: skipped a command with `&`"),
    ("ulimit -n 4096", "1: skipped the command `ulimit`"),
    ("unset X", "1: skipped the command `unset`"),
    ("IN_PREFIX=1 some_command", "1: IN_PREFIX not set: the assignment is followed by a command"),
    ("IN_SPECIAL=$1", "1: IN_SPECIAL not set: the special parameter $1 is never evaluated"),
    ("IN_TILDE=~/cache", "1: IN_TILDE not set: tilde expansion is never evaluated"),
    ("IN_ALT=${X:+alt}", "1: IN_ALT not set: this ${...} form"),
    ("export -n X", "1: skipped `export ...`: only variable names"),
    ("fi", "1: unexpected `fi` without an open block"),
])
def test_other_shell_constructs_are_skipped_with_a_warning(tmp_path, text, warning):
    config = load_fragment(tmp_path, text + "\nAFTER=1\n", environ=ENVIRON)
    assert config.get("AFTER") == "1"
    assert not [key for key, _ in config.items() if key.startswith("IN_")]
    assert len(config.warnings) == 1
    assert config.warnings[0].startswith("{}:{}".format(tmp_path / "fragment" / "default.conf", warning))


def test_command_substitution_is_never_executed(tmp_path):
    marker = tmp_path / "created-by-the-shell"
    config = load_fragment(tmp_path, """
        X=$(touch {0})
        Y="prefix `touch {0}` suffix"
        Z=$(( $(touch {0}) + 1 ))
        touch {0}
        [ -d / ] && touch {0}
        eval "touch {0}"
        export W=$(touch {0})
        AFTER=1
        """.format(marker))
    assert not marker.exists()
    assert config.get("AFTER") == "1"
    assert [config.get(key) for key in "XYZW"] == [None] * 4
    assert len(config.warnings) == 7
    assert "X not set: command substitution $(...) is never evaluated" in config.warnings[0]
    assert "Y not set: command substitution `...` is never evaluated" in config.warnings[1]
    assert "Z not set: arithmetic expansion $((...)) is never evaluated" in config.warnings[2]


def test_malformed_lines_are_skipped_and_the_rest_loads(tmp_path):
    config = load_fragment(tmp_path, """
        A=1
        B="unterminated
        C='also unterminated
        D=$(unterminated
        E=${UNTERMINATED
        F=2
        """)
    assert (config.get("A"), config.get("F")) == ("1", "2")
    assert [config.get(key) for key in "BCDE"] == [None] * 4
    path = tmp_path / "fragment" / "default.conf"
    assert config.warnings == [
        "{}:2: malformed line skipped: unterminated double quote".format(path),
        "{}:3: malformed line skipped: unterminated single quote".format(path),
        "{}:4: malformed line skipped: unterminated command substitution $(...)".format(path),
        "{}:5: malformed line skipped: unterminated ${{...}}".format(path),
    ]


def test_malformed_line_after_a_continuation_names_the_line_of_the_quote(tmp_path):
    config = load_fragment(tmp_path, "A=1 \\\nB='open\nC=3\n")
    assert config.get("C") == "3"
    assert config.warnings == ["{}:2: malformed line skipped: unterminated single quote".format(
        tmp_path / "fragment" / "default.conf")]


def test_warnings_never_contain_values(tmp_path):
    secret = "s3cr3t-t0ken"
    config = load_fragment(tmp_path, """
        readonly TOKEN={0}
        TOKEN={0}-2
        COMMAND=$(echo {0})
        if [ {0} ]; then :; fi
        [ {0} ] && OTHER={0}
        SPACED=first {0}
        export "QUOTED={0}"
        """.format(secret), fqrn="atlas.cern.ch")
    assert len(config.warnings) == 6
    assert not [warning for warning in config.warnings if secret in warning]


def test_unreadable_and_undecodable_files_are_warnings(tmp_path):
    etc = tmp_path / "etc"
    write(etc / "default.conf", ". ./dir.conf\n")
    (etc / "dir.conf").mkdir()
    (etc / "default.local").write_bytes(b"A=caf\xe9\nB=2\n")
    config = load_configuration(None, str(etc))
    assert config.get("B") == "2"
    assert config.get("A") == "caf\ufffd"
    assert any("cannot read {}/dir.conf".format(etc) in warning for warning in config.warnings)
    assert any("default.local: is not UTF-8 text" in warning for warning in config.warnings)


# -- readonly and overrides ----------------------------------------------------------------------------------


def test_readonly_keeps_the_first_value_for_the_rest_of_the_chain(config_dir):
    write(config_dir / "default.d" / "60-readonly.conf", "readonly CVMFS_USER=cvmfs\nreadonly CVMFS_NFILES\n")
    write(config_dir / "default.local", "CVMFS_USER=root\nexport CVMFS_NFILES=10\n")
    write(config_dir / "config.d" / "atlas.cern.ch.local", "readonly CVMFS_USER=other\n")
    config = load_configuration("atlas.cern.ch", str(config_dir))
    assert config.get("CVMFS_USER") == "cvmfs"
    assert config.origin("CVMFS_USER") == "{}/default.d/60-readonly.conf:1".format(config_dir)
    assert config.get("CVMFS_NFILES") is None
    readonly = warnings_about(config, "is readonly since {}/default.d/60-readonly.conf".format(config_dir))
    assert [warning.split(": ")[0] for warning in readonly] == [
        "{}/default.local:1".format(config_dir), "{}/default.local:2".format(config_dir),
        "{}/config.d/atlas.cern.ch.local:1".format(config_dir)]
    overridden = load_configuration("atlas.cern.ch", str(config_dir), overrides={"CVMFS_USER": "pilot"})
    assert (overridden.get("CVMFS_USER"), overridden.origin("CVMFS_USER")) == ("pilot", "-o")


def test_overrides_come_last_and_are_taken_literally(config_dir):
    config = load_configuration("atlas.cern.ch", str(config_dir), environ=ENVIRON,
                                overrides={"CVMFS_QUOTA_LIMIT": "500", "CVMFS_HTTP_PROXY": "$X;'DIRECT'"})
    assert (config.get("CVMFS_QUOTA_LIMIT"), config.origin("CVMFS_QUOTA_LIMIT")) == ("500", "-o")
    assert config.get("CVMFS_HTTP_PROXY") == "$X;'DIRECT'"
    with pytest.raises(ConfigurationError, match="-o BAD NAME=...: 'BAD NAME' is not a variable name"):
        load_configuration("atlas.cern.ch", str(config_dir), overrides={"BAD NAME": "1"})


def test_repository_name_must_be_fully_qualified(config_dir):
    for name in ("atlas", "../etc.x", "atlas..cern.ch", ".cern.ch"):
        with pytest.raises(ConfigurationError, match="not a fully qualified repository name"):
            load_configuration(name, str(config_dir))


def test_missing_config_dir_is_a_warning(tmp_path):
    config = load_configuration("atlas.cern.ch", str(tmp_path / "nowhere"))
    assert config.items() == []
    assert config.warnings == ["{}: does not exist; no local configuration files were read".format(
        tmp_path / "nowhere")]


# -- typed getters and helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("yes", True), ("YES", True), ("true", True), ("On", True), ("1", True),
    ("no", False), ("No", False), ("FALSE", False), ("off", False), ("0", False),
])
def test_get_bool(tmp_path, value, expected):
    config = load_fragment(tmp_path, "FLAG={}\n".format(value))
    assert config.get_bool("FLAG", not expected) is expected
    assert config.warnings == []


def test_get_bool_defaults_and_warns_on_other_values(tmp_path):
    config = load_fragment(tmp_path, "# flags\nFLAG=maybe\nEMPTY=\n")
    assert config.get_bool("FLAG", True) is True
    assert config.get_bool("FLAG", False) is False
    assert config.get_bool("EMPTY", True) is True
    assert config.get_bool("UNSET", False) is False
    path = tmp_path / "fragment" / "default.conf"
    assert config.warnings == [
        "{}:2: FLAG is not yes/no/true/false/on/off/1/0; using the default (yes)".format(path),
        "{}:2: FLAG is not yes/no/true/false/on/off/1/0; using the default (no)".format(path)]


def test_get_int(tmp_path):
    config = load_fragment(tmp_path, "QUOTA=4000\nNEGATIVE=-1\nEMPTY=\nBAD=4 GB\nFLOAT=1.5\n")
    assert config.get_int("QUOTA", 0) == 4000
    assert config.get_int("NEGATIVE", 0) == -1
    assert config.get_int("EMPTY", 7) == 7
    assert config.get_int("UNSET", 8) == 8
    path = tmp_path / "fragment" / "default.conf"
    with pytest.raises(ConfigurationError) as raised:
        config.get_int("FLOAT", 0)
    assert str(raised.value) == "FLOAT (set at {}:5) is not a whole number; fix it there".format(path)
    assert config.get("BAD") is None  # `BAD=4 GB` runs the command GB: skipped
    with pytest.raises(ConfigurationError, match="NUMBER \\(set at -o\\) is not a whole number"):
        load_configuration(None, str(tmp_path), overrides={"NUMBER": "ten"}).get_int("NUMBER", 0)


def test_items_and_origin(tmp_path):
    config = load_fragment(tmp_path, "B=2\nA=1\n")
    assert config.items() == [("A", "1"), ("B", "2")]
    assert config.origin("A") == "{}:2".format(tmp_path / "fragment" / "default.conf")
    assert config.origin("UNSET") is None
    assert config.get("UNSET", "fallback") == "fallback"


def test_list_repositories(tmp_path):
    config = load_fragment(tmp_path, "CVMFS_DEFAULT_DOMAIN=cern.ch\n"
                                     "CVMFS_REPOSITORIES='atlas, cms.cern.ch,,sw.hsf.org ,lhcb'\n")
    assert config.list_repositories() == ["atlas.cern.ch", "cms.cern.ch", "sw.hsf.org", "lhcb.cern.ch"]
    assert load_fragment(tmp_path, "A=1\n").list_repositories() == []
    config = load_fragment(tmp_path, "CVMFS_REPOSITORIES=atlas\n")
    with pytest.raises(ConfigurationError, match="lists atlas without a domain and CVMFS_DEFAULT_DOMAIN is not set"):
        config.list_repositories()


def test_files_are_only_read(config_dir, config_repository):
    before = sorted(os.walk(str(config_dir.parent.parent)))
    load_configuration("atlas.cern.ch", str(config_dir), config_repository_files=config_repository)
    assert sorted(os.walk(str(config_dir.parent.parent))) == before
