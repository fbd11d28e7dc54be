"""The relocated configuration that cvmfs2 of a distribution runs with (cvmfs_pilot.node.relocate): order of the
chain, relocation of system paths, the config repository, automatic additions, overrides and their quoting,
inlined includes, refused files, config_repository_of, atomic writing, and what the project's shell reader and
bash make of the result."""

import os
import posixpath
import shutil
import stat
import subprocess
import textwrap

import pytest

from cvmfs_pilot.client.shellvars import ShellVariables
from cvmfs_pilot.node import relocate
from cvmfs_pilot.node.relocate import RelocationError, config_repository_of, relocated_config

DIST = "/pilot/dist"
MOUNT = "/pilot/cvmfs"
FQRN = "sw.example.org"
CFG = "config.example.org"
ETC = DIST + "/etc/cvmfs"
CFG_ETC = "{}/{}/etc/cvmfs".format(MOUNT, CFG)


class Files(dict):
    """Configuration files in memory, path -> text, reached through relocated_config's read and conf_files."""

    def read(self, path):
        return self.get(path)

    def conf_files(self, directory):
        return sorted(posixpath.basename(path) for path in self
                      if posixpath.dirname(path) == directory and path.endswith(".conf"))


def relocated(files, mount_dir=MOUNT, **options):
    return relocated_config(DIST, FQRN, mount_dir, read=files.read, conf_files=files.conf_files, **options)


def dedent(text):
    return textwrap.dedent(text).lstrip("\n")


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text))
    return path


def shell_reader(text, tmp_path):
    """The project's shell reader after sourcing text (written as the node layer writes it)."""
    path = tmp_path / "relocated.conf"
    relocate.write_relocated_config(str(path), text)
    variables = ShellVariables({})
    assert variables.source(str(path))
    return variables


def values(text, tmp_path):
    return {name: setting.value for name, setting in shell_reader(text, tmp_path).settings.items()}


