"""glidein_config and the condor vars list from Python (cvmfs_pilot.glidein.glidein_config)."""

import os
import stat

import pytest

from cvmfs_pilot.glidein import glidein_config as gc
from cvmfs_pilot.glidein.glidein_config import CondorVar, CondorVars, GlideinConfig, create
from cvmfs_pilot.node import atomic_file


def _leftovers(directory, keep):
    return sorted(set(os.listdir(str(directory))) - set(keep))


def test_the_last_line_of_a_key_wins_and_the_value_is_the_rest_of_the_line(tmp_path):
    path = tmp_path / "glidein_config"
    path.write_text("FOOBAR long\nFOO first\nA.B dot\nAxB x\nALONE\nFOO  two  spaces \nEMPTY \n\nNOEOL last")
    config = GlideinConfig(path)
    assert config.get("FOO") == " two  spaces "
    assert config.get("FOOBAR") == "long"
    assert config.get("A.B") == "dot"
    assert config.get("ALONE") == "" and config.get("EMPTY") == ""
    assert config.get("NOEOL") == "last"
    assert config.get("MISSING") is None and config.get("MISSING", "d") == "d"
    assert config.get("foo") is None  # keys are case-sensitive
    assert config.items() == {"FOOBAR": "long", "FOO": " two  spaces ", "A.B": "dot", "AxB": "x", "ALONE": "",
                              "EMPTY": "", "NOEOL": "last"}


def test_a_missing_file_has_no_values(tmp_path):
    config = GlideinConfig(tmp_path / "nothing")
    assert config.items() == {} and config.get("X", 1) == 1 and config.get_bool("X", True) is True


@pytest.mark.parametrize("value, expected", [
    ("TRUE", True), ("true", True), ("T", True), ("t", True), ("YES", True), ("yes", True), ("Y", True),
    ("y", True), ("1", True), ("-3", True), ("+12", True), ("007", True), (' "Yes" ', True),
    ("FALSE", False), ("no", False), ("0", False), ("-0", False), ("000", False), ("maybe", False),
    ("1.5", False), ("1 2", False), ("on", False),
])
def test_booleans(tmp_path, value, expected):
    config = create(tmp_path / "glidein_config", {"B": value})
    assert config.get_bool("B") is expected
    assert gc.is_true(value) is expected


def test_an_absent_or_blank_boolean_takes_the_default(tmp_path):
    config = create(tmp_path / "glidein_config", [("BLANK", "  "), ("EMPTY", "")])
    for key in ("BLANK", "EMPTY", "ABSENT"):
        assert config.get_bool(key) is False
        assert config.get_bool(key, default=True) is True


def test_add_replaces_the_line_logs_history_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "glidein_config"
    path.write_text("A 1\nB 2\nA 3\nAB 4\n")
    os.chmod(str(path), 0o640)
    config = GlideinConfig(path)
    config.add("A", "new value")
    config.add("C", 5)
    assert path.read_text() == "B 2\nAB 4\nA new value\nC 5\n"
    assert (tmp_path / "glidein_config.history").read_text() == "A new value\nC 5\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert _leftovers(tmp_path, ["glidein_config", "glidein_config.history"]) == []


def test_update_sets_several_keys_in_one_rewrite(tmp_path):
    config = create(tmp_path / "glidein_config", {"A": "1", "B": "2"})
    config.update([("B", "x"), ("C", "y"), ("B", "z")])
    assert (tmp_path / "glidein_config").read_text() == "A 1\nC y\nB z\n"
    assert config.items() == {"A": "1", "C": "y", "B": "z"}
    assert (tmp_path / "glidein_config.history").read_text() == "A 1\nB 2\nC y\nB z\n"


@pytest.mark.parametrize("key, value", [("K", "two\nlines"), ("K", "carriage\rreturn"), ("", "v"),
                                        ("TWO WORDS", "v"), ("TAB\tKEY", "v"), ("NL\nKEY", "v")])
