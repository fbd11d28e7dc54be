"""The one configuration file with which the node layer runs a distribution's upstream client:
``cvmfs2 -o config=FILE FQRN MOUNTPOINT``.

Given ``config=``, cvmfs2 reads FILE and nothing else. It lets bash run the file and then takes, for every
``NAME=...`` line of FILE itself, the value bash ended with; a variable assigned only in a file that FILE sources
would be lost. So FILE holds the whole configuration chain (:mod:`cvmfs_pilot.client.config`), every ``. FILE`` /
``source FILE`` inlined, in the client's order (later wins):

1. ``default.conf``, ``default.d/*.conf`` (sorted by name), then the pinned settings (below)
2. ``CFGREPO/etc/cvmfs/default.conf``, ``default.local``
3. automatic additions, where nothing above set them: ``CVMFS_NFILES``, ``CVMFS_USYSLOG``; the pinned settings
4. ``CFGREPO/etc/cvmfs/domain.d/<domain>.conf``, ``domain.d/<domain>.conf``, ``domain.d/<domain>.local``
5. ``CFGREPO/etc/cvmfs/config.d/<fqrn>.conf``, ``config.d/<fqrn>.conf``, ``config.d/<fqrn>.local``
6. the pilot's ``-o`` overrides; the pinned settings a last time

Unmarked files are in the distribution's ``etc/cvmfs``; CFGREPO is ``<mount dir>/<config repository>``, as the
calling process sees it (its missing files are skipped; it is not read when mounting the config repository
itself, as the real client does). The pinned settings are ``CVMFS_MOUNT_DIR`` and ``CVMFS_CONFIG_REPOSITORY``:
files of config repositories compute paths such as ``$CVMFS_MOUNT_DIR/$CVMFS_CONFIG_REPOSITORY/etc/cvmfs/keys``,
so both must hold the pilot's values from where the real client fixes the config repository (after default.d)
to the end.

Every inlined line except comments is relocated: a system path of a client installation that starts a word or a
value (at the start of the line or after ``=``, a quote, ``:``, ``;``, ``,``, blank, or ``:-``/``:+``/``:?``) and
ends at a path boundary (``/``, a quote, blank, ``:``, ``;``, ``,``, ``)``, ``}`` or the end of the line) is
rewritten into the distribution: ``/etc/cvmfs``, ``/var/lib/cvmfs``, ``/var/run/cvmfs`` and ``/run/cvmfs`` (to
``var/run/cvmfs``), and ``/cvmfs`` to the mount directory. ``/cvmfsx``, ``/etc/cvmfs-old`` or ``/data/cvmfs``
are other paths and stay. Since relocated paths land unquoted in shell text, the distribution and mount
directories may hold only letters, digits and ``. _ - + @ /``.

Bytes that are not UTF-8 pass through as surrogate escapes: write the text with :func:`write_relocated_config`.
"""

import os
import posixpath
import re
import shlex
import stat

from cvmfs_pilot.client.config import CONFIG_REPOSITORY, REPOSITORY_NAME
from cvmfs_pilot.client.shellvars import NAME, ShellVariables
from cvmfs_pilot.node import atomic_file

CONFIG_DIR = "etc/cvmfs"  # in the distribution and in the config repository
SYSTEM_MOUNT_DIR = "/cvmfs"
MOUNT_DIR = "CVMFS_MOUNT_DIR"
NFILES = "CVMFS_NFILES"
USYSLOG = "CVMFS_USYSLOG"
MAX_INCLUDE_DEPTH = 8
TEXT_ERRORS = "surrogateescape"
CHUNK = 1 << 16

# A system path -> where it is in the distribution; None: the pilot's mount directory.
RELOCATIONS = {"/etc/cvmfs": "etc/cvmfs", "/var/lib/cvmfs": "var/lib/cvmfs", "/var/run/cvmfs": "var/run/cvmfs",
               "/run/cvmfs": "var/run/cvmfs", SYSTEM_MOUNT_DIR: None}
PATH_START = r"(?:^|(?<=[=\"':;,\s])|(?<=:[-+?]))"
PATH_END = r"(?=[/\"'\s:;,)}]|$)"
SYSTEM_PATH = re.compile(PATH_START + "(" + "|".join(
    re.escape(path) for path in sorted(RELOCATIONS, key=len, reverse=True)) + ")" + PATH_END)
