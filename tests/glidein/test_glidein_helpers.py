"""The GlideinWMS helper files (glidein/helpers/) run by real shells, error_gen's results, and a validation script
written in GlideinWMS's conventions (scripts/check_disk.sh) run unmodified."""

import glob
import io
import json
import os
import stat
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

import cvmfs_pilot.glidein
from cvmfs_pilot.glidein.glidein_config import CondorVars, create
from cvmfs_pilot.glidein.helper_files import HELPERS, config_entries, helpers_dir
from cvmfs_pilot.glidein.results import classify, read_results

HELPERS_SRC = Path(cvmfs_pilot.glidein.__file__).resolve().parent / "helpers"
CHECK_DISK = Path(__file__).resolve().parent / "scripts" / "check_disk.sh"
SHELLS = ["bash", "dash"]
HEADER = """glidein_config="$1"
. "$(grep -m1 '^ADD_CONFIG_LINE_SOURCE ' "$glidein_config" | cut -d ' ' -f 2-)"
"""


@pytest.fixture
def pilot(tmp_path):
    """A work directory as the pilot makes it: the helpers copied out, glidein_config naming them."""
    work = tmp_path / "work"
    work.mkdir()
    paths = helpers_dir(work / "helpers")
    values = dict(config_entries(paths), CONDOR_VARS_FILE=str(work / "condor_vars.lst"), GLIDEIN_WORK_DIR=str(work),
                  GLIDEIN_ENTRY_WORK_DIR=str(work / "entry"), GLIDECLIENT_WORK_DIR=str(work / "client"),
                  GLIDECLIENT_GROUP_WORK_DIR=str(work / "group"), DESCRIPTION_FILE="d-main",
                  DESCRIPTION_ENTRY_FILE="d-entry", GLIDECLIENT_DESCRIPTION_FILE="d-client",
                  GLIDECLIENT_DESCRIPTION_GROUP_FILE="d-group")
    config = create(work / "glidein_config", values)
    return SimpleNamespace(work=work, config=config, config_path=work / "glidein_config", paths=paths,
                           results=work / "results.jsonl", condor_vars=CondorVars(work / "condor_vars.lst"))


def run(pilot, body, shell="bash", script_id="main", env=None, header=HEADER):
    """Run body (after the usual header) as 'SHELL script glidein_config ID'."""
    script = pilot.work / "test_script.sh"
    script.write_text(header + body)
    environment = dict(os.environ, CVMFS_PILOT_RESULTS=str(pilot.results))
    environment.update(env or {})
    return subprocess.run([shell, str(script), str(pilot.config_path), script_id], env=environment,
                          cwd=str(pilot.work), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)


def ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


def append_lines(pilot, text):
    with open(str(pilot.config_path), "a") as stream:
        stream.write(text)


def leftovers(pilot):
    """Files beside glidein_config other than the expected ones."""
    expected = {"glidein_config", "glidein_config.history", "glidein_config.lock", "helpers", "test_script.sh",
                "condor_vars.lst", "results.jsonl"}
    return sorted(set(os.listdir(str(pilot.work))) - expected)


def test_helpers_dir_copies_the_package_files(tmp_path):
    paths = helpers_dir(tmp_path / "h")
    assert sorted(paths) == sorted(HELPERS)
    for name, path in paths.items():
        assert Path(path).read_bytes() == (HELPERS_SRC / name).read_bytes()
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == (0o755 if name == "error_gen" else 0o644)
    assert helpers_dir(tmp_path / "h") == paths  # again: replaced in place
    assert sorted(os.listdir(str(tmp_path / "h"))) == sorted(HELPERS)


# -- add_config_line.source: reading -----------------------------------------------------------------------------

@pytest.mark.parametrize("shell", SHELLS)
def test_gconfig_get_matches_keys_literally(pilot, shell):
    append_lines(pilot, "FOOBAR long\nFOO first\nA.B dot\nAxB x\nA*B star\n^C caret\nALONE\n"
                        "FOO  two  spaces \nSPACES a b   c\nPATH_LIKE /x y/z\n")
    out = ok(run(pilot, """
for key in FOO FOOBAR FO A.B AxB 'A*B' '^C' ALONE SPACES PATH_LIKE MISSING 'A.*'; do
    printf '%s=[%s]\\n' "$key" "$(gconfig_get "$key")"
done
printf 'explicit=[%s]\\n' "$(gconfig_get FOOBAR "$glidein_config")"
""", shell))
    assert out.splitlines() == ["FOO=[ two  spaces ]", "FOOBAR=[long]", "FO=[]", "A.B=[dot]", "AxB=[x]",
                                "A*B=[star]", "^C=[caret]", "ALONE=[]", "SPACES=[a b   c]", "PATH_LIKE=[/x y/z]",
                                "MISSING=[]", "A.*=[]", "explicit=[long]"]


