"""The client configuration chain (§7): which files set a repository's parameters, in the real client's order.

Later files win:

1. ``default.conf``                    2. ``default.d/*.conf`` (sorted)
3. ``CFGREPO/etc/cvmfs/default.conf``  4. ``default.local``
5. ``CFGREPO/etc/cvmfs/domain.d/<domain>.conf``
6. ``domain.d/<domain>.conf``, then ``domain.d/<domain>.local``
7. ``CFGREPO/etc/cvmfs/config.d/<fqrn>.conf``
8. ``config.d/<fqrn>.conf``, then ``config.d/<fqrn>.local``
9. the ``-o KEY=VALUE`` overrides, taken literally

The unmarked paths are in the local configuration directory (``/etc/cvmfs``). CFGREPO is the config repository,
mounted at ``$CVMFS_MOUNT_DIR/$CVMFS_CONFIG_REPOSITORY`` (``/cvmfs/<name>`` by default). Its files, and any
include below that path, are read through the caller's ``read(relative_path) -> bytes or None``; without a reader
they are read from the local file system, where a mounted config repository would be. The files are bash
fragments read by :mod:`.shellvars`, which never executes anything.

``@fqrn@`` and ``@org@`` (the repository name and its first label) are replaced in every value at the end.
"""

import os
import re

from .shellvars import NAME, Setting, ShellVariables

DEFAULT_CONFIG_DIR = "/etc/cvmfs"
DEFAULT_MOUNT_DIR = "/cvmfs"
CONFIG_REPOSITORY = "CVMFS_CONFIG_REPOSITORY"
OVERRIDE_ORIGIN = "-o"
REPOSITORY_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+\Z")
INTEGER = re.compile(r"[+-]?[0-9]+\Z")
TRUE_WORDS = ("yes", "true", "on", "1")
FALSE_WORDS = ("no", "false", "off", "0")


class ConfigurationError(ValueError):
    """A repository name or configuration value is unusable; the message says which and where it was set."""


class Configuration(object):
    """The parameters of one repository, each with where it was set: ``file:line``, or ``-o`` for an override.

    ``warnings`` lists what was skipped or refused while reading, as ``file:line: message`` (never values).
    An empty value counts as unset for :meth:`get_bool` and :meth:`get_int`.
    """

    def __init__(self, fqrn, settings, warnings):
        self.fqrn = fqrn
        self._settings = settings  # name -> Setting
        self.warnings = warnings

    def get(self, key, default=None):
        setting = self._settings.get(key)
        return default if setting is None else setting.value

    def origin(self, key):
        """Where key was set (``file:line`` or ``-o``), or None if it is unset."""
        setting = self._settings.get(key)
        return None if setting is None else str(setting.origin)

    def items(self):
        """``(key, value)`` pairs sorted by key."""
        return [(key, self._settings[key].value) for key in sorted(self._settings)]

    def get_bool(self, key, default):
        """yes/true/on/1 or no/false/off/0 in any case; anything else gives default and a warning."""
        value = self.get(key, "").strip().lower()
        if value in TRUE_WORDS:
            return True
        if value in FALSE_WORDS:
            return False
        if value:
            self.warnings.append("{}: {} is not yes/no/true/false/on/off/1/0; using the default ({})".format(
                self.origin(key), key, "yes" if default else "no"))
        return default

    def get_int(self, key, default):
        value = self.get(key, "").strip()
        if not value:
            return default
        if not INTEGER.match(value):
            raise ConfigurationError("{} (set at {}) is not a whole number; fix it there".format(
                key, self.origin(key)))
        return int(value)

    def list_repositories(self):
        """``CVMFS_REPOSITORIES`` as full names, in order; a name without a dot gets ``.$CVMFS_DEFAULT_DOMAIN``."""
        domain = self.get("CVMFS_DEFAULT_DOMAIN")
        names = []
        for name in self.get("CVMFS_REPOSITORIES", "").split(","):
            name = name.strip()
            if name and "." not in name:
                if not domain:
                    raise ConfigurationError(
                        "CVMFS_REPOSITORIES (set at {}) lists {} without a domain and CVMFS_DEFAULT_DOMAIN is not "
                        "set; write the full name, such as {}.cern.ch".format(
                            self.origin("CVMFS_REPOSITORIES"), name, name))
                name = name + "." + domain
            if name:
                names.append(name)
        return names


