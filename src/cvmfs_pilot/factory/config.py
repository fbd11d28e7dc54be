"""The factory's configuration, ``factory.toml``: what to stage (docs/glidein.md), where, and how to submit pilots.

:func:`load_config` reads and checks the whole file at once; every error names the file, the key (as a dotted
path such as ``entries.local-test.lifetime.retire``), what is wrong and what to do. Relative paths are relative
to the file's directory. Unknown keys are errors, so that a misspelt key is never silently ignored.
"""

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

LISTS = ("file_list", "precvmfs_file_list", "at_file_list", "after_file_list", "cleanup", "last_script")
FILE_TYPES = ("exec", "source", "regular", "untar")
EXEC_ONLY_LISTS = ("cleanup", "last_script")
PROVIDERS = ("local", "slurm", "htcondor")
HTCONDOR_UNIVERSES = ("vanilla", "grid")
# Names that end up in file names, job names, pilot ids and ClassAd strings.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
ATTRIBUTE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
FILE_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*\Z")  # docs/glidein.md: no '/', no leading '.'
URL = re.compile(r"(https?|file)://[^\s,]+\Z")
SLURM_TIME = re.compile(r"(?:(\d+)-)?(\d+):(\d{2}):(\d{2})\Z")
LIFETIME_ATTRIBUTES = {"max_walltime": "GLIDEIN_MAX_WALLTIME", "retire": "GLIDEIN_RETIRE_TIME",
                       "grace": "GLIDEIN_GRACE_TIME"}
DIST_STAGING = "CVMFS_DIST_STAGING"
DIST_INDEX_SHA256 = "CVMFS_DIST_INDEX_SHA256"
DEFAULT_CONFIG = "factory.toml"
DEFAULT_KILL_AFTER = 60


@dataclass(frozen=True)
class FileSpec:
    """A file to stage: ``path`` on this host, ``name`` in the staging area, and where the pilot uses it."""

    path: Path
    name: str
    list: str
    type: str
    config_out: Optional[str] = None
    cond: Optional[str] = None
    key: str = ""  # where it is configured, e.g. "factory.files[2]", for messages

    def list_item(self):
        """The file as docs/glidein.md's ``lists`` name it."""
        item = {"name": self.name, "type": self.type}
        if self.config_out:
            item["config_out"] = self.config_out
        if self.cond:
            item["cond"] = self.cond
        return item


@dataclass(frozen=True)
class Lifetime:
    """Seconds from the pilot's start: the hard limit, no new payload command after ``retire``, and the payload's
    time between SIGTERM and SIGKILL."""

    max_walltime: Optional[int] = None
    retire: Optional[int] = None
    grace: Optional[int] = None

    def attributes(self):
        return {attribute: str(getattr(self, key)) for key, attribute in LIFETIME_ATTRIBUTES.items()
                if getattr(self, key) is not None}


@dataclass(frozen=True)
class Entry:
    """A place pilots are submitted to, through one provider (batch system)."""

    name: str
    provider: str
    lifetime: Lifetime
    credential: Optional[Path]
    attributes: dict  # the entry's own, lifetime included
    provider_options: dict
    files: tuple
    payload: Optional[list]


@dataclass(frozen=True)
class Frontend:
    """A frontend (VO) staging area: its files are the pilot's ``client`` file_list."""

    name: str
    staging_dir: Path
    staging_urls: tuple
    attributes: dict
    files: tuple
    payload: Optional[list]


@dataclass(frozen=True)
class DistStaging:
    """The client distributions' staging area (``cvmfs-pilot dist build``) that pilots fetch from."""

    staging_dir: Path
    staging_urls: tuple


@dataclass(frozen=True)
class FactoryConfig:
    path: Path
    name: str
    work_dir: Path
    staging_dir: Path
    staging_urls: tuple
    attributes: dict
    files: tuple
    payload: Optional[list]
    cvmfs: Optional[DistStaging]
    entries: dict = field(default_factory=dict)
    frontend: Optional[Frontend] = None

    @property
    def pilots_dir(self):
        """Where each pilot's record directory is: ``pilots/<entry>/<id>/``."""
        return self.work_dir / "pilots"

    def entry(self, name):
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none"
            raise ConfigError("{}: there is no entry {!r} (configured: {}); add [entries.{}] or use one of "
                              "those".format(self.path, name, known, name)) from None