@pytest.mark.parametrize("shell", SHELLS)
def test_gconfig_get_case_insensitive_other_file_and_conversions(pilot, shell):
    append_lines(pilot, "MixedKey  'Quoted Value'  \nmixedkey last\n")
    (pilot.work / "other").write_text("MixedKey other\n")
    out = ok(run(pilot, """
echo "[$(gconfig_get MIXEDKEY)] [$(gconfig_get MIXEDKEY -i)] [$(gconfig_get MIXEDKEY "$glidein_config" -i)]"
echo "[$(gconfig_get MixedKey)] [$(gconfig_get MixedKey ./other)] [$(gconfig_get MixedKey ./missing-file)]"
echo "[$(gconfig_get_trim MixedKey)] [$(gconfig_get_tolower MixedKey)] [$(gconfig_get_toupper mixedkey)]"
""", shell))
    assert out.splitlines() == ["[] [last] [last]",
                                "[ 'Quoted Value'  ] [other] []",
                                "[Quoted Value] [ 'quoted value'  ] [LAST]"]


BOOLS = {"T1": "TRUE", "T2": "true", "T3": "T", "T4": "yes", "T5": "Y", "T6": "1", "T7": "-3", "T8": "007",
         "T9": ' "Yes" ', "F1": "FALSE", "F2": "no", "F3": "0", "F4": "-0", "F5": "maybe", "F6": "1.5", "F7": "",
         "F8": "1 2"}


@pytest.mark.parametrize("shell", SHELLS)
def test_gconfig_get_bool(pilot, shell):
    pilot.config.update(BOOLS)
    out = ok(run(pilot, """
set -eu
for key in %s ABSENT; do
    if gconfig_get_bool "$key"; then echo "$key true"; else echo "$key false"; fi
done
""" % " ".join(BOOLS), shell))
    for line in out.splitlines():
        key, value = line.split()
        assert value == ("true" if key.startswith("T") else "false"), line
        if key != "ABSENT":
            assert pilot.config.get_bool(key) is (value == "true"), key
    assert len(out.splitlines()) == len(BOOLS) + 1


def test_gconfig_get_without_a_file_says_what_to_do(pilot):
    result = run(pilot, 'glidein_config=\nx=$(gconfig_get KEY); echo "[$x] $?"\n')
    assert result.stdout == "[] 1\n"
    assert "pass it as the second argument or set glidein_config" in result.stderr


# -- add_config_line.source: writing -----------------------------------------------------------------------------

@pytest.mark.parametrize("shell", SHELLS)
def test_gconfig_add_then_get_in_the_same_script(pilot, shell):
    append_lines(pilot, "KEY old\nKEYS other\n")
    out = ok(run(pilot, """
set -eu
gconfig_add KEY "a value  with spaces"
echo "[$(gconfig_get KEY)] [$(gconfig_get KEYS)]"
add_config_line MULTI word1 "word 2" word3
echo "[$(gconfig_get MULTI)]"
gconfig_add EMPTY
gconfig_add 'A.B' dotted
gconfig_add LITERAL '$(touch pwned) `touch pwned2` ${HOME} * \\\\n "q" '"'s'"
printf '[%s]\\n' "$(gconfig_get LITERAL)"  # not echo: dash's echo interprets backslashes
""", shell))
    assert out.splitlines() == ["[a value  with spaces] [other]", "[word1 word 2 word3]",
                                "[$(touch pwned) `touch pwned2` ${HOME} * \\\\n \"q\" 's']"]
    values = pilot.config.items()
    assert values["KEY"] == "a value  with spaces" and values["KEYS"] == "other"
    assert values["MULTI"] == "word1 word 2 word3" and values["EMPTY"] == "" and values["A.B"] == "dotted"
    assert values["LITERAL"] == "$(touch pwned) `touch pwned2` ${HOME} * \\\\n \"q\" 's'"
    assert not list(pilot.work.glob("pwned*"))
    text = pilot.config_path.read_text()
    assert text.count("\nKEY ") == 1 and text.endswith("LITERAL " + values["LITERAL"] + "\n")
    history = (pilot.work / "glidein_config.history").read_text().splitlines()
    assert history[-5:] == ["KEY a value  with spaces", "MULTI word1 word 2 word3", "EMPTY ", "A.B dotted",
                            "LITERAL " + values["LITERAL"]]
    assert leftovers(pilot) == []


