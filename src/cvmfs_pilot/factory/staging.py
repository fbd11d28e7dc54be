"""``cvmfs-pilot factory stage``: write the factory's staging area, and the frontend's, as docs/glidein.md says.

A staging area holds ``files/<name>`` (every file an index lists), ``objects/<sha256>`` (every version of every
file, under its content hash: a pilot whose older index names a file that has changed since finds its version
there), ``index.json``, ``indexes/<sha256>.json`` and ``index.json.sha256``. The factory area's files are the pilot runtime (``cvmfs-pilot.pyz``, the node tier of
this installation as a zipapp), the bootstrap ``glidein_startup.sh`` (package data of cvmfs_pilot.glidein) and
every configured file; the frontend area's are its configured files.

Writing reuses the distribution staging area's machinery (cvmfs_pilot.dist.staging): one writer at a time,
every file through a temporary name and a rename, files first and the index last. Staging again with
unchanged inputs writes nothing and keeps the index hash; the ``created`` time does not count as a change.
"""

import hashlib
import importlib.resources
import io
import json
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cvmfs_pilot.dist.errors import StagingError
from cvmfs_pilot.dist.staging import INDEX, INDEX_HISTORY, Staging, utc_iso
from cvmfs_pilot.dist.zipapp_engine import build_zipapp

from .config import DIST_INDEX_SHA256, DIST_STAGING, LISTS
from .errors import StageError

FORMAT = 1
FILES = "files"
OBJECTS = "objects"
RUNTIME = "cvmfs-pilot.pyz"
BOOTSTRAP = "glidein_startup.sh"
BOOTSTRAP_PACKAGE = "cvmfs_pilot.glidein"
ORDERED_LISTS = tuple(name for name in LISTS if name != "last_script")


class StagingArea(Staging):
    """A factory or frontend staging area; see the module docstring."""

    BUSY = "another 'cvmfs-pilot factory stage' is writing {}; wait for it to finish"
    SCRATCH_DIRECTORIES = (".", INDEX_HISTORY, FILES, OBJECTS)

    def read_document(self):
        """The current index.json as a dict, or None when there is none (or it cannot be read)."""
        try:
            return json.loads(self.path(INDEX).read_bytes())
        except (OSError, ValueError):
            return None


@dataclass
class StagedArea:
    """What staging did to one area."""

    kind: str  # "factory" or "frontend"
    name: str
    directory: Path
    index_sha256: str
    written: bool  # False: the index was already up to date
    replaced: list = field(default_factory=list)  # files whose contents changed under the same name


def bootstrap_bytes():
    """The bootstrap script shipped with cvmfs_pilot.glidein."""
    try:
        return importlib.resources.files(BOOTSTRAP_PACKAGE).joinpath(BOOTSTRAP).read_bytes()
    except (ImportError, OSError) as exc:
        raise StageError("the pilot bootstrap {}/{} is not part of this cvmfs-pilot installation ({}); install a "
                         "cvmfs-pilot that ships the glidein package".format(
                             BOOTSTRAP_PACKAGE.replace(".", "/"), BOOTSTRAP, exc)) from None


def dist_attributes(cvmfs):
    """CVMFS_DIST_STAGING and CVMFS_DIST_INDEX_SHA256 of the [cvmfs] client distributions' staging area."""
    actual, stated = Staging(cvmfs.staging_dir).index_sha256()
    build = "cvmfs-pilot dist build --staging {}".format(cvmfs.staging_dir)
    if stated is None or actual is None:
        raise StageError("the client distributions' staging area {} (cvmfs.dist_staging_dir) has no index.json and "
                         "index.json.sha256; run '{}' first".format(cvmfs.staging_dir, build))
    if actual != stated:
        raise StageError("{}/index.json does not match its index.json.sha256 (an interrupted build?); run "
                         "'cvmfs-pilot dist update --staging {}'".format(cvmfs.staging_dir, cvmfs.staging_dir))
    return {DIST_STAGING: ",".join(cvmfs.staging_urls), DIST_INDEX_SHA256: stated}


def _read(config_path, spec):
    try:
        data = spec.path.read_bytes()
    except FileNotFoundError:
        raise StageError("{}: {}.path: {} does not exist; create it or fix the path".format(
            config_path, spec.key, spec.path)) from None
    except OSError as exc:
        raise StageError("{}: {}.path: cannot read {}: {}".format(config_path, spec.key, spec.path,
                                                                  exc.strerror)) from None
    if spec.type == "untar":
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
                archive.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise StageError("{}: {}: {} has type 'untar' but is not a gzip-compressed tar archive ({}); fix the "
                             "file or the type".format(config_path, spec.key, spec.path, exc)) from None
    return data