class _Table:
    """One TOML table being read: takes known keys with type checks, then refuses any key left over."""

    def __init__(self, file, key, data):
        self.file = file
        self.key = key
        self.data = dict(data)

    def where(self, name):
        return "{}.{}".format(self.key, name) if self.key else name

    def fail(self, name, problem):
        raise ConfigError("{}: {}: {}".format(self.file, self.where(name), problem))

    def take(self, name, kinds, what, required=False, default=None):
        if name not in self.data:
            if required:
                raise ConfigError("{}: {} is missing; set it to {}".format(self.file, self.where(name), what))
            return default
        value = self.data.pop(name)
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            self.fail(name, "{!r} is a {}; set it to {}".format(value, _toml_type(value), what))
        return value

    def table(self, name, required=False):
        value = self.take(name, dict, "a table ([{}])".format(self.where(name)), required=required)
        return None if value is None else _Table(self.file, self.where(name), value)

    def string(self, name, what="a string", required=False, default=None, pattern=None, explain=""):
        given = name in self.data
        value = self.take(name, str, what, required=required, default=default)
        if given and pattern is not None and not pattern.match(value):
            self.fail(name, "{!r} is not {}{}".format(value, what, explain))
        return value

    def integer(self, name, minimum):
        value = self.take(name, int, "a whole number of seconds")
        if value is not None and value < minimum:
            self.fail(name, "{} is less than {}; set it to {} or more".format(value, minimum, minimum))
        return value

    def path(self, name, required=False, default=None):
        value = self.take(name, str, "a path (relative to the directory of this file)", required=required)
        if value is None:
            return default
        if not value:
            self.fail(name, "is empty; set it to a path")
        return (self.file.parent / Path(value).expanduser()).resolve()

    def string_list(self, name, what, required=False):
        value = self.take(name, list, what, required=required)
        if value is not None and not all(isinstance(item, str) and item for item in value):
            self.fail(name, "{!r} is not {}".format(value, what))
        return value

    def urls(self, name, required=False):
        what = "a non-empty list of http://, https:// or file:// URLs"
        urls = self.string_list(name, what, required=required)
        if urls is None:
            return None
        if not urls:
            self.fail(name, "is empty; give {}".format(what))
        for url in urls:
            if not URL.match(url):
                self.fail(name, "{!r} is not an http://, https:// or file:// URL without spaces or commas; fix "
                                "it".format(url))
        return tuple(url if url.endswith("/") else url + "/" for url in urls)

    def done(self):
        if self.data:
            unknown = ", ".join(self.where(name) for name in sorted(self.data))
            raise ConfigError("{}: unknown key(s) {}; remove them or fix their spelling".format(self.file, unknown))


def _toml_type(value):
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "list",
            dict: "table"}.get(type(value), type(value).__name__)


def _attributes(table):
    """The string attributes of an ``attributes`` table (integers and booleans converted)."""
    if table is None:
        return {}
    attributes = {}
    for name in list(table.data):
        if not ATTRIBUTE.match(name):
            table.fail(name, "is not an attribute name (letters, digits and '_', not starting with a digit); "
                             "rename it")
        value = table.take(name, (str, int, bool), "a string, a whole number or a boolean")
        if isinstance(value, bool):
            value = "True" if value else "False"
        value = str(value)
        if "\n" in value or "\r" in value:
            table.fail(name, "contains a line break; glidein_config takes one line per attribute")
        attributes[name] = value
    return attributes


def _payload(table):
    if table is None:
        return None
    what = "a list of commands, each a non-empty list of strings, e.g. [[\"sh\", \"-c\", \"echo hello\"]]"
    commands = table.take("commands", list, what, required=True)
    if not commands or not all(isinstance(command, list) and command and
                               all(isinstance(arg, str) for arg in command) for command in commands):
        table.fail("commands", "{!r} is not {}".format(commands, what))
    table.done()
    return [list(command) for command in commands]