def test_what_python_writes_bash_reads_and_back(pilot):
    pilot.config.add("FROM_PYTHON", "  spaced value ")
    out = ok(run(pilot, 'printf "[%s]" "$(gconfig_get FROM_PYTHON)"\n'
                        'gconfig_add FROM_BASH "$(gconfig_get FROM_PYTHON)" x\n'))
    assert out == "[  spaced value ]"
    assert pilot.config.get("FROM_BASH") == "  spaced value  x"


def test_gconfig_add_keeps_the_file_mode(pilot):
    os.chmod(str(pilot.config_path), 0o640)
    ok(run(pilot, "gconfig_add K v\n"))
    assert stat.S_IMODE(pilot.config_path.stat().st_mode) == 0o640


@pytest.mark.parametrize("shell", SHELLS)
def test_a_multi_line_value_or_a_bad_key_ends_the_script_and_changes_nothing(pilot, shell):
    before = pilot.config_path.read_text()
    for body, message in [('gconfig_add KEY "two\nlines"\necho not reached\n', "value of KEY holds a line break"),
                          ('gconfig_add "TWO WORDS" v\necho not reached\n', "invalid key 'TWO WORDS'")]:
        result = run(pilot, body, shell)
        assert result.returncode == 1 and result.stdout == ""
        assert message in result.stderr
    assert pilot.config_path.read_text() == before
    assert leftovers(pilot) == []


def test_gconfig_add_without_glidein_config_ends_the_script(pilot):
    result = run(pilot, "unset glidein_config\ngconfig_add K v\necho not reached\n")
    assert result.returncode == 1 and result.stdout == ""
    assert "glidein_config is not set" in result.stderr


def test_gconfig_add_into_an_unwritable_directory_fails_clearly(unprivileged, tmp_path):
    directory = unprivileged.scratch(tmp_path)
    paths = helpers_dir(directory / "helpers")
    config = create(directory / "glidein_config", config_entries(paths))
    script = directory / "script.sh"
    script.write_text(HEADER + "gconfig_add K v\necho not reached\n")
    os.chmod(str(directory), 0o555)  # the user reads, cannot write
    try:
        result = unprivileged.run(["bash", str(script), config.path, "main"], cwd="/")
    finally:
        os.chmod(str(directory), 0o755)
    assert result.returncode == 1 and result.stdout == ""
    assert "cannot create a temporary file beside {}".format(config.path) in result.stderr
    assert config.get("K") is None


@pytest.mark.parametrize("shell", SHELLS)
def test_gconfig_trim_keeps_the_last_line_of_each_key(pilot, shell):
    pilot.config_path.write_text("A 1\nB 2\nA 3\n\nALONE\nB 4\nAB 5\n")
    ok(run(pilot, "gconfig_trim\n", shell, header='glidein_config="$1"\n. %s\n' % pilot.paths["add_config_line.source"]))
    assert pilot.config_path.read_text() == "A 3\nALONE\nB 4\nAB 5\n"


def _path_without_flock(directory):
    directory.mkdir()
    for name in os.listdir("/usr/bin"):
        if name != "flock":
            os.symlink(os.path.join("/usr/bin", name), str(directory / name))
    return str(directory)


