"""The factory's test helpers: a factory directory (factory.toml and its scripts), a stand-in bootstrap, polling.

The stand-in replaces ``glidein_startup.sh`` for tests of the submission mechanics only (real pilots run in the
end-to-end tests): it records its arguments in ``args`` (one a line, in its working directory) and then does what
``$FAKE_PILOT`` says: ``finish`` (write a success report), ``wait`` (until a file ``go`` appears, then report),
``crash`` (exit 3, no report), ``group`` (start a ``sleep`` child, its pid in ``child``, and wait for it),
``stubborn`` (the same, ignoring SIGTERM).
"""

import time
from pathlib import Path

from cvmfs_pilot.client.cache_db import process_start_time

FAKE_PILOT = r"""#!/bin/sh
report=
previous=
for argument in "$@"; do
    [ "$previous" = -report ] && report=$argument
    previous=$argument
done
printf '%s\n' "$@" > args
write_report() {
    printf '{"format": 1, "outcome": "success", "failure_class": null, "reason": null, "exit_code": 0, "duration": 1.5}\n' > "$report"
}
case "${FAKE_PILOT:-finish}" in
    finish) write_report ;;
    wait) while [ ! -e go ]; do sleep 0.1; done; write_report ;;
    crash) exit 3 ;;
    group) sleep 300 & echo $! > child; wait ;;
    stubborn) trap '' TERM; sleep 300 & echo $! > child; while :; do sleep 1; done ;;
esac
"""

BASE_TOML = """\
[factory]
name = "test-factory"
work_dir = "work"
staging_urls = ["http://127.0.0.1:8080/"]

[factory.attributes]
GLIDEIN_CVMFS = "preferred"

[[factory.files]]
path = "scripts/check_disk.sh"
list = "file_list"
type = "exec"

[factory.payload]
commands = [["sh", "-c", "echo hello"]]

[entries.local-test]
provider = "local"
lifetime = {max_walltime = 3600, retire = 3000, grace = 30}
provider_options = {kill_after = 2}

[entries.local-test.attributes]
GLIDEIN_CVMFS_REPOS = "demo.example.org"

[[entries.local-test.files]]
path = "scripts/entry_check.sh"
type = "exec"
"""

SCRIPTS = {"scripts/check_disk.sh": "#!/bin/sh\necho disk ok\n",
           "scripts/entry_check.sh": "#!/bin/sh\necho entry ok\n"}


def write_factory(directory, toml=BASE_TOML, files=None):
    """Write factory.toml and the scripts it names (plus files: {relative path: text}) into directory; its path."""
    directory = Path(directory)
    for relative, text in {**SCRIPTS, **(files or {})}.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    config = directory / "factory.toml"
    config.write_text(toml)
    return config


def wait_for(condition, timeout=30, what="the condition"):
    """Poll condition() until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("{} did not hold within {} s".format(what, timeout))
        time.sleep(0.1)


def process_alive(pid):
    """Whether pid is a live process (not a zombie)."""
    return process_start_time(pid) is not None