def _files(parent, name, fixed_list=None):
    """The FileSpecs of an array of tables [[<parent>.files]]; fixed_list: the only list these files may go to."""
    items = parent.take(name, list, "an array of tables ([[{}]])".format(parent.where(name)), default=[])
    specs = []
    for number, item in enumerate(items, 1):
        key = "{}[{}]".format(parent.where(name), number)
        if not isinstance(item, dict):
            raise ConfigError("{}: {}: is a {}; write it as a table [[{}]]".format(parent.file, key,
                                                                                    _toml_type(item),
                                                                                    parent.where(name)))
        table = _Table(parent.file, key, item)
        path = table.path("path", required=True)
        if fixed_list:
            file_list = table.string("list", default=fixed_list)
            if file_list != fixed_list:
                table.fail("list", "must be {!r} here (these files form the {} list); remove the key".format(
                    fixed_list, "entry's" if "entries" in key else "client"))
        else:
            file_list = table.string("list", "one of " + ", ".join(LISTS), required=True)
            if file_list not in LISTS:
                table.fail("list", "{!r} is not one of {}; use one of them".format(file_list, ", ".join(LISTS)))
        file_type = table.string("type", "one of " + ", ".join(FILE_TYPES), required=True)
        if file_type not in FILE_TYPES:
            table.fail("type", "{!r} is not one of {}; use one of them".format(file_type, ", ".join(FILE_TYPES)))
        if file_list in EXEC_ONLY_LISTS and file_type != "exec":
            table.fail("type", "must be 'exec' for a file in {} (it is run); change the type or the list".format(
                file_list))
        file_name = table.string("name", "a file name", default=path.name, pattern=FILE_NAME,
                                 explain=" (letters, digits and '_+-.', not starting with '.')")
        if not FILE_NAME.match(file_name):
            table.fail("path", "its file name {!r} cannot be used in a staging area (letters, digits and '_+-.', "
                               "not starting with '.'); set name = \"...\" to stage it under another".format(
                                   file_name))
        config_out = table.string("config_out", "an attribute name", pattern=ATTRIBUTE)
        cond = table.string("cond", "an attribute name", pattern=ATTRIBUTE)
        if file_list == "last_script" and (config_out or cond):
            table.fail("config_out" if config_out else "cond", "does not apply to the last_script (it always runs "
                                                               "last); remove it")
        table.done()
        specs.append(FileSpec(path, file_name, file_list, file_type, config_out, cond, key))
    last = [spec for spec in specs if spec.list == "last_script"]
    if len(last) > 1:
        raise ConfigError("{}: {} and {}: both are the last_script; there is one, choose it".format(
            parent.file, last[0].key, last[1].key))
    return tuple(specs)


def _lifetime(entry):
    table = entry.table("lifetime")
    if table is None:
        return Lifetime()
    lifetime = Lifetime(max_walltime=table.integer("max_walltime", 1), retire=table.integer("retire", 1),
                        grace=table.integer("grace", 0))
    table.done()
    if lifetime.max_walltime is not None and lifetime.retire is not None and lifetime.retire > lifetime.max_walltime:
        table.fail("retire", "{} is after max_walltime ({}); no payload command could start after the pilot "
                             "ended anyway: set retire below max_walltime".format(lifetime.retire,
                                                                                  lifetime.max_walltime))
    return lifetime


def slurm_seconds(text):
    """Seconds of a Slurm time limit [D-]HH:MM:SS."""
    days, hours, minutes, seconds = SLURM_TIME.match(text).groups()
    return ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)