@pytest.mark.parametrize("lock", ["flock", "mkdir"])
@pytest.mark.parametrize("shell", SHELLS)
def test_concurrent_safe_adds_all_land(pilot, tmp_path, shell, lock):
    env = {"PATH": _path_without_flock(tmp_path / "bin")} if lock == "mkdir" else {}
    out = ok(run(pilot, """
command -v flock >/dev/null && echo has-flock
i=1
while [ $i -le 20 ]; do
    gconfig_add_safe "KEY_$i" "value $i" &
    i=$((i + 1))
done
wait
add_config_line_safe LAST done
""", shell, env=env))
    assert ("has-flock" in out) is (lock == "flock")
    values = pilot.config.items()
    assert {key: values.get(key) for key in ("KEY_{}".format(i) for i in range(1, 21))} == \
        {"KEY_{}".format(i): "value {}".format(i) for i in range(1, 21)}
    assert values["LAST"] == "done" and values["GLIDEIN_WORK_DIR"] == str(pilot.work)
    history = (pilot.work / "glidein_config.history").read_text().splitlines()
    assert sorted(line for line in history if line.startswith("KEY_")) == \
        sorted("KEY_{} value {}".format(i, i) for i in range(1, 21))
    assert leftovers(pilot) == []


@pytest.mark.parametrize("shell", SHELLS)
def test_a_dead_holders_mkdir_lock_is_broken_once_and_a_live_ones_is_kept(pilot, tmp_path, shell):
    env = {"PATH": _path_without_flock(tmp_path / "bin")}
    dead = subprocess.Popen(["true"])
    dead.wait()
    lockdir = pilot.work / "glidein_config.lockdir"
    lockdir.mkdir()
    (lockdir / "pid").write_text("{}\n".format(dead.pid))
    result = run(pilot, 'gconfig_add_safe AFTER_DEAD yes\n', shell, env=env)
    assert result.returncode == 0, result.stderr
    assert "removing the lock {} of process {}, which is gone".format(lockdir, dead.pid) in result.stderr
    assert pilot.config.items()["AFTER_DEAD"] == "yes"
    assert leftovers(pilot) == []  # neither the lock nor the breaking lock is left
    lockdir.mkdir()  # held by a live process (this one): waited for, never broken
    (lockdir / "pid").write_text("{}\n".format(os.getpid()))
    result = run(pilot, 'gconfig_add_safe AFTER_LIVE yes\n', shell, env=dict(env, GCONFIG_LOCK_TIMEOUT="1"))
    assert result.returncode == 1
    assert "no lock {} after 1s: process {} holds it".format(lockdir, os.getpid()) in result.stderr
    assert "AFTER_LIVE" not in pilot.config.items()
    assert (lockdir / "pid").read_text() == "{}\n".format(os.getpid())
    (lockdir / "pid").unlink()
    lockdir.rmdir()


def test_warn_writes_a_timestamped_message_to_stderr(pilot):
    result = run(pilot, "warn something went wrong\n")
    assert result.returncode == 0 and result.stdout == ""
    timestamp, message = result.stderr.rstrip("\n").split(" ", 1)
    assert message == "something went wrong" and timestamp.endswith("Z") and "T" in timestamp


# -- add_condor_vars_line ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shell", SHELLS)
def test_add_condor_vars_line_replaces_the_line_of_its_name(pilot, shell):
    pilot.condor_vars.add("EXISTING", "S", "-", "+", "N", "Y", "+")
    pilot.condor_vars.add("MY_VAR_LONGER", "S", "-", "+", "N", "Y", "+")
    ok(run(pilot, """
condor_vars_file=$(gconfig_get CONDOR_VARS_FILE "$glidein_config")
gconfig_add MY_VAR "first value"
add_condor_vars_line MY_VAR "S" "-" "+" "N" "N" "-"
add_condor_vars_line MY_VAR "S" "-" "+" "Y" "Y" "+"
gconfig_add MY_INT 42
add_condor_vars_line MY_INT "I" "-" "GLIDEIN_MyInt" "N" "Y" "@"
""", shell))
    lines = pilot.condor_vars.lines()
    assert [var.name for var in lines] == ["EXISTING", "MY_VAR_LONGER", "MY_VAR", "MY_INT"]
    assert tuple(lines[2]) == ("MY_VAR", "S", "-", "+", "Y", "Y", "+")
    assert pilot.condor_vars.classad_attributes(pilot.config) == {"MY_VAR": "first value", "GLIDEIN_MyInt": 42}
    assert pilot.condor_vars.job_environment(pilot.config) == {"MY_VAR": "first value", "GLIDEIN_MyInt": "42"}
    assert leftovers(pilot) == []


