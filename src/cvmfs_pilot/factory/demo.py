"""``cvmfs-pilot demo``: the whole system on this machine, end to end.

Publishes a demo repository and a config repository, serves them (with the staging areas) on loopback, builds
the python-engine client distribution, writes and stages a factory, submits local pilots as an unprivileged
user whose jobs read ``/cvmfs/demo.cvmfs-pilot.org`` and run a program from it, then prints a timeline and the
reports, and removes everything. Run as root, it first makes /dev/fuse usable by users and creates the
unprivileged user, and says so.
"""

import argparse
import calendar
import io
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from cvmfs_pilot.dist import cli as dist_cli
from cvmfs_pilot.publish import cli as repo_cli
from cvmfs_pilot.publish.serve import make_server

DEMO_REPO = "demo.cvmfs-pilot.org"
CONFIG_REPO = "config.cvmfs-pilot.org"
DEMO_USER = "cvmfspilot"
ENTRY = "demo-local"
TIMEOUT = 300

DEMO_FILES = {
    "README": "This file comes from the CernVM-FS repository {} through a cvmfs-pilot glidein.\n".format(DEMO_REPO),
    "bin/hello": "#!/bin/sh\necho \"hello from $0, run by uid $(id -u) on $(hostname), in $(pwd)\"\n",
    "lib/python/demo_module.py": "GREETING = 'imported from /cvmfs'\n",
}
CHECK_SCRIPT = """#!/bin/bash
# A validation script in GlideinWMS's conventions: helpers found through glidein_config.
glidein_config="$1"
add_config_line_source=$(grep -m1 '^ADD_CONFIG_LINE_SOURCE ' "$glidein_config" | cut -d ' ' -f 2-)
source "$add_config_line_source"
error_gen=$(gconfig_get ERROR_GEN_PATH "$glidein_config")
free_mb=$(df -Pm "$(gconfig_get GLIDEIN_WORK_DIR)" | awk 'NR == 2 {print $4}')
if [ "$free_mb" -lt "$(gconfig_get DEMO_MIN_FREE_MB)" ]; then
    "$error_gen" -error "check_disk.sh" "WN_Resource" "only $free_mb MB free" "free_mb" "$free_mb"
    exit 1
fi
gconfig_add DEMO_FREE_MB "$free_mb"
"$error_gen" -ok "check_disk.sh" "free_mb" "$free_mb"
"""


def say(text):
    print(text, flush=True)