SAFE_PATH = re.compile(r"/[A-Za-z0-9._+@/-]*\Z")
COMMENT = re.compile(r"\s*#")
INCLUDE = re.compile(r"\s*(?:\.|source)(?:\s+(?P<argument>.*))?\Z")
INCLUDE_ARGUMENT = re.compile(  # one literal file name, then maybe `;` and a comment
    r"""(?:'(?P<single>[^']+)'|"(?P<double>[^"\\$`]+)"|(?P<plain>[^\s'"\\$`;&|<>()#*?\[~]+))\s*;?\s*(?:#.*)?\Z""")
RELOCATED = "<relocated configuration>"  # the name the check in _check_pinned gives the text
WARNING = re.compile(re.escape(RELOCATED) + r":(\d+): (.*)\Z", re.S)


class RelocationError(ValueError):
    """The relocated configuration cannot be built; the message says which file or value, why, and what to do."""


def read_config_file(path):
    """The text of the configuration file at path (UTF-8, surrogate escapes for other bytes), or None if it does
    not exist. Symbolic links are followed; anything but a regular file is refused."""
    data = _read_bytes(path)
    return None if data is None else data.decode("utf-8", TEXT_ERRORS)


def _read_bytes(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block the pilot
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise _unreadable(path, error)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RelocationError("the configuration file {} is not a regular file (a directory, FIFO or device); "
                                  "replace it by a file or remove it".format(path))
        chunks = []
        chunk = os.read(fd, CHUNK)
        while chunk:
            chunks.append(chunk)
            chunk = os.read(fd, CHUNK)
        return b"".join(chunks)
    except OSError as error:
        raise _unreadable(path, error)
    finally:
        os.close(fd)


def _unreadable(path, error):
    return RelocationError("cannot read the configuration file {}: {}; make it readable or remove it".format(
        path, error.strerror or error))


def conf_file_names(directory):
    """The names ending in ``.conf`` in directory, sorted as the client reads them; [] if it does not exist."""
    try:
        return sorted(name for name in os.listdir(directory) if name.endswith(".conf"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as error:
        raise RelocationError("cannot list the configuration directory {}: {}; make it readable".format(
            directory, error.strerror or error))


def relocate_line(line, dist_root, mount_dir):
    """line with every system path of a client installation rewritten (see the module docstring)."""
    def relocated(match):
        target = RELOCATIONS[match.group(1)]
        return mount_dir if target is None else posixpath.join(dist_root, target)
    return SYSTEM_PATH.sub(relocated, line)


class _Chain(object):
    """The configuration being assembled: its lines, and for each line where it came from (``path:line``, or a
    label for what the pilot adds), which error messages name."""

    def __init__(self, dist_root, mount_dir, read):
        self.dist_root = dist_root
        self.mount_dir = mount_dir
        self.read = read
        self.lines = []
        self.origins = []

    def add(self, line, origin):
        self.lines.append(line)
        self.origins.append(origin)

    def add_file(self, path):
        """Inline the chain file at path; False if it does not exist."""
        text = self.read(path)
        if text is None:
            return False
        self._inline(path, text, [])
        return True

    def add_settings(self, what, assignments):
        """``NAME=<shell text>`` lines that the pilot adds, under a comment saying what they are."""
        if assignments:
            self.add("# set by cvmfs-pilot: " + what, what)
            for name, shell_text in assignments:
                self.add("{}={}".format(name, shell_text), what)

    def text(self):
        return "\n".join(self.lines) + "\n"

    def _inline(self, path, text, includers):
        self.add("# from " + path, path)
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        for number, line in enumerate(lines, 1):
            origin = "{}:{}".format(path, number)
            if COMMENT.match(line):
                self.add(line, origin)
            elif INCLUDE.match(line):
                self._include(line, origin, path, includers)
            else:
                self.add(relocate_line(line, self.dist_root, self.mount_dir), origin)

    def _include(self, line, origin, path, includers):
        argument = INCLUDE_ARGUMENT.match(INCLUDE.match(line).group("argument") or "")
        if not argument:
            raise RelocationError(
                "{}: cannot inline `{}`: only `. FILE` or `source FILE` with one literal file name (no variables, "
                "patterns or arguments) can be inlined, and cvmfs2 keeps no variable of a file it does not see "
                "inlined; write the file name literally".format(origin, line.strip()))
        name = argument.group("single") or argument.group("double") or argument.group("plain")
        if name.startswith("/"):
            target = relocate_line(name, self.dist_root, self.mount_dir)
        else:
            target = posixpath.join(posixpath.dirname(path), name)
        target = posixpath.normpath(target)
        chain = includers + [path]
        if target in chain:
            raise RelocationError("{}: sourcing {} makes a cycle ({}); remove one of these includes".format(
                origin, target, " -> ".join(chain[chain.index(target):] + [target])))
        if len(chain) > MAX_INCLUDE_DEPTH:
            raise RelocationError("{}: sourcing {} nests includes deeper than {} ({}); flatten them".format(
                origin, target, MAX_INCLUDE_DEPTH, " -> ".join(chain + [target])))
        text = self.read(target)
        if text is None:
            raise RelocationError("{} sources {}, which does not exist; install it or remove the include from "
                                  "{}".format(origin, target, path))
        self._inline(target, text, chain)
        self.add("# end of " + target, origin)


class _TextVariables(ShellVariables):
    """The variables that the relocated configuration sets, read by the project's shell reader."""

    def __init__(self, text):
        ShellVariables.__init__(self, {})
        self.text = text

    def read_file(self, path):
        return self.text.encode("utf-8", TEXT_ERRORS) if path == RELOCATED else None


def _check_pinned(chain, expected):
    """Refuse a configuration in which a setting of the pilot (name -> value) does not end with its value: a
    readonly declaration earlier in the chain, or a shell block left open, would make the binary ignore it."""
    variables = _TextVariables(chain.text())
    variables.source(RELOCATED)
    for name, value in expected:
        setting = variables.settings.get(name)
        if setting is not None and setting.value == value:
            continue
        if name in variables.readonly:
            why = "{} declares it readonly".format(chain.origins[variables.readonly[name].line - 1])
        else:
            reports = [WARNING.match(warning) for warning in variables.warnings]
            why = "the chain does not read as shell settings ({})".format("; ".join(
                "{}: {}".format(chain.origins[int(report.group(1)) - 1], report.group(2))
                for report in reports if report) or "no details")
        raise RelocationError("the pilot's setting {}={} would not take effect in the relocated configuration: "
                              "{}; fix that file or drop the setting".format(name, shlex.quote(value), why))


def _checked_directory(path, what):
    path = posixpath.normpath(os.fspath(path)) if path else ""
    if not SAFE_PATH.match(path):
        raise RelocationError(
            "{} {!r} must be an absolute path of letters, digits and . _ - + @ / only, since it is written "
            "unquoted into shell configuration; use a directory with such a path".format(what, path))
    return path


def _checked_repository(name, what):
    if not isinstance(name, str) or not REPOSITORY_NAME.match(name):
        raise RelocationError("{} {!r} is not a fully qualified repository name such as atlas.cern.ch".format(
            what, name))
    return name


def _checked_value(name, value, what):
    if not isinstance(value, str) or "\n" in value or "\0" in value:
        raise RelocationError("{} {}={!r} must be text on one line (cvmfs2 reads one line per value)".format(
            what, name, value))
    return value


def _checked_overrides(overrides, pinned):
    checked = []
    for name in sorted(overrides or {}):
        if not isinstance(name, str) or not NAME.match(name):
            raise RelocationError("-o {!r}=...: {!r} is not a variable name".format(name, name))
        value = _checked_value(name, overrides[name], "-o")
        if name in pinned and value != pinned[name]:
            raise RelocationError("-o {}={} contradicts where this pilot mounts ({}={}); leave it out, the pilot "
                                  "sets it".format(name, shlex.quote(value), name, pinned[name]))
        checked.append((name, value))
    return checked


def _automatic_additions(nfiles, log_path):
    """``(name, shell text)`` that keep a value set earlier in the chain: CVMFS_NFILES unless set and not empty,
    CVMFS_USYSLOG unless set at all (empty turns the log off)."""
    additions = []
    if nfiles is not None:
        if isinstance(nfiles, bool) or not isinstance(nfiles, int) or nfiles <= 0:
            raise RelocationError("the open-files limit {!r} must be a positive whole number".format(nfiles))
        additions.append((NFILES, "${{{}:-{}}}".format(NFILES, nfiles)))
    if log_path is not None:
        log_path = _checked_value(USYSLOG, os.fspath(log_path), "the log file")
        if not log_path.startswith("/"):
            raise RelocationError("the log file {!r} must be an absolute path (cvmfs2 runs in another directory)"
                                  .format(log_path))
        additions.append((USYSLOG, "${{{}-{}}}".format(USYSLOG, shlex.quote(log_path))))
    return additions


def relocated_config(dist_root, fqrn, mount_dir, config_repository=None, overrides=None, log_path=None,
                     nfiles=None, read=read_config_file, conf_files=conf_file_names):
    """The text of the single configuration file with which cvmfs2 of the distribution at dist_root mounts fqrn
    (see the module docstring).

    mount_dir: where this pilot mounts repositories (``/cvmfs`` in a user namespace, ``<work>/cvmfs`` with
    fusermount). config_repository: the name from :func:`config_repository_of`, or None. overrides: the pilot's
    ``-o`` settings, name -> value. log_path, nfiles: CVMFS_USYSLOG and CVMFS_NFILES unless the chain sets them.
    ``read(path) -> text or None`` and ``conf_files(directory) -> sorted names`` reach the files.
    """
    dist_root = _checked_directory(dist_root, "the distribution directory")
    mount_dir = _checked_directory(mount_dir, "the mount directory")
    fqrn = _checked_repository(fqrn, "the repository name")
    pinned = [(MOUNT_DIR, mount_dir)]
    if config_repository is not None:
        pinned.append((CONFIG_REPOSITORY, _checked_repository(config_repository, "the config repository")))
    overrides = _checked_overrides(overrides, dict(pinned))
    additions = _automatic_additions(nfiles, log_path)
    pinned_text = [(name, shlex.quote(value)) for name, value in pinned]
    pinned_what = "where this pilot mounts repositories"

    config_dir = posixpath.join(dist_root, CONFIG_DIR)
    repository_config_dir = None
    if config_repository is not None and config_repository != fqrn:
        repository_config_dir = posixpath.join(mount_dir, config_repository, CONFIG_DIR)
    domain = fqrn.split(".", 1)[1]
    chain = _Chain(dist_root, mount_dir, read)

    def local(name):
        chain.add_file(posixpath.join(config_dir, name))

    def from_config_repository(name):
        if repository_config_dir is not None:
            chain.add_file(posixpath.join(repository_config_dir, name))

    chain.add("# cvmfs2 configuration of {}, relocated into {} by cvmfs-pilot; cvmfs2 -o config=<this file> "
              "reads nothing else".format(fqrn, dist_root), "header")
    if not chain.add_file(posixpath.join(config_dir, "default.conf")):
        raise RelocationError("{}/default.conf does not exist: {} is not an unpacked cvmfs2 client distribution "
                              "(or it was unpacked incompletely); fetch it again".format(config_dir, dist_root))
    for name in conf_files(posixpath.join(config_dir, "default.d")):
        local(posixpath.join("default.d", name))
    chain.add_settings(pinned_what, pinned_text)
    from_config_repository("default.conf")
    local("default.local")
    chain.add_settings("automatic additions, unless set above", additions)
    chain.add_settings(pinned_what, pinned_text)
    from_config_repository("domain.d/{}.conf".format(domain))
    local("domain.d/{}.conf".format(domain))
    local("domain.d/{}.local".format(domain))
    from_config_repository("config.d/{}.conf".format(fqrn))
    local("config.d/{}.conf".format(fqrn))
    local("config.d/{}.local".format(fqrn))
    chain.add_settings("the pilot's -o overrides", [(name, shlex.quote(value)) for name, value in overrides])
    chain.add_settings(pinned_what, pinned_text)
    _check_pinned(chain, overrides + pinned)
    return chain.text()


class _DistributionVariables(ShellVariables):
    """ShellVariables that read files as :func:`read_config_file` does (no FIFOs, no devices)."""

    def read_file(self, path):
        return _read_bytes(path)


def config_repository_of(dist_root, dist_json):
    """The config repository of the distribution at dist_root: dist.json's ``config_repository`` if the key is
    there (null: none), else the last ``CVMFS_CONFIG_REPOSITORY`` that ``etc/cvmfs/default.conf`` and
    ``default.d/*.conf`` assign, else None. default.local does not count: the real client fixes the config
    repository after default.d."""
    if "config_repository" in dist_json:
        name = dist_json["config_repository"]
        if name is None:
            return None
        return _checked_repository(name, "dist.json's config_repository (of {})".format(dist_root))
    config_dir = os.path.join(os.fspath(dist_root), CONFIG_DIR)
    variables = _DistributionVariables({})
    variables.source(os.path.join(config_dir, "default.conf"))
    for name in conf_file_names(os.path.join(config_dir, "default.d")):
        variables.source(os.path.join(config_dir, "default.d", name))
    setting = variables.settings.get(CONFIG_REPOSITORY)
    if setting is None or not setting.value:
        return None
    return _checked_repository(setting.value, "{} (set at {})".format(CONFIG_REPOSITORY, setting.origin))


def write_relocated_config(path, text):
    """Write text to path atomically, readable by the owner only (mode 0600)."""
    atomic_file.write_atomically(path, text.encode("utf-8", TEXT_ERRORS), mode=0o600, sync=True)