def test_add_condor_vars_line_finds_the_file_in_glidein_config_and_refuses_bad_lines(pilot):
    result = run(pilot, """
add_condor_vars_line FROM_CONFIG S - + N Y + && echo added
add_condor_vars_line SHORT S - + && echo short-added
add_condor_vars_line BLANK S "two words" + N Y + && echo blank-added
echo done
""")
    assert result.stdout == "added\ndone\n"
    assert "expected NAME TYPE DEFAULT CONDOR_NAME REQUIRED EXPORT_TO_CLASSAD JOB_ENV, got 4" in result.stderr
    assert "field 'two words' of BLANK is empty or holds blanks" in result.stderr
    assert [var.name for var in pilot.condor_vars.lines()] == ["FROM_CONFIG"]


# -- get_id_selectors.source -------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_add_config_line", [True, False])
@pytest.mark.parametrize("shell", SHELLS)
def test_get_id_selectors(pilot, shell, with_add_config_line):
    header = 'glidein_config="$1"\n'
    if with_add_config_line:
        header += '. "%s"\n' % pilot.paths["add_config_line.source"]
    header += '. "%s"\n' % pilot.paths["get_id_selectors.source"]
    result = run(pilot, """
for id in main entry client client_group; do
    echo "$id [$(get_prefix $id)] [$(get_work_dir $id)] [$(get_descript_file $id)]"
done
get_prefix bogus || echo "bogus $?"
""", shell, header=header)
    work = str(pilot.work)
    assert result.stdout.splitlines() == [
        "main [] [{}] [d-main]".format(work), "entry [ENTRY_] [{}/entry] [d-entry]".format(work),
        "client [GLIDECLIENT_] [{}/client] [d-client]".format(work),
        "client_group [GLIDECLIENT_GROUP_] [{}/group] [d-group]".format(work), "bogus 1"]
    assert "invalid id 'bogus'" in result.stderr


# -- error_gen and the results file ------------------------------------------------------------------------------

def error_gen(pilot, *args, env=None):
    environment = dict(os.environ, CVMFS_PILOT_RESULTS=str(pilot.results))
    environment.update(env or {})
    return subprocess.run([pilot.paths["error_gen"]] + list(args), env=environment, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=60)


def test_error_gen_records_results_as_json_lines(pilot):
    nasty = 'quote " backslash \\ tab \t newline \n cr \r bell \a unicode é ✓ $(x) `y`'
    assert error_gen(pilot, "-ok", "a.sh").returncode == 0
    assert error_gen(pilot, "-ok", "b.sh", "k1", "v1", "k2", nasty, "-dash", "x=y").returncode == 0
    assert error_gen(pilot, "-error", "c.sh", "WN_Resource", nasty, "free_mb", "12").returncode == 0
    assert error_gen(pilot, "-error", "d.sh", "Made_Up_Type", "").returncode == 0
    odd = error_gen(pilot, "-error", "e.sh", "Config", "detail", "lonely")
    assert odd.returncode == 0 and "key 'lonely' has no value" in odd.stderr
    assert error_gen(pilot, "-error", "f.sh", "Network").returncode == 0
    problems = []
    assert read_results(pilot.results, problems) == [
        {"script": "a.sh", "status": "ok", "type": None, "detail": None, "values": {}},
        {"script": "b.sh", "status": "ok", "type": None, "detail": None,
         "values": {"k1": "v1", "k2": nasty, "-dash": "x=y"}},
        {"script": "c.sh", "status": "error", "type": "WN_Resource", "detail": nasty, "values": {"free_mb": "12"}},
        {"script": "d.sh", "status": "error", "type": "Made_Up_Type", "detail": "", "values": {}},
        {"script": "e.sh", "status": "error", "type": "Config", "detail": "detail", "values": {"lonely": ""}},
        {"script": "f.sh", "status": "error", "type": "Network", "detail": None, "values": {}},
    ]
    assert problems == []
    assert len(pilot.results.read_bytes().splitlines()) == 6


def test_error_gen_prints_the_result_when_no_results_file_is_set(pilot):
    environment = {k: v for k, v in os.environ.items() if k != "CVMFS_PILOT_RESULTS"}
    result = subprocess.run(["sh", pilot.paths["error_gen"], "-ok", "x.sh", "k", "v"], env=environment,
                            stdout=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"script": "x.sh", "status": "ok", "type": None, "detail": None,
                                         "values": {"k": "v"}}
    assert not pilot.results.exists()