def collect_files(config_path, specs, built_in=()):
    """{name: bytes} of the files to stage. built_in: (name, bytes, what it is) staged whatever the config says.
    Two different files under one name are refused, with the advice to set ``name``."""
    files, origins = {}, {}
    for name, data, what in built_in:
        files[name], origins[name] = data, what
    for spec in specs:
        data = _read(config_path, spec)
        if spec.name in files and files[spec.name] != data:
            raise StageError("{}: {} ({}) and {} are both named {!r} but differ; set name = \"...\" on {} to stage "
                             "it under another name".format(config_path, spec.key, spec.path, origins[spec.name],
                                                            spec.name, spec.key))
        files[spec.name] = data
        origins.setdefault(spec.name, "{} ({})".format(spec.key, spec.path))
    return files


def _file_table(files):
    return {name: {"sha256": hashlib.sha256(files[name]).hexdigest(), "size": len(files[name])}
            for name in sorted(files)}


def _file_list(specs):
    return [spec.list_item() for spec in specs]


def factory_document(config, files, attributes):
    """The factory index (docs/glidein.md), with ``created`` still None."""
    specs = config.files
    return {
        "format": FORMAT, "kind": "factory", "name": config.name, "created": None,
        "files": _file_table(files),
        "runtime": RUNTIME,
        "attributes": attributes,
        "lists": {name: _file_list(s for s in specs if s.list == name) for name in ORDERED_LISTS},
        "last_script": next((spec.name for spec in specs if spec.list == "last_script"), None),
        "payload": config.payload,
        "entries": {name: {"attributes": entry.attributes, "lists": {"file_list": _file_list(entry.files)},
                           "payload": entry.payload} for name, entry in sorted(config.entries.items())},
    }


def frontend_document(frontend, files):
    """The frontend index: no runtime and no entries; its file_list is the pilot's client list."""
    return {"format": FORMAT, "kind": "frontend", "name": frontend.name, "created": None,
            "files": _file_table(files), "attributes": frontend.attributes,
            "lists": {"file_list": _file_list(frontend.files)}, "last_script": None, "payload": frontend.payload}


def _without_created(document):
    return {key: value for key, value in document.items() if key != "created"}


def write_area(directory, document, files):
    """Write files and then the index of document into the staging area at directory; a StagedArea."""
    area = StagingArea(directory)
    replaced = []
    try:
        with area.locked():
            for name, data in sorted(files.items()):
                digest = hashlib.sha256(data).hexdigest()
                if not area.path(OBJECTS).joinpath(digest).exists():
                    area.write_atomically("{}/{}".format(OBJECTS, digest), data)
                target = area.path(FILES) / name
                try:
                    current = target.read_bytes()
                except FileNotFoundError:
                    current = None
                if current == data:
                    continue
                if current is not None:
                    replaced.append(name)
                area.write_atomically("{}/{}".format(FILES, name), data)
            actual, stated = area.index_sha256()
            current = area.read_document()
            if current is not None and actual == stated and _without_created(current) == _without_created(document):
                return StagedArea(document["kind"], document["name"], area.directory, actual, False, replaced)
            document = dict(document, created=utc_iso(time.time()))
            digest = area.write_index((json.dumps(document, indent=2) + "\n").encode())
    except StagingError as exc:  # the lock: busy, or the directory cannot be made
        raise StageError(str(exc)) from None
    except OSError as exc:
        raise StageError("cannot write the staging area {}: {}: {}".format(
            directory, exc.filename or "", exc.strerror or exc)) from None
    return StagedArea(document["kind"], document["name"], area.directory, digest, True, replaced)


def stage_areas(config):
    """Stage the factory area and, when configured, the frontend area; [StagedArea]."""
    attributes = dict(config.attributes)
    if config.cvmfs is not None:
        attributes.update(dist_attributes(config.cvmfs))
    specs = list(config.files) + [spec for entry in config.entries.values() for spec in entry.files]
    files = collect_files(config.path, specs, built_in=[
        (RUNTIME, build_zipapp(), "the pilot runtime"), (BOOTSTRAP, bootstrap_bytes(), "the pilot bootstrap")])
    areas = [write_area(config.staging_dir, factory_document(config, files, attributes), files)]
    if config.frontend is not None:
        frontend = config.frontend
        files = collect_files(config.path, frontend.files)
        areas.append(write_area(frontend.staging_dir, frontend_document(frontend, files), files))
    return areas


def stage(config):
    """Stage everything; (the factory index's SHA-256, the frontend index's or None)."""
    areas = stage_areas(config)
    return areas[0].index_sha256, areas[1].index_sha256 if len(areas) > 1 else None


def staged_index_sha256(directory, what):
    """The SHA-256 of a staging area's index.json, checked against index.json.sha256; StageError if missing."""
    actual, stated = StagingArea(directory).index_sha256()
    if stated is None or actual is None:
        raise StageError("the {} staging area {} has no index.json and index.json.sha256; run 'cvmfs-pilot factory "
                         "stage' first".format(what, directory))
    if actual != stated:
        raise StageError("{}/index.json does not match its index.json.sha256 (an interrupted stage?); run "
                         "'cvmfs-pilot factory stage' again".format(directory))
    return stated