def _prepare_machine(user_name):
    """As root: /dev/fuse usable by users, and the unprivileged user. Returns the user's pwd entry, or None to
    run as the caller."""
    if os.geteuid() != 0:
        say("running as {}, without changing the machine".format(pwd.getpwuid(os.getuid()).pw_name))
        return None
    mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    if mode & 0o006 != 0o006:
        os.chmod("/dev/fuse", 0o666)
        say("made /dev/fuse mode 0666 (it was {:04o}): worker nodes have it so, and an unprivileged pilot "
            "cannot mount without it".format(mode))
    _let_others_traverse([os.path.dirname(os.path.dirname(os.path.abspath(__file__))), sys.prefix])
    try:
        user = pwd.getpwnam(user_name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", user_name], check=True)
        user = pwd.getpwnam(user_name)
        say("created the unprivileged user {} (uid {}): the pilots run as it".format(user_name, user.pw_uid))
    else:
        say("the pilots run as the unprivileged user {} (uid {})".format(user_name, user.pw_uid))
    return user


def _let_others_traverse(paths):
    """The unprivileged user runs this installation's code: let others traverse the directories above it."""
    for path in paths:
        directory = os.path.abspath(path)
        while directory != "/":
            mode = stat.S_IMODE(os.stat(directory).st_mode)
            if not mode & 0o001:
                os.chmod(directory, mode | 0o001)
                say("allowed others to traverse {}: the pilots' user runs the code below it".format(directory))
            directory = os.path.dirname(directory)


def _as_user(user, command, **kwargs):
    if user is not None:
        kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        env = dict(kwargs.pop("env", os.environ), HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
        kwargs["env"] = env
    return subprocess.run(command, **kwargs)


def _chown_tree(path, user):
    if user is None:
        return
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            os.lchown(name, user.pw_uid, user.pw_gid)


def _write_tree(root, files):
    for name, text in files.items():
        path = Path(root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if name.startswith("bin/"):
            path.chmod(0o755)


def _keys_tarball(keys_dir, target):
    """The repositories' public keys as a tarball the pilots unpack (a staged 'untar' file)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for fqrn in (DEMO_REPO, CONFIG_REPO):
            tar.add(str(Path(keys_dir) / (fqrn + ".pub")), arcname=fqrn + ".pub")
    Path(target).write_bytes(data.getvalue())


def _factory_toml(work, base_url, dist_dir, payload=None, config_repository=True):
    attributes = {
        "GLIDEIN_CVMFS": "required", "GLIDEIN_CVMFS_REPOS": DEMO_REPO, "CVMFS_SRC": "none",
        "CVMFS_CLIENT_HTTP_PROXY": "DIRECT", "CVMFS_CLIENT_SERVER_URL": base_url + "cvmfs/@fqrn@",
        "CVMFS_CLIENT_CONFIG_REPOSITORY": CONFIG_REPO, "DEMO_MIN_FREE_MB": "100"}
    if not config_repository:
        del attributes["CVMFS_CLIENT_CONFIG_REPOSITORY"]
    if payload is None:
        payload = [["cat", "/cvmfs/{}/README".format(DEMO_REPO)], ["/cvmfs/{}/bin/hello".format(DEMO_REPO)],
                   ["python3", "-c", "import sys; sys.path.insert(0, '/cvmfs/{}/lib/python'); import demo_module; "
                                     "print(demo_module.GREETING)".format(DEMO_REPO)]]
    lines = ["[factory]", 'name = "demo-factory"', "work_dir = {}".format(json.dumps(str(work / "factory"))),
             "staging_urls = {}".format(json.dumps([base_url + "staging/"])),
             "staging_dir = {}".format(json.dumps(str(work / "srv" / "staging"))), "",
             "[factory.attributes]"] + ["{} = {}".format(k, json.dumps(v)) for k, v in attributes.items()]
    lines += ["", "[[factory.files]]", 'path = "check_disk.sh"', 'list = "file_list"', 'type = "exec"',
              "", "[[factory.files]]", 'path = "cvmfs-keys.tar.gz"', 'list = "precvmfs_file_list"',
              'type = "untar"', 'config_out = "CVMFS_CLIENT_KEYS_DIR"',
              "", "[cvmfs]", "dist_staging_dir = {}".format(json.dumps(str(dist_dir))),
              "dist_staging_urls = {}".format(json.dumps([base_url + "dists/"])),
              "", "[entries.{}]".format(ENTRY), 'provider = "local"',
              "lifetime = {max_walltime = 600, retire = 500, grace = 10}",
              "", "[entries.{}.payload]".format(ENTRY), "commands = {}".format(json.dumps(payload))]
    return "\n".join(lines) + "\n"


def _cli(user, *args, check=True):
    result = _as_user(user, [sys.executable, "-m", "cvmfs_pilot"] + list(args), stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT, universal_newlines=True, timeout=TIMEOUT)
    if check and result.returncode != 0:
        raise RuntimeError("cvmfs-pilot {} failed:\n{}".format(" ".join(args), result.stdout))
    return result.stdout


def _seconds(stamp):
    """Epoch seconds of a report's UTC timestamp (2026-11-26T17:27:56.123Z)."""
    whole = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    return whole + (float("0." + stamp[20:23]) if len(stamp) > 20 else 0.0)


def _timeline(reports):
    if not reports:
        return
    start = min(_seconds(r["started"]) for r in reports)
    for report in reports:
        say("pilot {} ({}, {}: {}):".format(report["pilot"], report["outcome"], report.get("cvmfs", {}) and
                                            "cvmfs {mode}, engine {engine}".format(**report["cvmfs"]),
                                            "exit {}".format(report["exit_code"])))
        for step in report["steps"]:
            began = _seconds(step["started"]) - start
            say("  +{:6.3f} s {:>7.3f} s  {:<8} {}".format(began, step["duration"], step["result"], step["name"]))
        for command in report["payload"]:
            say("  job {!r} printed: {}".format(" ".join(command["command"])[:60],
                                                command["stdout_tail"].strip().replace("\n", " | ")))


def publish_repositories(work):
    """Step 2: the demo repository and the config repository published below work/srv/cvmfs, their keys in
    work/keys. Returns (srv, keys)."""
    srv = work / "srv"
    keys = work / "keys"
    _write_tree(work / "src" / DEMO_REPO, DEMO_FILES)
    _write_tree(work / "src" / CONFIG_REPO, {
        "etc/cvmfs/config.d/{}.conf".format(DEMO_REPO): "# set by the config repository\nCVMFS_NFILES=65536\n"})
    for fqrn in (DEMO_REPO, CONFIG_REPO):
        for command in (["keys", fqrn, "--out", str(keys)],
                        ["publish", str(work / "src" / fqrn), str(srv / "cvmfs" / fqrn), "--name", fqrn,
                         "--keys", str(keys)]):
            if repo_cli.main(command, "cvmfs-pilot repo"):
                raise RuntimeError("cvmfs-pilot repo {} failed".format(command[0]))
    return srv, keys


def serve(srv):
    """Step 3: srv served on loopback by a thread of this process. Returns (server, base URL); the caller shuts
    the server down."""
    server = make_server(str(srv), 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, "http://127.0.0.1:{}/".format(server.server_address[1])


def build_distribution(dist_dir):
    """Step 4: the python-engine client distribution's staging area in dist_dir."""
    code = dist_cli.main(["build", "--staging", str(dist_dir), "--sources", "none", "--platforms", "none"],
                         "cvmfs-pilot dist")
    if code:
        raise RuntimeError("the distribution build failed")


def write_factory(work, user, base_url, keys, srv, payload=None, config_repository=True):
    """Step 5's files: work/factory with factory.toml (entry ENTRY, local provider), check_disk.sh and the keys
    tarball, and the empty staging directory srv/staging, given to user. Returns factory.toml's path (not staged
    yet). payload: the entry's commands (default: the demo's jobs); config_repository: whether the pilots mount
    the config repository too."""
    factory = work / "factory"
    factory.mkdir()
    (factory / "check_disk.sh").write_text(CHECK_SCRIPT)
    (factory / "check_disk.sh").chmod(0o755)
    _keys_tarball(keys, factory / "cvmfs-keys.tar.gz")
    (factory / "factory.toml").write_text(_factory_toml(work, base_url, srv / "dists", payload, config_repository))
    (srv / "staging").mkdir()
    _chown_tree(str(factory), user)
    _chown_tree(str(srv / "staging"), user)
    return str(factory / "factory.toml")


def run(pilots=2, keep=False, user_name=DEMO_USER):
    say("== 1. this machine")
    user = _prepare_machine(user_name)
    work = Path(tempfile.mkdtemp(prefix="cvmfs-pilot-demo-", dir="/tmp"))
    os.chmod(str(work), 0o755)
    server = None
    try:
        say("== 2. publish {} and the config repository {}".format(DEMO_REPO, CONFIG_REPO))
        srv, keys = publish_repositories(work)
        say("== 3. serve {} on loopback".format(srv))
        server, base_url = serve(srv)
        say("serving at {}".format(base_url))
        say("== 4. build the python-engine client distribution")
        build_distribution(srv / "dists")
        say("== 5. the factory: stage its files, submit {} local pilots as {}".format(
            pilots, user.pw_name if user else "this user"))
        config = write_factory(work, user, base_url, keys, srv)
        say(_cli(user, "factory", "stage", "--config", config).strip())
        say(_cli(user, "submit", "--config", config, "--entry", ENTRY, "--count", str(pilots)).strip())
        say("== 6. wait for the pilots")
        deadline = time.time() + TIMEOUT
        while True:
            states = json.loads(_cli(user, "status", "--config", config, "--json"))
            if all(s.get("state") not in ("running", "submitted", "pending") for s in states):
                break
            if time.time() > deadline:
                raise RuntimeError("the pilots did not finish within {} s".format(TIMEOUT))
            time.sleep(0.5)
        say(_cli(user, "status", "--config", config).strip())
        say("== 7. timeline and reports")
        reports = []
        for pilot in states:
            path = Path(pilot["directory"]) / "report.json"
            if path.exists():
                reports.append(json.loads(path.read_text()))
        _timeline(reports)
        failed = [s for s in states if s.get("outcome") != "success"]
        say("== {}: {} of {} pilots gave their jobs /cvmfs/{}".format(
            "done" if not failed else "FAILED", len(states) - len(failed), len(states), DEMO_REPO))
        return 0 if not failed and len(states) == pilots else 1
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if keep:
            say("kept {}".format(work))
        else:
            shutil.rmtree(str(work), ignore_errors=True)
            say("removed {}".format(work))


def main(argv, prog="cvmfs-pilot demo"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pilots", type=int, default=2, help="how many pilots to submit (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the demo's directory")
    parser.add_argument("--user", default=DEMO_USER, help="the unprivileged user, when run as root (default "
                                                          "%(default)s)")
    args = parser.parse_args(argv)
    try:
        return run(args.pilots, args.keep, args.user)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        sys.stderr.write("{}: {}\n".format(prog, exc))
        return 1