def bash_values(text, tmp_path, names):
    """What bash ends with for names after running text as cvmfs2 does (in the file's directory)."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    path = tmp_path / "bash.conf"
    relocate.write_relocated_config(str(path), text)
    script = '. "$1" 2>/dev/null; shift; for name; do printf "%s=%s\\n" "$name" "${!name}"; done'
    result = subprocess.run([bash, "-c", script, "bash", str(path)] + list(names), cwd=str(tmp_path),
                            stdout=subprocess.PIPE, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                            check=True, universal_newlines=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def chain_files():
    """Every file of the chain, each setting WHO to its own name and a variable of its own."""
    names = {
        ETC + "/default.conf": "default_conf",
        ETC + "/default.d/60-b.conf": "default_d_b",
        ETC + "/default.d/10-a.conf": "default_d_a",
        CFG_ETC + "/default.conf": "cfg_default_conf",
        ETC + "/default.local": "default_local",
        CFG_ETC + "/domain.d/example.org.conf": "cfg_domain_conf",
        ETC + "/domain.d/example.org.conf": "domain_conf",
        ETC + "/domain.d/example.org.local": "domain_local",
        CFG_ETC + "/config.d/sw.example.org.conf": "cfg_config_conf",
        ETC + "/config.d/sw.example.org.conf": "config_conf",
        ETC + "/config.d/sw.example.org.local": "config_local",
    }
    files = Files((path, "WHO={0}\nSEEN_{0}=yes\n".format(name)) for path, name in names.items())
    files[ETC + "/default.d/README"] = "not a .conf file: never read\n"
    files[ETC + "/domain.d/other.org.conf"] = "WHO=other_domain\n"
    return files


# --- order of the chain ---------------------------------------------------------------------------------------


def test_the_chain_is_inlined_in_the_clients_order_with_the_pilots_settings_between(tmp_path):
    text = relocated(chain_files(), config_repository=CFG, overrides={"CVMFS_HTTP_PROXY": "DIRECT"},
                     log_path="/pilot/log/sw.log", nfiles=4096)
    headers = [line for line in text.splitlines() if line.startswith(("# from ", "# set by "))]
    assert headers == [
        "# from /pilot/dist/etc/cvmfs/default.conf",
        "# from /pilot/dist/etc/cvmfs/default.d/10-a.conf",
        "# from /pilot/dist/etc/cvmfs/default.d/60-b.conf",
        "# set by cvmfs-pilot: where this pilot mounts repositories",
        "# from /pilot/cvmfs/config.example.org/etc/cvmfs/default.conf",
        "# from /pilot/dist/etc/cvmfs/default.local",
        "# set by cvmfs-pilot: automatic additions, unless set above",
        "# set by cvmfs-pilot: where this pilot mounts repositories",
        "# from /pilot/cvmfs/config.example.org/etc/cvmfs/domain.d/example.org.conf",
        "# from /pilot/dist/etc/cvmfs/domain.d/example.org.conf",
        "# from /pilot/dist/etc/cvmfs/domain.d/example.org.local",
        "# from /pilot/cvmfs/config.example.org/etc/cvmfs/config.d/sw.example.org.conf",
        "# from /pilot/dist/etc/cvmfs/config.d/sw.example.org.conf",
        "# from /pilot/dist/etc/cvmfs/config.d/sw.example.org.local",
        "# set by cvmfs-pilot: the pilot's -o overrides",
        "# set by cvmfs-pilot: where this pilot mounts repositories",
    ]
    assert text.endswith("CVMFS_HTTP_PROXY=DIRECT\n# set by cvmfs-pilot: where this pilot mounts repositories\n"
                         "CVMFS_MOUNT_DIR=/pilot/cvmfs\nCVMFS_CONFIG_REPOSITORY=config.example.org\n")
    settings = values(text, tmp_path)
    assert settings["WHO"] == "config_local"  # later wins
    assert all(settings["SEEN_" + name] == "yes" for name in chain_files().values() if name.isidentifier())
    assert (settings["CVMFS_NFILES"], settings["CVMFS_USYSLOG"]) == ("4096", "/pilot/log/sw.log")


@pytest.mark.parametrize("missing, winner", [
    ("config_local", "config_conf"),
    ("config_conf", "cfg_config_conf"),
    ("cfg_config_conf", "domain_local"),
    ("domain_local", "domain_conf"),
    ("domain_conf", "cfg_domain_conf"),
    ("cfg_domain_conf", "default_local"),
    ("default_local", "cfg_default_conf"),
    ("cfg_default_conf", "default_d_b"),
    ("default_d_b", "default_d_a"),
    ("default_d_a", "default_conf"),
])
def test_each_file_wins_over_the_ones_before_it(missing, winner, tmp_path):
    files = chain_files()
    chain = [path for path, text in files.items() if text.startswith("WHO=")]
    # remove the given file and every file after it in the chain order
    order = ["default_conf", "default_d_a", "default_d_b", "cfg_default_conf", "default_local", "cfg_domain_conf",
             "domain_conf", "domain_local", "cfg_config_conf", "config_conf", "config_local"]
    gone = order[order.index(missing):]
    for path in chain:
        if files[path].split("\n", 1)[0][len("WHO="):] in gone:
            del files[path]
    assert values(relocated(files, config_repository=CFG), tmp_path)["WHO"] == winner


def test_the_distribution_needs_a_default_conf():
    files = chain_files()
    del files[ETC + "/default.conf"]
    with pytest.raises(RelocationError, match=r"/pilot/dist/etc/cvmfs/default.conf does not exist: /pilot/dist is "
                                              r"not an unpacked cvmfs2 client distribution"):
        relocated(files)


def test_the_domain_is_the_name_after_its_first_dot(tmp_path):
    files = Files({ETC + "/default.conf": "A=1\n", ETC + "/domain.d/b.example.org.conf": "DOMAIN=b.example.org\n",
                   ETC + "/domain.d/example.org.conf": "DOMAIN=example.org\n"})
    text = relocated_config(DIST, "a.b.example.org", MOUNT, read=files.read, conf_files=files.conf_files)
    assert values(text, tmp_path)["DOMAIN"] == "b.example.org"


# --- relocation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("line, expected", [
    ("CVMFS_CACHE_BASE=/var/lib/cvmfs", "CVMFS_CACHE_BASE=/pilot/dist/var/lib/cvmfs"),
    ("CVMFS_KEYS_DIR=/etc/cvmfs/keys", "CVMFS_KEYS_DIR=/pilot/dist/etc/cvmfs/keys"),
    ("CVMFS_RELOAD_SOCKETS=/var/run/cvmfs", "CVMFS_RELOAD_SOCKETS=/pilot/dist/var/run/cvmfs"),
    ("CVMFS_RELOAD_SOCKETS=/run/cvmfs", "CVMFS_RELOAD_SOCKETS=/pilot/dist/var/run/cvmfs"),
    ("CVMFS_MOUNT_DIR=/cvmfs", "CVMFS_MOUNT_DIR=/pilot/cvmfs"),
    ("K=/cvmfs/config.example.org/etc/cvmfs/keys", "K=/pilot/cvmfs/config.example.org/etc/cvmfs/keys"),
    # every occurrence, after each kind of start
    ("K=/etc/cvmfs/keys/a.pub:/etc/cvmfs/keys/b.pub,/cvmfs/c;/var/lib/cvmfs",
     "K=/pilot/dist/etc/cvmfs/keys/a.pub:/pilot/dist/etc/cvmfs/keys/b.pub,/pilot/cvmfs/c;/pilot/dist/var/lib/cvmfs"),
    ("K=\"/etc/cvmfs\" '/cvmfs/x' \t/run/cvmfs",
     "K=\"/pilot/dist/etc/cvmfs\" '/pilot/cvmfs/x' \t/pilot/dist/var/run/cvmfs"),
    ("/etc/cvmfs/x", "/pilot/dist/etc/cvmfs/x"),
    ("K=${A:-/etc/cvmfs} ${B:+/cvmfs}", "K=${A:-/pilot/dist/etc/cvmfs} ${B:+/pilot/cvmfs}"),
    ("if [ -d /cvmfs/x ]; then", "if [ -d /pilot/cvmfs/x ]; then"),
    # other paths stay
    ("K=/cvmfsx /cvmfs-old /data/cvmfs /etc/cvmfs-other /etc/cvmfsx /usr/etc/cvmfs /var/lib/cvmfs2",
     "K=/cvmfsx /cvmfs-old /data/cvmfs /etc/cvmfs-other /etc/cvmfsx /usr/etc/cvmfs /var/lib/cvmfs2"),
    ("U='http://s1.example.org/cvmfs/@fqrn@;http://s2.example.org:8000/cvmfs/@fqrn@;file:///cvmfs/x'",
     "U='http://s1.example.org/cvmfs/@fqrn@;http://s2.example.org:8000/cvmfs/@fqrn@;file:///cvmfs/x'"),
    ("K=$CVMFS_MOUNT_DIR/etc/cvmfs", "K=$CVMFS_MOUNT_DIR/etc/cvmfs"),
])
def test_system_paths_that_start_a_value_are_relocated(line, expected):
    assert relocate.relocate_line(line, DIST, MOUNT) == expected


def test_cvmfs_stays_when_the_pilot_mounts_at_cvmfs():
    line = "K=/cvmfs/x:/etc/cvmfs/keys /var/run/cvmfs"
    assert relocate.relocate_line(line, DIST, "/cvmfs") == (
        "K=/cvmfs/x:/pilot/dist/etc/cvmfs/keys /pilot/dist/var/run/cvmfs")


def test_every_inlined_line_is_relocated_but_comments_are_kept(tmp_path):
    files = Files({ETC + "/default.conf": dedent("""
        # CVMFS_CACHE_BASE=/var/lib/cvmfs is the default
            # /etc/cvmfs/keys: indented comment
        CVMFS_CACHE_BASE=/var/lib/cvmfs   # trailing comments are part of the line
        CVMFS_MOUNT_DIR=/cvmfs
        """)})
    text = relocated(files)
    assert "\n# CVMFS_CACHE_BASE=/var/lib/cvmfs is the default\n    # /etc/cvmfs/keys: indented comment\n" in text
    assert "\nCVMFS_CACHE_BASE=/pilot/dist/var/lib/cvmfs   # trailing comments are part of the line\n" in text
    assert "\nCVMFS_MOUNT_DIR=/pilot/cvmfs\n" in text
    assert values(text, tmp_path)["CVMFS_CACHE_BASE"] == "/pilot/dist/var/lib/cvmfs"


def test_a_relocated_path_is_not_relocated_again():
    # /pilot/dist is itself below a directory named cvmfs: a second pass would rewrite it
    assert relocate.relocate_line("A=/etc/cvmfs B=/cvmfs", "/cvmfs/dist", "/work/cvmfs") == (
        "A=/cvmfs/dist/etc/cvmfs B=/work/cvmfs")


@pytest.mark.parametrize("dist_root, mount_dir, what", [
    ("/scratch/my dist", MOUNT, "the distribution directory '/scratch/my dist'"),
    ("pilot/dist", MOUNT, "the distribution directory 'pilot/dist'"),
    (DIST, "/work/a:b", "the mount directory '/work/a:b'"),
    (DIST, "/work/$HOME", "the mount directory '/work/\\$HOME'"),
    (DIST, "", "the mount directory ''"),
])
def test_directories_that_cannot_be_written_unquoted_are_refused(dist_root, mount_dir, what):
    files = Files({dist_root + "/etc/cvmfs/default.conf": "A=1\n"})
    with pytest.raises(RelocationError, match="^" + what + " must be an absolute path of letters, digits"):
        relocated_config(dist_root, FQRN, mount_dir, read=files.read, conf_files=files.conf_files)


def test_directories_are_normalized():
    files = Files({ETC + "/default.conf": "CVMFS_MOUNT_DIR=/cvmfs\n"})
    text = relocated_config(DIST + "/", FQRN, MOUNT + "/./", read=files.read, conf_files=files.conf_files)
    assert "\nCVMFS_MOUNT_DIR=/pilot/cvmfs\n" in text and "//" not in text


# --- the config repository ---------------------------------------------------------------------------------------


def test_config_repository_files_come_from_the_mount_directory_and_missing_ones_are_skipped(tmp_path):
    dist, mount = tmp_path / "dist", tmp_path / "cvmfs"
    write(dist / "etc/cvmfs/default.conf", "CVMFS_MOUNT_DIR=/cvmfs\n")
    write(dist / "etc/cvmfs/default.d/60-cfg.conf", "CVMFS_CONFIG_REPOSITORY={}\n".format(CFG))
    write(mount / CFG / "etc/cvmfs/config.d/sw.example.org.conf", 'CVMFS_SERVER_URL="http://s1/cvmfs/@fqrn@"\n')
    text = relocated_config(str(dist), FQRN, str(mount), CFG)
    assert "# from {}/{}/etc/cvmfs/config.d/sw.example.org.conf\n".format(mount, CFG) in text
    assert "# from {}/{}/etc/cvmfs/default.conf".format(mount, CFG) not in text  # the config repository has none
    assert values(text, tmp_path)["CVMFS_SERVER_URL"] == "http://s1/cvmfs/@fqrn@"


def test_the_config_repository_is_not_read_when_it_is_being_mounted():
    files = chain_files()
    text = relocated_config(DIST, CFG, MOUNT, CFG, read=files.read, conf_files=files.conf_files)
    assert "cfg_" not in text
    assert text.endswith("CVMFS_MOUNT_DIR=/pilot/cvmfs\nCVMFS_CONFIG_REPOSITORY=config.example.org\n")


def test_without_a_config_repository_its_files_are_not_read_and_the_name_is_left_to_the_chain(tmp_path):
    files = chain_files()
    files[ETC + "/default.d/60-b.conf"] += "CVMFS_CONFIG_REPOSITORY={}\n".format(CFG)
    text = relocated(files)
    assert "cfg_" not in text
    settings = values(text, tmp_path)
    assert (settings["CVMFS_CONFIG_REPOSITORY"], settings["CVMFS_MOUNT_DIR"]) == (CFG, MOUNT)


def test_mount_dir_and_config_repository_hold_the_pilots_values_while_the_chain_is_read(tmp_path):
    files = Files({
        ETC + "/default.conf": "CVMFS_MOUNT_DIR=/cvmfs\n",
        ETC + "/default.d/60-cfg.conf": "CVMFS_CONFIG_REPOSITORY=other.example.org\n",
        CFG_ETC + "/default.conf": "AT_CFG_DEFAULT=$CVMFS_MOUNT_DIR/$CVMFS_CONFIG_REPOSITORY\n",
        ETC + "/default.local": "CVMFS_MOUNT_DIR=/elsewhere\nCVMFS_CONFIG_REPOSITORY=local.example.org\n",
        CFG_ETC + "/domain.d/example.org.conf":
            "CVMFS_KEYS_DIR=$CVMFS_MOUNT_DIR/$CVMFS_CONFIG_REPOSITORY/etc/cvmfs/keys\n",
    })
    text = relocated(files, config_repository=CFG)
    settings = values(text, tmp_path)
    assert settings["AT_CFG_DEFAULT"] == MOUNT + "/" + CFG
    assert settings["CVMFS_KEYS_DIR"] == CFG_ETC + "/keys"
    assert (settings["CVMFS_MOUNT_DIR"], settings["CVMFS_CONFIG_REPOSITORY"]) == (MOUNT, CFG)


@pytest.mark.parametrize("name", ["config", "x..org", "a b.org", "a.org/x", 7])
def test_repository_names_are_checked(name):
    files = chain_files()
    with pytest.raises(RelocationError, match="is not a fully qualified repository name"):
        relocated_config(DIST, name, MOUNT, read=files.read, conf_files=files.conf_files)
    with pytest.raises(RelocationError, match="the config repository .* is not a fully qualified repository name"):
        relocated(files, config_repository=name)


# --- automatic additions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("default_local, nfiles, usyslog", [
    ("", "4096", "/pilot/log/sw example.log"),
    ("CVMFS_NFILES=131072\n", "131072", "/pilot/log/sw example.log"),
    ("CVMFS_USYSLOG=/var/log/cvmfs.log\n", "4096", "/var/log/cvmfs.log"),
    ("CVMFS_USYSLOG=\nCVMFS_NFILES=\n", "4096", ""),  # an empty log turns it off; an empty limit means none
])
def test_automatic_additions_keep_what_the_chain_set(default_local, nfiles, usyslog, tmp_path):
    files = Files({ETC + "/default.conf": "A=1\n", ETC + "/default.local": default_local})
    text = relocated(files, log_path="/pilot/log/sw example.log", nfiles=4096)
    expected = {"CVMFS_NFILES": nfiles, "CVMFS_USYSLOG": usyslog}
    settings = values(text, tmp_path)
    assert {name: settings[name] for name in expected} == expected
    assert bash_values(text, tmp_path, expected) == expected


def test_an_earlier_file_counts_as_well(tmp_path):
    files = Files({ETC + "/default.conf": "CVMFS_NFILES=65536\n"})
    assert values(relocated(files, nfiles=4096), tmp_path)["CVMFS_NFILES"] == "65536"


def test_no_additions_without_values():
    text = relocated(Files({ETC + "/default.conf": "A=1\n"}))
    assert "automatic additions" not in text and "CVMFS_NFILES" not in text and "CVMFS_USYSLOG" not in text


@pytest.mark.parametrize("options, message", [
    ({"nfiles": 0}, "the open-files limit 0 must be a positive whole number"),
    ({"nfiles": "4096"}, "the open-files limit '4096' must be a positive whole number"),
    ({"nfiles": True}, "the open-files limit True must be a positive whole number"),
    ({"log_path": "log/sw.log"}, "the log file 'log/sw.log' must be an absolute path"),
    ({"log_path": "/log/a\nb"}, "the log file CVMFS_USYSLOG='/log/a\\\\nb' must be text on one line"),
])
def test_bad_additions_are_refused(options, message):
    with pytest.raises(RelocationError, match="^" + message.replace("(", r"\(")):
        relocated(Files({ETC + "/default.conf": "A=1\n"}), **options)


# --- overrides ---------------------------------------------------------------------------------------------------


OVERRIDE_VALUES = ["DIRECT", "http://proxy.example.org:3128;DIRECT", "with space", "it's", 'say "hi"', "$HOME",
                   "`date`", "$(date)", "back\\slash", "", "a=b", "~user", "*", "@fqrn@", "tab\there", "é"]


def test_overrides_are_written_quoted_and_read_back_literally(tmp_path):
    overrides = {"V{}".format(number): value for number, value in enumerate(OVERRIDE_VALUES)}
    text = relocated(Files({ETC + "/default.conf": "V0=from_default\n"}), overrides=overrides)
    assert "\nV0=DIRECT\nV1='http://proxy.example.org:3128;DIRECT'\nV10=a=b\n" in text  # sorted by name
    settings = values(text, tmp_path)
    assert {name: settings[name] for name in overrides} == overrides
    assert bash_values(text, tmp_path, overrides) == overrides


def test_overrides_win_over_every_file(tmp_path):
    text = relocated(chain_files(), config_repository=CFG, overrides={"WHO": "-o"})
    assert values(text, tmp_path)["WHO"] == "-o"


@pytest.mark.parametrize("overrides, message", [
    ({"1X": "a"}, "-o '1X'=...: '1X' is not a variable name"),
    ({"X-Y": "a"}, "-o 'X-Y'=...: 'X-Y' is not a variable name"),
    ({"X": "a\nb"}, "-o X='a\\\\nb' must be text on one line"),
    ({"X": 3}, "-o X=3 must be text on one line"),
    ({"CVMFS_MOUNT_DIR": "/cvmfs"}, "-o CVMFS_MOUNT_DIR=/cvmfs contradicts where this pilot mounts "
                                    "\\(CVMFS_MOUNT_DIR=/pilot/cvmfs\\)"),
    ({"CVMFS_CONFIG_REPOSITORY": "other.example.org"}, "-o CVMFS_CONFIG_REPOSITORY=other.example.org contradicts"),
])
def test_bad_overrides_are_refused(overrides, message):
    with pytest.raises(RelocationError, match="^" + message):
        relocated(Files({ETC + "/default.conf": "A=1\n"}), config_repository=CFG, overrides=overrides)


def test_overrides_that_agree_with_the_pilot_are_accepted(tmp_path):
    overrides = {"CVMFS_MOUNT_DIR": MOUNT, "CVMFS_CONFIG_REPOSITORY": CFG}
    text = relocated(Files({ETC + "/default.conf": "A=1\n"}), config_repository=CFG, overrides=overrides)
    assert values(text, tmp_path)["CVMFS_MOUNT_DIR"] == MOUNT


def test_a_readonly_declaration_that_would_swallow_a_pilot_setting_is_refused():
    files = Files({ETC + "/default.conf": "readonly CVMFS_USER=cvmfs\n", ETC + "/default.local": "X=1\n"})
    relocated(files, overrides={"CVMFS_HTTP_PROXY": "DIRECT"})  # other names are fine
    with pytest.raises(RelocationError, match=r"^the pilot's setting CVMFS_USER=me would not take effect in the "
                                              r"relocated configuration: /pilot/dist/etc/cvmfs/default.conf:1 "
                                              r"declares it readonly; fix that file or drop the setting"):
        relocated(files, overrides={"CVMFS_USER": "me"})


def test_a_shell_block_left_open_is_refused_since_it_would_swallow_the_rest():
    files = Files({ETC + "/default.conf": "A=1\n", ETC + "/default.local": 'if [ "$A" = 1 ]; then\n  B=2\n'})
    with pytest.raises(RelocationError, match=r"CVMFS_HTTP_PROXY=DIRECT would not take effect .*"
                                              r"/pilot/dist/etc/cvmfs/default.local:1: the `if` block is never "
                                              r"closed"):
        relocated(files, overrides={"CVMFS_HTTP_PROXY": "DIRECT"})


# --- includes ----------------------------------------------------------------------------------------------------


def test_sourced_files_are_inlined_and_relocated(tmp_path):
    files = Files({
        ETC + "/default.conf": dedent("""
            A=before
            . /etc/cvmfs/common.conf
            source "../cvmfs/other.conf"  # relative to the including file
            A_AFTER=$A
            """),
        ETC + "/common.conf": "A=common\nKEYS=/etc/cvmfs/keys\n  . 'nested/deeper.conf' ;\n",
        ETC + "/nested/deeper.conf": "DEEPER=/cvmfs/x\n",
        ETC + "/other.conf": "OTHER=yes\n",
    })
    text = relocated(files)
    assert dedent("""
        # from /pilot/dist/etc/cvmfs/default.conf
        A=before
        # from /pilot/dist/etc/cvmfs/common.conf
        A=common
        KEYS=/pilot/dist/etc/cvmfs/keys
        # from /pilot/dist/etc/cvmfs/nested/deeper.conf
        DEEPER=/pilot/cvmfs/x
        # end of /pilot/dist/etc/cvmfs/nested/deeper.conf
        # end of /pilot/dist/etc/cvmfs/common.conf
        # from /pilot/dist/etc/cvmfs/other.conf
        OTHER=yes
        # end of /pilot/dist/etc/cvmfs/other.conf
        A_AFTER=$A
        """) in text
    settings = values(text, tmp_path)
    assert (settings["A_AFTER"], settings["DEEPER"], settings["OTHER"]) == ("common", "/pilot/cvmfs/x", "yes")


def test_includes_of_config_repository_files_are_read_from_the_mount(tmp_path):
    # as cvmfs-config repositories do: domain.d/<domain>.conf sources ../common.conf
    files = Files({ETC + "/default.conf": "A=1\n", CFG_ETC + "/domain.d/example.org.conf": ". ../common.conf\n",
                   CFG_ETC + "/common.conf": "CVMFS_USE_CDN=yes\n"})
    text = relocated(files, config_repository=CFG)
    assert "# from {}/common.conf\n".format(CFG_ETC) in text
    assert values(text, tmp_path)["CVMFS_USE_CDN"] == "yes"


def test_an_include_inside_a_block_stays_inside_it(tmp_path):
    files = Files({ETC + "/default.conf": 'if [ -n "$NEVER" ]; then\n  . ./x.conf\nfi\n', ETC + "/x.conf": "X=1\n"})
    text = relocated(files)
    assert "then\n# from /pilot/dist/etc/cvmfs/x.conf\nX=1\n# end of /pilot/dist/etc/cvmfs/x.conf\nfi\n" in text
    assert "X" not in bash_values(text, tmp_path, ["X"])["X"]


@pytest.mark.parametrize("files, message", [
    ({"default.conf": ". default.conf\n"},
     r"default.conf:1: sourcing /pilot/dist/etc/cvmfs/default.conf makes a cycle \(/pilot/dist/etc/cvmfs/"
     r"default.conf -> /pilot/dist/etc/cvmfs/default.conf\)"),
    ({"default.conf": "A=1\n. a.conf\n", "a.conf": "source /etc/cvmfs/b.conf\n", "b.conf": ". ./a.conf\n"},
     r"b.conf:1: sourcing /pilot/dist/etc/cvmfs/a.conf makes a cycle \(/pilot/dist/etc/cvmfs/a.conf -> "
     r"/pilot/dist/etc/cvmfs/b.conf -> /pilot/dist/etc/cvmfs/a.conf\); remove one of these includes"),
    ({"default.conf": "A=1\n. missing.conf\n"},
     r"^/pilot/dist/etc/cvmfs/default.conf:2 sources /pilot/dist/etc/cvmfs/missing.conf, which does not exist; "
     r"install it or remove the include from /pilot/dist/etc/cvmfs/default.conf$"),
    ({"default.conf": ". $CVMFS_MOUNT_DIR/x.conf\n"}, r"default.conf:1: cannot inline `. \$CVMFS_MOUNT_DIR/x.conf`: "
                                                      r"only `. FILE` or `source FILE` with one literal file name"),
    ({"default.conf": "source a.conf b\n"}, r"cannot inline `source a.conf b`"),
    ({"default.conf": ". *.conf\n"}, r"cannot inline `. \*.conf`"),
    ({"default.conf": ".\n"}, r"cannot inline `.`"),
    ({"default.conf": 'source "$(pwd)/a.conf"\n'}, r"cannot inline `source \"\$\(pwd\)/a.conf\"`"),
])
def test_includes_that_cannot_be_inlined_are_refused(files, message):
    with pytest.raises(RelocationError, match=message):
        relocated(Files((ETC + "/" + name, text) for name, text in files.items()))


def nested_includes(depth):
    """default.conf sourcing 1.conf sourcing 2.conf ... down to <depth>.conf, which sets X."""
    files = Files({ETC + "/default.conf": ". 1.conf\n"})
    for level in range(1, depth + 1):
        files["{}/{}.conf".format(ETC, level)] = ". {}.conf\n".format(level + 1) if level < depth else "X=1\n"
    return files


def test_includes_nest_up_to_eight_deep():
    assert "X=1\n# end of /pilot/dist/etc/cvmfs/8.conf\n" in relocated(nested_includes(8))
    with pytest.raises(RelocationError, match=r"^/pilot/dist/etc/cvmfs/8.conf:1: sourcing /pilot/dist/etc/cvmfs/"
                                              r"9.conf nests includes deeper than 8 \(/pilot/dist/etc/cvmfs/"
                                              r"default.conf -> .* -> /pilot/dist/etc/cvmfs/9.conf\); flatten them"):
        relocated(nested_includes(9))


def test_source_with_an_equals_sign_is_an_assignment(tmp_path):
    files = Files({ETC + "/default.conf": "source=/etc/cvmfs/x\nsourced=1\n"})
    settings = values(relocated(files), tmp_path)
    assert (settings["source"], settings["sourced"]) == ("/pilot/dist/etc/cvmfs/x", "1")


# --- reading files -----------------------------------------------------------------------------------------------


def test_read_config_file(tmp_path):
    path = write(tmp_path / "a.conf", "A=1\n")
    assert relocate.read_config_file(str(path)) == "A=1\n"
    assert relocate.read_config_file(str(tmp_path / "missing.conf")) is None
    assert relocate.read_config_file(str(path / "below-a-file.conf")) is None
    (tmp_path / "link.conf").symlink_to("a.conf")
    assert relocate.read_config_file(str(tmp_path / "link.conf")) == "A=1\n"  # links are followed
    (tmp_path / "dangling.conf").symlink_to("gone.conf")
    assert relocate.read_config_file(str(tmp_path / "dangling.conf")) is None


def test_directories_and_fifos_are_refused(tmp_path):
    (tmp_path / "dir.conf").mkdir()
    os.mkfifo(str(tmp_path / "fifo.conf"))  # must not block either
    for name in ("dir.conf", "fifo.conf"):
        with pytest.raises(RelocationError, match=r"the configuration file .*/{} is not a regular file".format(name)):
            relocate.read_config_file(str(tmp_path / name))


def test_a_file_that_cannot_be_opened_is_an_error(tmp_path):
    (tmp_path / "a.conf").symlink_to("b.conf")
    (tmp_path / "b.conf").symlink_to("a.conf")
    with pytest.raises(RelocationError, match="^cannot read the configuration file .*/a.conf: Too many levels of "
                                              "symbolic links; make it readable or remove it"):
        relocate.read_config_file(str(tmp_path / "a.conf"))


def test_a_distribution_on_disk(tmp_path):
    dist = tmp_path / "dist"
    write(dist / "etc/cvmfs/default.conf", "CVMFS_CACHE_BASE=/var/lib/cvmfs\n")
    write(dist / "etc/cvmfs/default.d/50-real.conf", "REAL=1\n")
    (dist / "etc/cvmfs/default.d/60-link.conf").symlink_to("50-real.conf")
    write(dist / "etc/cvmfs/default.d/70-not-conf.txt", "NOT=1\n")
    text = relocated_config(str(dist), FQRN, "/cvmfs")
    assert "# from {0}/etc/cvmfs/default.d/50-real.conf\nREAL=1\n# from {0}/etc/cvmfs/default.d/60-link.conf\n" \
           "REAL=1\n".format(dist) in text
    assert "NOT=1" not in text
    (dist / "etc/cvmfs/config.d/sw.example.org.conf").mkdir(parents=True)
    with pytest.raises(RelocationError, match="config.d/sw.example.org.conf is not a regular file"):
        relocated_config(str(dist), FQRN, "/cvmfs")


def test_bytes_that_are_not_utf8_pass_through_unchanged(tmp_path):
    dist = tmp_path / "dist"
    (dist / "etc/cvmfs").mkdir(parents=True)
    (dist / "etc/cvmfs/default.conf").write_bytes(b"# caf\xe9 in Latin-1\nA=/etc/cvmfs\n")
    out = tmp_path / "out.conf"
    relocate.write_relocated_config(str(out), relocated_config(str(dist), FQRN, "/cvmfs"))
    assert b"\n# caf\xe9 in Latin-1\nA=" + str(dist).encode() + b"/etc/cvmfs\n" in out.read_bytes()


# --- config_repository_of ----------------------------------------------------------------------------------------


def test_config_repository_of_takes_dist_json_first(tmp_path):
    write(tmp_path / "etc/cvmfs/default.d/60-cfg.conf", "CVMFS_CONFIG_REPOSITORY=from-files.example.org\n")
    assert config_repository_of(str(tmp_path), {"config_repository": CFG}) == CFG
    assert config_repository_of(str(tmp_path), {"config_repository": None}) is None  # the builder says: none
    with pytest.raises(RelocationError, match="dist.json's config_repository .* 'not a name' is not a fully"):
        config_repository_of(str(tmp_path), {"config_repository": "not a name"})


def test_config_repository_of_reads_default_conf_and_default_d(tmp_path):
    etc = tmp_path / "etc/cvmfs"
    assert config_repository_of(str(tmp_path), {}) is None  # no files at all
    write(etc / "default.conf", "CVMFS_CONFIG_REPOSITORY=first.example.org\n")
    assert config_repository_of(tmp_path, {"engine": "cvmfs2"}) == "first.example.org"
    write(etc / "default.d/50-a.conf", 'CVMFS_CONFIG_REPOSITORY="config-osg.opensciencegrid.org"  # quoted\n')
    write(etc / "default.d/10-b.conf", "CVMFS_CONFIG_REPOSITORY=earlier.example.org\n")
    write(etc / "default.local", "CVMFS_CONFIG_REPOSITORY=local.example.org\n")  # too late to count
    assert config_repository_of(str(tmp_path), {}) == "config-osg.opensciencegrid.org"
    write(etc / "default.d/90-none.conf", "CVMFS_CONFIG_REPOSITORY=\n")
    assert config_repository_of(str(tmp_path), {}) is None
    write(etc / "default.d/90-none.conf", "CVMFS_CONFIG_REPOSITORY=bad_name\n")
    with pytest.raises(RelocationError, match=r"CVMFS_CONFIG_REPOSITORY \(set at .*/90-none.conf:1\) 'bad_name' is "
                                              r"not a fully qualified repository name"):
        config_repository_of(str(tmp_path), {})


def test_config_repository_of_refuses_a_fifo(tmp_path):
    (tmp_path / "etc/cvmfs").mkdir(parents=True)
    os.mkfifo(str(tmp_path / "etc/cvmfs/default.conf"))
    with pytest.raises(RelocationError, match="is not a regular file"):
        config_repository_of(str(tmp_path), {})


# --- writing -----------------------------------------------------------------------------------------------------


def test_write_relocated_config_replaces_atomically_with_mode_0600(tmp_path):
    path = tmp_path / "sw.example.org.conf"
    path.write_text("old\n")
    path.chmod(0o644)
    relocate.write_relocated_config(str(path), "A=1\n")
    assert path.read_text() == "A=1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(str(tmp_path)) == ["sw.example.org.conf"]


def test_write_relocated_config_leaves_nothing_behind_on_failure(tmp_path):
    (tmp_path / "target.conf").mkdir()  # os.replace cannot put a file there
    with pytest.raises(OSError):
        relocate.write_relocated_config(str(tmp_path / "target.conf"), "A=1\n")
    assert os.listdir(str(tmp_path)) == ["target.conf"]


# --- the whole thing, read back ----------------------------------------------------------------------------------


@pytest.fixture
def osg_like(tmp_path):
    """A distribution as makedist's with a config repository mounted below <work>/cvmfs, as on a real node."""
    dist, mount = tmp_path / "dist", tmp_path / "work" / "cvmfs"
    etc, cfg = dist / "etc/cvmfs", mount / CFG / "etc/cvmfs"
    write(etc / "default.conf", """
        # Don't edit here.  Create /etc/cvmfs/default.local.
        CVMFS_CACHE_BASE=/var/lib/cvmfs
        CVMFS_RELOAD_SOCKETS=/var/run/cvmfs
        CVMFS_QUOTA_LIMIT=4000
        CVMFS_MOUNT_DIR=/cvmfs
        CVMFS_KEYS_DIR=/etc/cvmfs/keys
        CVMFS_SHARED_CACHE=yes
        readonly CVMFS_USER=cvmfs
        """)
    write(etc / "default.d/60-osg.conf", "CVMFS_CONFIG_REPOSITORY={}\n".format(CFG))
    write(etc / "default.local", """
        CVMFS_HTTP_PROXY="auto;DIRECT"
        CVMFS_PAC_URLS="http://grid-wpad/wpad.dat;http://wpad/wpad.dat"
        CVMFS_CACHE_BASE={0}/var/lib/cvmfs
        """.format(dist))
    write(cfg / "default.conf", 'CVMFS_CONFIG_REPO_DEFAULT_ENV=1\n')
    write(cfg / "common.conf", """
        if [ "$CVMFS_USE_CDN" = "yes" ]; then
          CVMFS_SERVER_URL="http://cdn.example.org/cvmfs/@fqrn@"
        fi
        """)
    write(cfg / "domain.d/example.org.conf", """
        CVMFS_USE_CDN="$CVMFS_USE_CDN"
        . ../common.conf
        CVMFS_KEYS_DIR=$CVMFS_MOUNT_DIR/$CVMFS_CONFIG_REPOSITORY/etc/cvmfs/keys/example.org
        """)
    write(cfg / "config.d/sw.example.org.conf", """
        CVMFS_SERVER_URL="http://s1.example.org:8000/cvmfs/@fqrn@;http://s2.example.org/cvmfs/@fqrn@"
        CVMFS_PUBLIC_KEY=/cvmfs/{}/etc/cvmfs/keys/example.org/sw.pub:/etc/cvmfs/keys/extra.pub
        """.format(CFG))
    text = relocated_config(str(dist), FQRN, str(mount), config_repository_of(str(dist), {}),
                            {"CVMFS_QUOTA_LIMIT": "2000", "CVMFS_HTTP_PROXY": "http://squid:3128;DIRECT"},
                            str(tmp_path / "log" / "sw.example.org.log"), 65536)
    return dist, mount, text