@pytest.mark.parametrize("args", [[], ["-ok"], ["-error", "x.sh"], ["-warn", "x.sh"], ["ok", "x.sh"]])
def test_error_gen_bad_usage(pilot, args):
    result = error_gen(pilot, *args)
    assert result.returncode == 2 and "usage: error_gen" in result.stderr
    assert not pilot.results.exists()


def test_error_gen_cannot_write_its_results(pilot, tmp_path):
    result = error_gen(pilot, "-ok", "x.sh", env={"CVMFS_PILOT_RESULTS": str(tmp_path / "no-dir" / "results")})
    assert result.returncode == 1 and "cannot append the result of x.sh" in result.stderr


def test_read_results_skips_and_reports_malformed_lines(tmp_path, caplog):
    path = tmp_path / "results.jsonl"
    good = {"script": "a.sh", "status": "ok", "type": None, "detail": None, "values": {}}
    path.write_bytes(b"\n".join([json.dumps(good).encode(), b"", b"not json", b"[1, 2]",
                                 b'{"script": "b.sh", "status": "maybe"}', b'{"status": "ok"}',
                                 b'{"script": "c.sh", "status": "error", "values": []}',
                                 b'{"script": "d\xff.sh", "status": "error", "type": "Config"}']) + b"\n")
    problems = []
    results = read_results(path, problems)
    assert results == [good, {"script": "d\ufffd.sh", "status": "error", "type": "Config", "detail": None,
                              "values": {}}]
    assert [p.split(": ")[0] for p in problems] == ["{}:{}".format(path, n) for n in (3, 4, 5, 6, 7)]
    assert "not JSON" in problems[0] and "not a JSON object" in problems[1] and '"status"' in problems[2]
    read_results(path)
    assert len([r for r in caplog.records if "malformed result line" in r.getMessage()]) == 5
    assert read_results(tmp_path / "missing") == []


@pytest.mark.parametrize("error_type, expected", [
    ("WN_Resource", "site"), ("Network", "site"), ("Config", "config"), ("Corruption", "config"),
    ("VO_Config", "config"), ("VO_Proxy", "config"), ("Other", "config"), ("Unheard_Of", "config"),
])
def test_classify_by_recorded_error_type(error_type, expected):
    results = [{"script": "s.sh", "status": "ok", "type": None, "detail": None, "values": {}},
               {"script": "s.sh", "status": "error", "type": error_type, "detail": "it broke",
                "values": {"b": "2", "a": "1"}}]
    assert classify(results, 1) == (expected, "s.sh reported {}: it broke (a=1, b=2)".format(error_type))
    assert classify(results, 0) == (None, None)  # the exit status decides whether the script failed


def test_classify_a_failure_without_a_recorded_error():
    assert classify([], 3, script="x.sh") == ("config", "x.sh exited with status 3 without reporting an error "
                                                        "through error_gen")
    ok_only = [{"script": "y.sh", "status": "ok", "type": None, "detail": None, "values": {}}]
    assert classify(ok_only, -9) == ("config", "y.sh was killed by signal 9 without reporting an error through "
                                               "error_gen")
    last_error = [{"script": "z.sh", "status": "error", "type": "Config", "detail": None, "values": {}},
                  {"script": "z.sh", "status": "error", "type": "WN_Resource", "detail": None, "values": {}}]
    assert classify(last_error, 1) == ("site", "z.sh reported WN_Resource")


# -- a GlideinWMS validation script, unmodified ------------------------------------------------------------------

def run_check_disk(pilot, script_id="main"):
    environment = dict(os.environ, CVMFS_PILOT_RESULTS=str(pilot.results))
    return subprocess.run([str(CHECK_DISK), str(pilot.config_path), script_id], env=environment,
                          cwd=str(pilot.work), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)


