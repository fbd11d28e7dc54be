#!/bin/sh
# cvmfs-pilot glidein bootstrap: the batch job itself (POSIX sh). See docs/glidein.md.
#
#   glidein_startup.sh -factory URL[,URL...] -factory-sha256 HEX -entry NAME
#                      [-frontend URL[,URL...] -frontend-sha256 HEX] [-id ID] [-work-dir DIR]
#                      [-credential FILE] [-report FILE] [-debug]
#
# Makes a private work directory, finds python3 >= 3.6, and with it downloads the factory's index (refused unless
# its SHA-256 is HEX) and the pilot runtime it names (refused unless its SHA-256 and size are the index's), then
# execs the runtime. Nothing is run before it is verified.
# Exit codes: 10 node/site problem (no python3, no staging area reachable), 11 configuration (bad arguments, a
# hash mismatch).

EXIT_SITE=10
EXIT_CONFIG=11

say() { printf '%s glidein_startup: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

work_base=
report=
pilot_id=
debug=
previous=
for argument in "$@"; do
    case $previous in
        -work-dir) work_base=$argument ;;
        -report) report=$argument ;;
        -id) pilot_id=$argument ;;
    esac
    case $argument in -debug) debug=1 ;; esac
    previous=$argument
done

fail() {  # fail EXIT_CODE CLASS MESSAGE: report (if asked) and exit; the work directory goes unless -debug
    say "$3"
    if [ -n "$report" ]; then
        reason=$(printf '%s' "$3" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr -d '\000-\037')
        printf '{"format": 1, "pilot": "%s", "outcome": "failed", "failure_class": "%s", "reason": "%s", "exit_code": %s, "steps": [{"name": "bootstrap", "result": "failed", "detail": "%s"}]}\n' \
            "$pilot_id" "$2" "$reason" "$1" "$reason" > "$report" 2>/dev/null || true
    fi
    if [ -n "$work_dir" ] && [ -z "$debug" ]; then rm -rf "$work_dir"; fi
    exit "$1"
}

work_dir=
base=${work_base:-${_CONDOR_SCRATCH_DIR:-${TMPDIR:-/tmp}}}
mkdir -p "$base" 2>/dev/null
work_dir=$(mktemp -d "$base/glidein_XXXXXXXX" 2>/dev/null) || fail $EXIT_SITE site "cannot create a work directory below $base"
chmod 700 "$work_dir"

# python3 >= 3.6: $CVMFS_PILOT_PYTHON, python3 in PATH, then the usual system places
python=
for candidate in "${CVMFS_PILOT_PYTHON:-}" python3 /usr/bin/python3 /usr/libexec/platform-python /usr/local/bin/python3; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 6))' >/dev/null 2>&1; then
        python=$candidate
        break
    fi
done
[ -n "$python" ] || fail $EXIT_SITE site "no python3 >= 3.6 on this node (tried \$CVMFS_PILOT_PYTHON, python3 in PATH, /usr/bin/python3, /usr/libexec/platform-python); install one or set CVMFS_PILOT_PYTHON"

# Download and verify the index and the runtime: a standard-library program, given the arguments.
runtime=$("$python" -I - "$work_dir" "$@" 2>"$work_dir/bootstrap.err" <<'PYTHON'
import hashlib, json, os, sys, time, urllib.request

work_dir, args = sys.argv[1], sys.argv[2:]
def option(name):
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None
def refuse(code, message):
    sys.stderr.write(message + "\n")
    sys.exit(code)
urls, expected = option("-factory"), option("-factory-sha256")
if not urls or not expected or len(expected) != 64:
    refuse(11, "give -factory URL[,URL...] and -factory-sha256 HEX (64 hex digits)")
mirrors = [u if u.endswith("/") else u + "/" for u in urls.split(",") if u.strip()]
def fetch(relative, limit, attempts=3):
    reasons = []
    for attempt in range(attempts):
        for base in mirrors:
            try:
                with urllib.request.urlopen(base + relative, timeout=60) as response:
                    data = response.read(limit + 1)
                if len(data) > limit:
                    raise ValueError("larger than {} bytes".format(limit))
                return data
            except Exception as exc:
                reasons.append("{}{}: {}".format(base, relative, exc))
        if attempt + 1 < attempts:
            time.sleep(attempt + 1)
    refuse(10, "cannot download {}: {}".format(relative, "; ".join(reasons[-len(mirrors):])))
index = fetch("index.json", 16 << 20)
if hashlib.sha256(index).hexdigest() != expected:
    try:  # the index may have changed since this pilot was submitted: its version is kept under its hash
        index = fetch("indexes/{}.json".format(expected), 16 << 20, attempts=1)
    except SystemExit:
        index = b""
    if hashlib.sha256(index).hexdigest() != expected:
        refuse(11, "the factory index does not have the SHA-256 {} given to this pilot, and no index with that "
                   "hash is kept: refused".format(expected))
description = json.loads(index.decode("utf-8"))
name = description.get("runtime")
listed = description.get("files", {}).get(name) if isinstance(name, str) else None
if not listed or "/" in name or name.startswith("."):
    refuse(11, "the factory index names no runtime with a hash")
data = fetch("files/" + name, int(listed["size"]))
if len(data) != listed["size"] or hashlib.sha256(data).hexdigest() != listed["sha256"]:
    refuse(11, "files/{} does not have the size and SHA-256 of the index: refused".format(name))
with open(os.path.join(work_dir, "factory-index.json"), "wb") as out:
    out.write(index)
path = os.path.join(work_dir, name)
with open(path, "wb") as out:
    out.write(data)
print(path)
PYTHON
)
status=$?
why=$(tail -n 1 "$work_dir/bootstrap.err" 2>/dev/null)
case $status in
    0) ;;
    10) fail $EXIT_SITE site "the pilot runtime could not be downloaded: ${why:-no message}" ;;
    *) fail $EXIT_CONFIG config "the pilot runtime was refused: ${why:-no message}" ;;
esac

exec "$python" "$runtime" glidein run -runtime-work-dir "$work_dir" "$@"