EXPECTED_NAMES = ["CVMFS_CACHE_BASE", "CVMFS_RELOAD_SOCKETS", "CVMFS_QUOTA_LIMIT", "CVMFS_MOUNT_DIR",
                  "CVMFS_KEYS_DIR", "CVMFS_CONFIG_REPOSITORY", "CVMFS_HTTP_PROXY", "CVMFS_SERVER_URL",
                  "CVMFS_PUBLIC_KEY", "CVMFS_NFILES", "CVMFS_USYSLOG", "CVMFS_USER", "CVMFS_CONFIG_REPO_DEFAULT_ENV"]


def expected_values(dist, mount, tmp_path):
    return {
        "CVMFS_CACHE_BASE": "{}/var/lib/cvmfs".format(dist),
        "CVMFS_RELOAD_SOCKETS": "{}/var/run/cvmfs".format(dist),
        "CVMFS_QUOTA_LIMIT": "2000",
        "CVMFS_MOUNT_DIR": str(mount),
        "CVMFS_KEYS_DIR": "{}/{}/etc/cvmfs/keys/example.org".format(mount, CFG),
        "CVMFS_CONFIG_REPOSITORY": CFG,
        "CVMFS_HTTP_PROXY": "http://squid:3128;DIRECT",
        "CVMFS_SERVER_URL": "http://s1.example.org:8000/cvmfs/@fqrn@;http://s2.example.org/cvmfs/@fqrn@",
        "CVMFS_PUBLIC_KEY": "{}/{}/etc/cvmfs/keys/example.org/sw.pub:{}/etc/cvmfs/keys/extra.pub".format(
            mount, CFG, dist),
        "CVMFS_NFILES": "65536",
        "CVMFS_USYSLOG": str(tmp_path / "log" / "sw.example.org.log"),
        "CVMFS_USER": "cvmfs",
        "CVMFS_CONFIG_REPO_DEFAULT_ENV": "1",
    }


def test_the_project_shell_reader_reads_the_relocated_configuration(osg_like, tmp_path):
    dist, mount, text = osg_like
    variables = shell_reader(text, tmp_path)
    settings = {name: setting.value for name, setting in variables.settings.items()}
    assert {name: settings[name] for name in EXPECTED_NAMES} == expected_values(dist, mount, tmp_path)
    assert "CVMFS_USE_CDN" in settings  # from the inlined ../common.conf's includer
    assert [w for w in variables.warnings if "if" not in w] == []  # only the config repository's `if` block


def test_bash_reads_the_relocated_configuration_alike(osg_like, tmp_path):
    dist, mount, text = osg_like
    assert bash_values(text, tmp_path, EXPECTED_NAMES) == expected_values(dist, mount, tmp_path)


def test_nothing_of_the_system_installation_is_left(osg_like):
    dist, mount, text = osg_like
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    for system_path in ("=/var/lib/cvmfs", "=/var/run/cvmfs", "=/etc/cvmfs", "=/cvmfs", ":/etc/cvmfs"):
        assert not [line for line in lines if system_path in line], system_path