class _ChainVariables(ShellVariables):
    """The variables of the chain: config-repository paths go to the reader, and CVMFS_CONFIG_REPOSITORY is
    protected -- never set from the config repository, and fixed once default.local has been read."""

    def __init__(self, environ, config_repository, read_config_repository, mount_dir_override):
        ShellVariables.__init__(self, environ)
        self.config_repository = config_repository
        self.read_config_repository = read_config_repository
        self.mount_dir_override = mount_dir_override
        self.config_repository_fixed = False

    def config_repository_root(self):
        """``$CVMFS_MOUNT_DIR/<config repository>`` as configured so far, or None without a config repository."""
        if not self.config_repository:
            return None
        mount_dir = self.settings.get("CVMFS_MOUNT_DIR")
        mount_dir = self.mount_dir_override or (mount_dir and mount_dir.value) or DEFAULT_MOUNT_DIR
        return os.path.normpath(os.path.join(mount_dir, self.config_repository))

    def config_repository_path(self, path):
        """path relative to the config repository's root, or None if it is not inside the config repository."""
        root = self.config_repository_root()
        if root and path.startswith(root + "/"):
            return path[len(root) + 1:]
        return None

    def read_file(self, path):
        relative = self.config_repository_path(path)
        if relative is not None and self.read_config_repository is not None:
            return self.read_config_repository(relative)
        return ShellVariables.read_file(self, path)

    def refusal(self, name, value, origin):
        if name != CONFIG_REPOSITORY:
            return None
        if self.config_repository_path(origin.path) is not None:
            return ("{} is protected: the config repository cannot set it; this assignment is ignored (set it in "
                    "default.local)".format(name))
        if self.config_repository_fixed and value != (self.config_repository or ""):
            return ("{} is protected: the config repository was chosen from default.conf, default.d, "
                    "default.local and -o before this file was read; this assignment is ignored (set it in "
                    "default.local)".format(name))
        return None


def _check_repository_name(name, what):
    if not REPOSITORY_NAME.match(name):
        raise ConfigurationError("{} {!r} is not a fully qualified repository name such as atlas.cern.ch".format(
            what, name))


def _conf_files(directory):
    try:
        return sorted(name for name in os.listdir(directory) if name.endswith(".conf"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def load_configuration(fqrn, config_dir=DEFAULT_CONFIG_DIR, overrides=None, environ=None,
                       config_repository_files=None):
    """The configuration of repository ``fqrn`` from the chain in this module's docstring.

    ``fqrn`` None reads only the default files (steps 1, 2, 4 and 9), as ``cvmfs_config`` does without a
    repository. ``overrides`` maps names to values (``-o``); they apply last and over readonly names.
    ``environ`` (a dict, default empty) answers ``$VAR`` for names no file has set; ``$CVMFS_FQRN`` is the
    repository name, as in the real client. ``config_repository_files`` is ``read(relative_path) -> bytes or
    None`` for the config repository named by :func:`config_repository_name`, whose steps are skipped when
    loading that repository itself. ``readonly NAME`` makes later assignments anywhere in the chain ignored.
    """
    config_dir = os.fspath(config_dir)
    overrides = dict(overrides or {})
    for key in overrides:
        if not NAME.match(key):
            raise ConfigurationError("-o {}=...: {!r} is not a variable name".format(key, key))
    environ = dict(environ or {})
    config_repository = None
    if fqrn is not None:
        _check_repository_name(fqrn, "the repository name")
        config_repository = config_repository_name(config_dir, overrides, environ)
        environ["CVMFS_FQRN"] = fqrn
    chain = _ChainVariables(environ, config_repository, config_repository_files, overrides.get("CVMFS_MOUNT_DIR"))
    uses_config_repository = config_repository is not None and config_repository != fqrn
    if not os.path.isdir(config_dir):
        chain.warn(config_dir, "does not exist; no local configuration files were read")

    def read_local(name):
        chain.source(os.path.join(config_dir, name))

    def read_config_repository(name):
        if uses_config_repository:
            chain.source(os.path.join(chain.config_repository_root(), "etc", "cvmfs", name))

    read_local("default.conf")
    for name in _conf_files(os.path.join(config_dir, "default.d")):
        read_local(os.path.join("default.d", name))
    read_config_repository("default.conf")
    read_local("default.local")
    chain.config_repository_fixed = True
    if fqrn is not None:
        domain = fqrn.split(".", 1)[1]
        read_config_repository("domain.d/{}.conf".format(domain))
        read_local("domain.d/{}.conf".format(domain))
        read_local("domain.d/{}.local".format(domain))
        read_config_repository("config.d/{}.conf".format(fqrn))
        read_local("config.d/{}.conf".format(fqrn))
        read_local("config.d/{}.local".format(fqrn))

    settings = dict(chain.settings)
    for key, value in overrides.items():
        settings[key] = Setting(value, OVERRIDE_ORIGIN)
    if fqrn is not None:
        org = fqrn.split(".", 1)[0]
        settings = {key: Setting(setting.value.replace("@fqrn@", fqrn).replace("@org@", org), setting.origin)
                    for key, setting in settings.items()}
    return Configuration(fqrn, settings, chain.warnings)


def config_repository_name(config_dir=DEFAULT_CONFIG_DIR, overrides=None, environ=None):
    """The config repository that ``CVMFS_CONFIG_REPOSITORY`` names in default.conf, default.d/*.conf,
    default.local and ``overrides``, or None if it is unset or empty. Mount or open it before
    :func:`load_configuration` reads from it."""
    defaults = load_configuration(None, config_dir, overrides, environ)
    name = defaults.get(CONFIG_REPOSITORY)
    if not name:
        return None
    _check_repository_name(name, "{} (set at {})".format(CONFIG_REPOSITORY, defaults.origin(CONFIG_REPOSITORY)))
    return name