def test_bad_keys_and_multi_line_values_are_refused_before_anything_changes(tmp_path, key, value):
    config = create(tmp_path / "glidein_config", {"A": "1"})
    before = (tmp_path / "glidein_config").read_text()
    with pytest.raises(ValueError, match="one line|invalid"):
        config.update({"OK": "fine", key: value})
    assert (tmp_path / "glidein_config").read_text() == before
    assert _leftovers(tmp_path, ["glidein_config", "glidein_config.history"]) == []


def test_a_failed_rewrite_keeps_the_old_file_and_removes_its_temporary_file(tmp_path, monkeypatch):
    config = create(tmp_path / "glidein_config", {"A": "1"})

    def failing_replace(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_file.os, "replace", failing_replace)  # the rename fails, as on a full disk
    with pytest.raises(OSError):
        config.add("A", "2")
    monkeypatch.undo()
    assert config.items() == {"A": "1"}
    assert _leftovers(tmp_path, ["glidein_config", "glidein_config.history"]) == []


def test_create_writes_a_fresh_file_and_history(tmp_path):
    path = tmp_path / "glidein_config"
    path.write_text("OLD 1\n")
    (tmp_path / "glidein_config.history").write_text("OLD 1\n")
    config = create(path, {"GLIDEIN_WORK_DIR": "/w d", "EMPTY": ""})
    assert path.read_text() == "GLIDEIN_WORK_DIR /w d\nEMPTY \n"
    assert (tmp_path / "glidein_config.history").read_text() == path.read_text()
    assert config.get("EMPTY") == "" and config.get("OLD") is None
    with pytest.raises(ValueError):
        create(tmp_path / "other", {"K": "a\nb"})
    assert not (tmp_path / "other").exists()


def test_values_round_trip_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "glidein_config"
    path.write_bytes(b"RAW \xff\xfe\n")
    config = GlideinConfig(path)
    config.add("OTHER", "x")
    assert path.read_bytes() == b"RAW \xff\xfe\nOTHER x\n"


CONDOR_VARS = """\
# NAME TYPE DEFAULT CONDOR_NAME REQUIRED EXPORT_TO_CLASSAD JOB_ENV
GLIDEIN_Site        S  -        +              N  Y  +
GLIDEIN_CPUS        I  1        +              N  Y  -
SLOT_EXPR           C  -        START_EXPR     N  Y  @
RENAMED             S  -        CondorRenamed  N  N  @
EXPLICIT            S  dflt     +              N  N  MY_ENV
QUOTED_DEFAULT      S  "qd"     +              N  N  +
UNSET_NO_DEFAULT    S  -        +              N  Y  +
HIDDEN              S  -        +              N  N  -

   # an indented comment
"""


def _condor_vars(tmp_path, text=CONDOR_VARS):
    path = tmp_path / "condor_vars.lst"
    path.write_text(text)
    return CondorVars(path)


def test_condor_vars_lines(tmp_path):
    lines = _condor_vars(tmp_path).lines()
    assert [var.name for var in lines] == ["GLIDEIN_Site", "GLIDEIN_CPUS", "SLOT_EXPR", "RENAMED", "EXPLICIT",
                                           "QUOTED_DEFAULT", "UNSET_NO_DEFAULT", "HIDDEN"]
    assert lines[2] == CondorVar("SLOT_EXPR", "C", "-", "START_EXPR", "N", "Y", "@")
    assert tuple(lines[0]) == ("GLIDEIN_Site", "S", "-", "+", "N", "Y", "+")
    assert CondorVars(tmp_path / "missing").lines() == []


