#!/usr/bin/env bash
# A tour of the individual commands (the main job is scripts/demo.sh): set everything up on a fresh Debian 12
# machine (as root), then publish a demo repository
# (the Python standard library of this machine), serve it over HTTP on loopback, check it, read it with the
# pure-Python client, mount it with our FUSE server and import Python modules from the mount, then run a job as
# an unprivileged user with /cvmfs/<repo> mounted for it (node exec) on this host that has no /cvmfs.
# Everything it creates lives in one temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
pilot=.venv/bin/cvmfs-pilot
fqrn=demo.cvmfs-pilot.org
source_tree="$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
work="$(mktemp -d /tmp/cvmfs-pilot-demo.XXXXXX)"
server=""
cleanup() {
    [ -d "$work/mnt" ] && $pilot fs umount "$work/mnt" >/dev/null 2>&1 || true
    [ -z "$server" ] || kill "$server" 2>/dev/null || true
    [ -z "$server" ] || wait "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== 1. keys for $fqrn"
$pilot repo keys "$fqrn" --out "$work/keys"
echo "== 2. publish $source_tree as $fqrn (twice: the second run is incremental)"
$pilot repo publish "$source_tree" "$work/srv/cvmfs/$fqrn" --name "$fqrn" --keys "$work/keys"
$pilot repo publish "$source_tree" "$work/srv/cvmfs/$fqrn" --name "$fqrn" --keys "$work/keys"
echo "== 3. serve $work/srv on loopback"
$pilot repo serve "$work/srv" --port 0 > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do grep -q "^serving" "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
base="$(sed -n 's/^serving .* at \(http:[^ ]*\) .*/\1/p' "$work/serve.log")"
echo "serving at ${base}cvmfs/$fqrn"
echo "== 4. the signed manifest, over HTTP"
.venv/bin/python - "$base" "$fqrn" "$work/keys/$fqrn.pub" <<'PY'
import sys, urllib.request, zlib
from cvmfs_pilot.cvmfs.hashing import SUFFIX_CERTIFICATE, ContentHash
from cvmfs_pilot.cvmfs.manifest import Manifest
from cvmfs_pilot.cvmfs.signature import Certificate, load_public_keys, verify_manifest, verify_whitelist
base, fqrn, pub = sys.argv[1] + "cvmfs/" + sys.argv[2], sys.argv[2], sys.argv[3]
get = lambda path: urllib.request.urlopen(base + "/" + path, timeout=10).read()
raw = get(".cvmfspublished")
manifest = Manifest.parse(raw, expected_fqrn=fqrn)
stored = get(manifest.certificate.object_path(SUFFIX_CERTIFICATE))
assert ContentHash.of(stored, manifest.certificate.algorithm) == manifest.certificate
verify_manifest(raw, Certificate.from_pem(zlib.decompress(stored)))
with open(pub, "rb") as f:
    verify_whitelist(get(".cvmfswhitelist"), load_public_keys(f.read()))
print("revision {} of {}, root catalog {}: manifest and whitelist signatures verified".format(
    manifest.revision, fqrn, manifest.root_catalog.hex()))
PY
echo "== 5. full integrity check of the storage"
$pilot repo check "$work/srv/cvmfs/$fqrn" --name "$fqrn" --pubkey "$work/keys/$fqrn.pub"
echo "== 6. the pure-Python client: a configuration like /etc/cvmfs, pointing at the demo server"
mkdir -p "$work/etc/config.d" "$work/etc/keys"
cp "$work/keys/$fqrn.pub" "$work/etc/keys/"
printf 'CVMFS_HTTP_PROXY=DIRECT\nCVMFS_CACHE_BASE=%s/cache\n' "$work" > "$work/etc/default.local"
printf 'CVMFS_SERVER_URL="%scvmfs/@fqrn@"\n' "$base" > "$work/etc/config.d/$fqrn.conf"
$pilot fs info "$fqrn" --config-dir "$work/etc"
echo "== 7. mount it with our FUSE server and import modules from the mount"
mkdir "$work/mnt"
$pilot fs mount --config-dir "$work/etc" "$fqrn" "$work/mnt"
grep " $work/mnt " /proc/mounts
/usr/bin/python3 -S -c "import sys; sys.path[:0] = ['$work/mnt']; import json, email.parser, http.client; print('imported', json.__file__)"
getfattr -n user.revision "$work/mnt" 2>/dev/null | grep revision || true
$pilot fs umount "$work/mnt"
echo "== 8. a job with /cvmfs/$fqrn, run by an unprivileged user on this host that has no /cvmfs (node exec)"
bash scripts/setup-tests.sh >/dev/null  # the unprivileged user cvmfspilot, /dev/fuse usable by users
chmod 755 "$work"
mkdir -p "$work/pilot" "$work/pilot-cache"
chown cvmfspilot: "$work/pilot" "$work/pilot-cache"
runuser -u cvmfspilot -- "$pilot" node exec --work-dir "$work/pilot" --config-dir "$work/etc" \
    -o CVMFS_CACHE_BASE="$work/pilot-cache" --repos "$fqrn" -v -- \
    /usr/bin/python3 -S -c "import os, sys; sys.path[:0] = ['/cvmfs/$fqrn']; import json; print('the job (uid', os.getuid(), 'in a private namespace) imported', json.__file__)"
test ! -e /cvmfs && echo "the host still has no /cvmfs, and nothing of the pilot is left in $work/pilot: $(ls -A "$work/pilot")"
echo "== done; removing $work"