def _provider_options(entry, provider, lifetime):
    table = entry.table("provider_options") or _Table(entry.file, entry.where("provider_options"), {})
    options = {}
    if provider == "local":
        kill_after = table.integer("kill_after", 0)
        options["kill_after"] = DEFAULT_KILL_AFTER if kill_after is None else kill_after
    elif provider == "slurm":
        options["partition"] = table.string("partition", "a partition name")
        options["time"] = table.string("time", "a time limit \"HH:MM:SS\" (or \"D-HH:MM:SS\")", pattern=SLURM_TIME)
        options["extra_args"] = table.string_list("extra_args", "a list of sbatch arguments (strings)") or []
        if options["time"] and lifetime.max_walltime is not None:
            needed = lifetime.max_walltime + (lifetime.grace if lifetime.grace is not None else 30)
            if slurm_seconds(options["time"]) < needed:
                table.fail("time", "{} is shorter than the pilot's lifetime (max_walltime plus grace, {} s): "
                                   "Slurm would kill pilots before they end; raise it or lower max_walltime".format(
                                       options["time"], needed))
    else:
        universe = table.string("universe", "'vanilla' or 'grid'", default="vanilla")
        if universe not in HTCONDOR_UNIVERSES:
            table.fail("universe", "{!r} is not 'vanilla' or 'grid'; use one of them".format(universe))
        options["universe"] = universe
        options["grid_resource"] = table.string("grid_resource", "a grid resource such as \"condor "
                                                                 "ce.example.org ce.example.org:9619\"")
        if universe == "grid" and not options["grid_resource"]:
            table.fail("grid_resource", "is missing; the grid universe needs it, e.g. \"condor ce.example.org "
                                        "ce.example.org:9619\"")
        if universe == "vanilla" and options["grid_resource"]:
            table.fail("grid_resource", "is only for universe = \"grid\"; remove it or set the universe")
        options["requirements"] = table.string("requirements", "a ClassAd expression (a string)")
        extra = table.table("extra")
        options["extra"] = {}
        if extra is not None:
            for name in list(extra.data):
                value = extra.take(name, (str, int, bool), "a string, a whole number or a boolean")
                options["extra"][name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    table.done()
    return options


def _entry(file, name, data):
    if not isinstance(data, dict):
        raise ConfigError("{}: entries.{}: is a {}; write it as a table [entries.{}]".format(
            file, name, _toml_type(data), name))
    entry = _Table(file, "entries." + name, data)
    if not NAME.match(name):
        raise ConfigError("{}: entries.{}: the entry name may hold letters, digits and '_.-' and must start with a "
                          "letter or digit; rename it".format(file, name))
    provider = entry.string("provider", "one of " + ", ".join(PROVIDERS), required=True)
    if provider not in PROVIDERS:
        entry.fail("provider", "{!r} is not one of {}; use one of them".format(provider, ", ".join(PROVIDERS)))
    lifetime = _lifetime(entry)
    credential = entry.path("credential")
    attributes_table = entry.table("attributes")
    attributes = _attributes(attributes_table)
    for key, attribute in LIFETIME_ATTRIBUTES.items():
        if attribute in attributes and getattr(lifetime, key) is not None:
            attributes_table.fail(attribute, "is also set by lifetime.{}; keep one of them".format(key))
    attributes.update(lifetime.attributes())
    options = _provider_options(entry, provider, lifetime)
    files = _files(entry, "files", fixed_list="file_list")
    payload = _payload(entry.table("payload"))
    entry.done()
    return Entry(name, provider, lifetime, credential, attributes, options, files, payload)


def _frontend(top):
    frontend = top.table("frontend")
    if frontend is None:
        return None
    name = frontend.string("name", "a name", required=True, pattern=NAME,
                           explain=" (letters, digits and '_.-', starting with a letter or digit)")
    staging_dir = frontend.path("staging_dir", required=True)
    urls = frontend.urls("staging_urls", required=True)
    attributes = _attributes(frontend.table("attributes"))
    files = _files(frontend, "files", fixed_list="file_list")
    payload = _payload(frontend.table("payload"))
    frontend.done()
    return Frontend(name, staging_dir, urls, attributes, files, payload)


def _cvmfs(top, attributes):
    cvmfs = top.table("cvmfs")
    if cvmfs is None:
        return None
    staging_dir = cvmfs.path("dist_staging_dir", required=True)
    urls = cvmfs.urls("dist_staging_urls", required=True)
    cvmfs.done()
    for attribute in (DIST_STAGING, DIST_INDEX_SHA256):
        if attribute in attributes:
            raise ConfigError("{}: factory.attributes.{}: is also set by [cvmfs]; keep one of them".format(
                top.file, attribute))
    return DistStaging(staging_dir, urls)


def parse_config(path, text):
    """The FactoryConfig of TOML text read from path."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("{}: not valid TOML: {}; fix the syntax".format(path, exc)) from None
    top = _Table(path, "", data)
    factory = top.table("factory", required=True)
    name = factory.string("name", "a name", required=True, pattern=NAME,
                          explain=" (letters, digits and '_.-', starting with a letter or digit)")
    work_dir = factory.path("work_dir", required=True)
    staging_dir = factory.path("staging_dir", default=work_dir / "staging")
    urls = factory.urls("staging_urls", required=True)
    attributes = _attributes(factory.table("attributes"))
    files = _files(factory, "files")
    payload = _payload(factory.table("payload"))
    factory.done()
    cvmfs = _cvmfs(top, attributes)
    entries_table = top.table("entries", required=True)
    entries = {name: _entry(path, name, value) for name, value in entries_table.data.items()}
    if not entries:
        raise ConfigError("{}: entries: there are none; add at least one [entries.NAME] with a provider".format(path))
    entries_table.data.clear()
    frontend = _frontend(top)
    top.done()
    return FactoryConfig(path=path, name=name, work_dir=work_dir, staging_dir=staging_dir, staging_urls=urls,
                         attributes=attributes, files=files, payload=payload, cvmfs=cvmfs, entries=entries,
                         frontend=frontend)


def load_config(path=DEFAULT_CONFIG):
    """Read and check factory.toml; ConfigError names the file, the key and what to do."""
    path = Path(path).expanduser().absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("{}: no such file; write a factory.toml (docs/glidein.md) or give --config "
                          "FILE".format(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("{}: cannot be read: {}".format(path, getattr(exc, "strerror", None) or exc)) from None
    return parse_config(path, text)