def test_condor_vars_job_environment_and_classad_attributes(tmp_path):
    condor_vars = _condor_vars(tmp_path)
    config = create(tmp_path / "glidein_config", {"GLIDEIN_Site": "My Site", "GLIDEIN_CPUS": " 8 ",
                                                  "SLOT_EXPR": "(Memory > 2000) && true", "RENAMED": "r",
                                                  "HIDDEN": "h"})
    assert condor_vars.job_environment(config) == {
        "GLIDEIN_Site": "My Site",                  # +: NAME
        "START_EXPR": "(Memory > 2000) && true",    # @: CONDOR_NAME
        "CondorRenamed": "r",                       # @: CONDOR_NAME
        "MY_ENV": "dflt",                           # an explicit name; the DEFAULT, glidein_config has no value
        "QUOTED_DEFAULT": "qd",                     # a DEFAULT loses one level of quotes
    }  # not GLIDEIN_CPUS, HIDDEN (JOB_ENV -), nor UNSET_NO_DEFAULT (no value, DEFAULT -)
    assert condor_vars.classad_attributes(config) == {"GLIDEIN_Site": "My Site", "GLIDEIN_CPUS": 8,
                                                      "START_EXPR": "(Memory > 2000) && true"}
    # a dict of values works as well as a GlideinConfig
    assert condor_vars.classad_attributes({"GLIDEIN_CPUS": "2"}) == {"GLIDEIN_CPUS": 2}


def test_condor_vars_defaults_lose_one_level_of_quotes_and_blank_values_count_as_missing(tmp_path):
    condor_vars = _condor_vars(tmp_path, "D1 S \"quoted\" + N N +\nD2 S 'single' + N N +\nD3 I 4 + N Y +\n")
    assert condor_vars.job_environment({"D3": "  "}) == {"D1": "quoted", "D2": "single", "D3": "4"}
    assert condor_vars.classad_attributes({}) == {"D3": 4}


def test_a_required_condor_var_without_a_value_is_an_error_naming_it(tmp_path):
    condor_vars = _condor_vars(tmp_path, "OPTIONAL S - + N Y +\nMUST_HAVE S - + Y Y +\n")
    with pytest.raises(ValueError, match="MUST_HAVE is required"):
        condor_vars.job_environment({"OPTIONAL": "x"})
    with pytest.raises(ValueError, match="MUST_HAVE is required"):
        condor_vars.classad_attributes({"MUST_HAVE": ""})
    assert condor_vars.classad_attributes({"MUST_HAVE": "v"}) == {"MUST_HAVE": "v"}


def test_a_required_condor_var_fails_even_with_a_default_as_in_condor_startup(tmp_path):
    condor_vars = _condor_vars(tmp_path, "WITH_DEFAULT S dflt + Y Y +\n")
    with pytest.raises(ValueError, match="WITH_DEFAULT"):
        condor_vars.classad_attributes({})


def test_an_integer_condor_var_that_is_not_an_integer_is_an_error(tmp_path):
    condor_vars = _condor_vars(tmp_path, "N I - + N Y -\n")
    with pytest.raises(ValueError, match="N has type I"):
        condor_vars.classad_attributes({"N": "eight"})
    assert condor_vars.job_environment({"N": "eight"}) == {}


def test_a_malformed_condor_vars_line_is_an_error_with_its_place(tmp_path):
    condor_vars = _condor_vars(tmp_path, "GOOD S - + N Y +\nBAD S -\n")
    with pytest.raises(ValueError, match=r"condor_vars.lst:2: .* 7 fields"):
        condor_vars.lines()


def test_condor_vars_add_replaces_the_line_of_its_name_only(tmp_path):
    condor_vars = _condor_vars(tmp_path, "# comment\nX S - + N Y +\nXY S - + N Y +\n")
    condor_vars.add("X", "I", "3", "+", "N", "Y", "-")
    condor_vars.add("NEW", "S", "-", "+", "N", "N", "+")
    assert (tmp_path / "condor_vars.lst").read_text() == "# comment\nXY S - + N Y +\nX I 3 + N Y -\nNEW S - + N N +\n"
    with pytest.raises(ValueError, match="one word"):
        condor_vars.add("Y", "S", "two words", "+", "N", "Y", "+")
    with pytest.raises(ValueError, match="one word"):
        condor_vars.add("Y", "S", "", "+", "N", "Y", "+")
    assert _leftovers(tmp_path, ["condor_vars.lst"]) == []
