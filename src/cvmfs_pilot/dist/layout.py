"""The files the builder writes into a distribution tree beside the unpacked packages.

* ``etc/cvmfs/default.local``: what makedist writes (CVMFS_HTTP_PROXY, the source's CVMFS_PAC_URLS), plus the
  cache and socket directories inside the distribution, spelled with ROOT_PLACEHOLDER, which the node layer
  replaces with the directory it unpacked the distribution to;
* ``etc/os-release`` (cvmfs2 engine): only ID_LIKE and VERSION_ID, for config-repository files that read it,
  as makedist writes it;
* the authz helper wrappers (cvmfs2 engine, when a helper is installed): each ``usr/libexec/cvmfs/authz/NAME``
  becomes ``.NAME`` plus a symlink ``NAME -> .wrapper``, a script that runs ``.NAME`` with the distribution's
  libraries first on LD_LIBRARY_PATH, as makedist arranges it.
"""

import os

CONFIG_DIR = "etc/cvmfs"
ROOT_PLACEHOLDER = "@DIST_ROOT@"
AUTHZ_DIR = "usr/libexec/cvmfs/authz"
WRAPPER = ".wrapper"

DEFAULT_LOCAL = """\
# Written by cvmfs-pilot dist build for the {source} source. {placeholder} stands for the directory this
# distribution is unpacked to; the node layer replaces it before use.
CVMFS_HTTP_PROXY="auto;DIRECT"
CVMFS_PAC_URLS="{pac_urls}"
CVMFS_CACHE_BASE={placeholder}/var/lib/cvmfs
CVMFS_RELOAD_SOCKETS={placeholder}/var/run/cvmfs
"""

AUTHZ_WRAPPER = """\
#!/bin/bash
# Runs the authz helper .NAME (this script is called as NAME) with the libraries of the cvmfs distribution
# it belongs to. Written by cvmfs-pilot dist build.
here=${0%/*}
[[ $here == /* ]] || here=$PWD/$here
dist=${here%/usr/libexec/cvmfs/authz}
export LD_LIBRARY_PATH=$dist/usr/lib64:$dist/usr/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
exec -a "$0" "$here/.${0##*/}" "$@"
"""


def _write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def write_default_local(tree, source):
    _write(os.path.join(tree, CONFIG_DIR, "default.local"),
           DEFAULT_LOCAL.format(source=source.name, pac_urls=source.pac_urls, placeholder=ROOT_PLACEHOLDER))


def write_os_release(tree, platform):
    _write(os.path.join(tree, "etc", "os-release"),
           "".join('{}="{}"\n'.format(key, value) for key, value in platform.os_release.items()))


def wrap_authz_helpers(tree):
    """Wrap every helper in the authz directory (if a helper package installed one)."""
    directory = os.path.join(tree, AUTHZ_DIR)
    if not os.path.isdir(directory):
        return
    helpers = sorted(name for name in os.listdir(directory) if not name.startswith("."))
    if helpers:
        _write(os.path.join(directory, WRAPPER), AUTHZ_WRAPPER, 0o755)
    for name in helpers:
        os.rename(os.path.join(directory, name), os.path.join(directory, "." + name))
        os.symlink(WRAPPER, os.path.join(directory, name))
