"""The pilot's view of a staging area (docs/glidein.md): the index, verified against the hash the pilot was given,
and its files, each downloaded and verified against the index before anything uses it (from ``files/<name>``,
else ``objects/<sha256>``, where every version of a file is kept)."""

import json
import os
import re

from cvmfs_pilot.node import dist_fetch, safe_extract

LISTS = ("file_list", "precvmfs_file_list", "at_file_list", "after_file_list", "cleanup")
TYPES = ("exec", "source", "regular", "untar")
FILE_NAME = re.compile(r"^[A-Za-z0-9_+@=,-][A-Za-z0-9_.+@=,-]*$")
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_FILE = 1 << 30


class StagingError(Exception):
    """The staging area is unusable or refused: a configuration problem of the factory or frontend."""


class ListedFile(object):
    def __init__(self, name, kind, sha256, size, config_out=None, cond=None):
        self.name = name
        self.type = kind
        self.sha256 = sha256
        self.size = size
        self.config_out = config_out
        self.cond = cond
        self.path = None  # where it is once downloaded (the directory, for untar)


def _check(condition, message):
    if not condition:
        raise StagingError(message)


class StagingIndex(object):
    """A parsed, checked index. ``lists``: list name -> [ListedFile]; ``entries``: entry name -> dict with
    ``attributes``, ``file_list`` ([ListedFile]) and ``payload``."""

    def __init__(self, data, kind, what):
        self.what = what
        try:
            index = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise StagingError("{}: the index is not JSON: {}".format(what, exc))
        _check(isinstance(index, dict) and index.get("format") == 1,
               "{}: not a format-1 staging index".format(what))
        _check(index.get("kind") == kind, "{}: an index of kind {!r}, not {!r}".format(what, index.get("kind"), kind))
        self.name = index.get("name") or ""
        self.files = index.get("files") or {}
        _check(isinstance(self.files, dict), "{}: 'files' is not an object".format(what))
        for name, listed in self.files.items():
            _check(FILE_NAME.match(name) is not None, "{}: file name {!r} refused".format(what, name))
            _check(isinstance(listed, dict) and re.match(r"^[0-9a-f]{64}$", str(listed.get("sha256"))) and
                   isinstance(listed.get("size"), int) and 0 <= listed["size"] <= MAX_FILE,
                   "{}: file {!r} has no valid sha256 and size".format(what, name))
        self.runtime = index.get("runtime")
        self.attributes = self._attributes(index.get("attributes"), "attributes")
        lists = index.get("lists") or {}
        _check(isinstance(lists, dict), "{}: 'lists' is not an object".format(what))
        unknown = set(lists) - set(LISTS)
        _check(not unknown, "{}: unknown lists {}".format(what, ", ".join(sorted(unknown))))
        self.lists = {name: self._list(lists.get(name) or [], name) for name in LISTS}
        last = index.get("last_script")
        self.last_script = self._file({"name": last, "type": "exec"}, "last_script") if last else None
        self.payload = self._payload(index.get("payload"), "payload")
        self.entries = {}
        for entry, spec in (index.get("entries") or {}).items():
            _check(isinstance(spec, dict), "{}: entry {!r} is not an object".format(what, entry))
            self.entries[entry] = {
                "attributes": self._attributes(spec.get("attributes"), "entries.{}.attributes".format(entry)),
                "file_list": self._list((spec.get("lists") or {}).get("file_list") or [],
                                        "entries.{}.lists.file_list".format(entry)),
                "payload": self._payload(spec.get("payload"), "entries.{}.payload".format(entry))}

    def _attributes(self, attributes, where):
        attributes = attributes or {}
        _check(isinstance(attributes, dict), "{}: {} is not an object".format(self.what, where))
        for key, value in attributes.items():
            _check(KEY.match(key) is not None and isinstance(value, str) and "\n" not in value,
                   "{}: {}: {!r} must be a KEY with a one-line string value".format(self.what, where, key))
        return dict(attributes)

    def _payload(self, payload, where):
        if payload is None:
            return None
        _check(isinstance(payload, list) and all(isinstance(c, list) and c and all(isinstance(w, str) for w in c)
                                                 for c in payload),
               "{}: {} must be a list of commands, each a non-empty list of strings".format(self.what, where))
        return payload

    def _list(self, items, where):
        _check(isinstance(items, list), "{}: {} is not a list".format(self.what, where))
        return [self._file(item, where) for item in items]

    def _file(self, item, where):
        _check(isinstance(item, dict), "{}: {}: {!r} is not an object".format(self.what, where, item))
        name, kind = item.get("name"), item.get("type")
        _check(kind in TYPES, "{}: {}: type {!r} of {!r} is not one of {}".format(self.what, where, kind, name,
                                                                                ", ".join(TYPES)))
        _check(isinstance(name, str) and name in self.files,
               "{}: {}: {!r} is not among the index's files with a hash: refused".format(self.what, where, name))
        for key in ("config_out", "cond"):
            _check(item.get(key) is None or KEY.match(str(item[key])) is not None,
                   "{}: {}: {} {!r} of {!r} is not a key".format(self.what, where, key, item.get(key), name))
        listed = self.files[name]
        return ListedFile(name, kind, listed["sha256"], listed["size"], item.get("config_out"), item.get("cond"))


def fetch_index(urls, sha256, kind, directory):
    """Download and verify the index of the staging area at urls; save it as <directory>/<kind>-index.json."""
    downloader = dist_fetch.Downloader(urls)
    try:
        data = dist_fetch.fetch_index(downloader, sha256)
    except dist_fetch.FetchError as exc:
        raise StagingError("the {} staging area: {}".format(kind, exc))
    index = StagingIndex(data, kind, "the {} index {}".format(kind, sha256[:12]))
    index.downloader = downloader
    index.path = os.path.join(directory, "{}-index.json".format(kind))
    with open(index.path, "wb") as out:
        out.write(data)
    return index


def download_files(index, files, directory):
    """Download, verify and place files (ListedFile) of index below directory: exec files executable, untar
    files unpacked safely into a directory of their name (without .tar.gz)."""
    os.makedirs(directory, exist_ok=True)
    for listed in files:
        target = os.path.join(directory, listed.name)
        if listed.path is not None:
            continue
        if os.path.exists(target) and listed.type != "untar":
            listed.path = target
            continue
        try:
            temporary = dist_fetch.download_verified(index.downloader, "files/" + listed.name, listed.sha256,
                                                     listed.size, directory)
        except dist_fetch.FetchError as current:
            try:  # the file changed since this pilot's index was staged: its version is kept under its hash
                temporary = dist_fetch.download_verified(index.downloader, "objects/" + listed.sha256,
                                                         listed.sha256, listed.size, directory)
            except dist_fetch.FetchError as kept:
                raise StagingError("{}\n{}".format(current, kept))
        if listed.type == "untar":
            unpacked = os.path.join(directory, re.sub(r"\.(tar\.gz|tgz|tar)$", "", listed.name))
            try:
                os.mkdir(unpacked, 0o700)
                safe_extract.extract_tarball(temporary, unpacked)
            except (safe_extract.ArchiveRejected, OSError) as exc:
                raise StagingError("{}: refused: {}".format(listed.name, exc))
            finally:
                os.unlink(temporary)
            listed.path = unpacked
            continue
        os.chmod(temporary, 0o700 if listed.type == "exec" else 0o600)
        os.rename(temporary, target)
        listed.path = target