def test_check_disk_passes(pilot):
    pilot.config.add("CHECK_MIN_DISK_MB", "1")
    result = run_check_disk(pilot)
    assert result.returncode == 0, result.stderr
    results = read_results(pilot.results)
    assert len(results) == 1 and results[0]["script"] == "check_disk.sh" and results[0]["status"] == "ok"
    free = results[0]["values"]["free_mb"]
    assert int(free) >= 1
    assert pilot.config.get("MY_CHECK_RESULT") == "OK {} MB free".format(free)
    assert pilot.condor_vars.classad_attributes(pilot.config) == {"MY_CHECK_RESULT": "OK {} MB free".format(free)}
    assert pilot.condor_vars.job_environment(pilot.config) == {"MY_CHECK_RESULT": "OK {} MB free".format(free)}
    assert classify(results, result.returncode) == (None, None)
    assert leftovers(pilot) == []


def test_check_disk_fails_on_a_small_disk_as_a_site_problem(pilot):
    pilot.config.update({"CHECK_MIN_DISK_MB": "1", "ENTRY_CHECK_MIN_DISK_MB": "999999999999"})
    result = run_check_disk(pilot, "entry")  # the entry's threshold wins for the entry id
    assert result.returncode == 1
    results = read_results(pilot.results)
    assert [(r["status"], r["type"], r["detail"]) for r in results] == [("error", "WN_Resource", "not enough disk")]
    free = results[0]["values"]["free_mb"]
    assert classify(results, result.returncode) == (
        "site", "check_disk.sh reported WN_Resource: not enough disk (free_mb={})".format(free))
    assert pilot.config.get("MY_CHECK_RESULT") == "FAILED {} MB free, 999999999999 MB needed".format(free)
    assert [tuple(v) for v in pilot.condor_vars.lines()] == [("MY_CHECK_RESULT", "S", "-", "+", "Y", "Y", "+")]


def test_check_disk_with_a_bad_threshold_is_a_configuration_problem(pilot):
    pilot.config.add("CHECK_MIN_DISK_MB", "lots")
    result = run_check_disk(pilot)
    assert result.returncode == 1
    failure, detail = classify(read_results(pilot.results), result.returncode)
    assert failure == "config"
    assert detail == "check_disk.sh reported Config: CHECK_MIN_DISK_MB is not a number of MB: 'lots' " \
                     "(attribute=CHECK_MIN_DISK_MB)"
    assert pilot.config.get("MY_CHECK_RESULT") is None and pilot.condor_vars.lines() == []


# -- package data: wheel/editable install and the zipapp ---------------------------------------------------------

PYTHONS = ["/usr/bin/python3"] + sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")))[:1]


@pytest.mark.parametrize("python", [p for p in PYTHONS if os.path.exists(p)])
def test_the_zipapp_holds_the_helpers_and_helpers_dir_works_from_it(python, tmp_path):
    from cvmfs_pilot.dist.zipapp_engine import build_zipapp
    data = build_zipapp()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert {"cvmfs_pilot/glidein/helpers/" + name for name in HELPERS} <= set(names)
    assert "cvmfs_pilot/glidein/helper_files.py" in names
    pyz = tmp_path / "cvmfs-pilot.pyz"
    pyz.write_bytes(data)
    program = ("import json, sys; sys.path.insert(0, sys.argv[1]); from cvmfs_pilot.glidein import helper_files; "
               "assert helper_files.__file__.startswith(sys.argv[1]), helper_files.__file__; "
               "print(json.dumps(helper_files.helpers_dir(sys.argv[2])))")
    result = subprocess.run([python, "-I", "-c", program, str(pyz), str(tmp_path / "out")], env={},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert result.returncode == 0, result.stderr
    paths = json.loads(result.stdout)
    for name in HELPERS:
        assert Path(paths[name]).read_bytes() == (HELPERS_SRC / name).read_bytes()
    ran = subprocess.run([paths["error_gen"], "-ok", "from-zipapp.sh"], env={"PATH": "/usr/bin:/bin"},
                         stdout=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert json.loads(ran.stdout)["script"] == "from-zipapp.sh"


def test_pyproject_ships_the_helpers_as_package_data():
    import fnmatch
    import tomllib
    with open(str(Path(__file__).resolve().parents[2] / "pyproject.toml"), "rb") as stream:
        package_data = tomllib.load(stream)["tool"]["setuptools"]["package-data"]
    patterns = package_data["cvmfs_pilot.glidein"]
    for name in HELPERS:
        assert any(fnmatch.fnmatch("helpers/" + name, pattern) for pattern in patterns), name
