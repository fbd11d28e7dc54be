"""Submitting pilots, following them, removing them: ``cvmfs-pilot submit``, ``status`` and ``remove``.

Every pilot has a record directory ``<work_dir>/pilots/<entry>/<id>/`` (id: ``<entry>-<UTC time>-<n>``) with

* ``pilot.json``: the record (id, entry, provider, job id, submission time, the pilot's command line, what the
  batch system was given, and provider details such as the local pid and its start time);
* ``glidein_startup.sh``: the staged bootstrap, copied; the batch job's executable;
* ``credential/<name>``: a copy of the entry's credential (mode 0600), when it has one;
* ``work/`` (below which the pilot makes its private work directory), ``stdout``, ``stderr`` and the pilot's
  ``report.json`` (docs/glidein.md), for providers on a shared file system; htcondor brings them back here.

The pilot's command line is docs/glidein.md's: ``glidein_startup.sh -factory URLS -factory-sha256 HEX -entry
NAME [-frontend URLS -frontend-sha256 HEX] -id ID -work-dir DIR -report FILE [-credential FILE] [-debug]``, with
the index hashes read from the staging areas: stage before submitting.
"""

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

from cvmfs_pilot.dist.staging import utc_iso, write_atomically

from .errors import FactoryError, SubmitError
from .providers import ACTIVE_STATES, provider_for
from .staging import BOOTSTRAP, FILES, StagingArea, staged_index_sha256

RECORD = "pilot.json"
REPORT = "report.json"
CREDENTIAL_DIR = "credential"
REPORT_FIELDS = ("outcome", "failure_class", "duration", "reason", "exit_code")


@dataclass
class PilotRecord:
    """One submitted pilot, as ``pilot.json`` keeps it."""

    id: str
    entry: str
    provider: str
    directory: Path
    factory: str
    submitted: str  # UTC, ISO 8601
    command: list  # the pilot's command line: the bootstrap and its arguments
    index_sha256: str
    frontend_sha256: Optional[str] = None
    credential: Optional[str] = None  # the copy in the record directory
    job_id: Optional[str] = None
    submission: object = None  # what the batch system was given: an argv list or a submit description
    details: dict = field(default_factory=dict)  # the provider's own (local: pid, start_time)
    removed: Optional[str] = None  # when 'remove' took the pilot away

    @property
    def bootstrap(self):
        return self.directory / BOOTSTRAP

    @property
    def work_dir(self):
        return self.directory / "work"

    @property
    def report_path(self):
        return self.directory / REPORT

    @property
    def stdout_path(self):
        return self.directory / "stdout"

    @property
    def stderr_path(self):
        return self.directory / "stderr"

    @property
    def credential_path(self):
        """The credential copy, or None when the pilot has none."""
        return Path(self.credential) if self.credential else None

    def report(self):
        """The pilot's final report (a dict), or None while there is none (or it is not valid JSON yet)."""
        try:
            report = json.loads(self.report_path.read_bytes())
        except (OSError, ValueError):
            return None
        return report if isinstance(report, dict) else None

    def save(self):
        document = {name: value for name, value in asdict(self).items() if name != "directory"}
        write_atomically(self.directory / RECORD, (json.dumps(document, indent=2) + "\n").encode())

    @classmethod
    def load(cls, directory):
        directory = Path(directory)
        document = json.loads((directory / RECORD).read_bytes())
        known = {f.name for f in fields(cls)}
        return cls(directory=directory, **{k: v for k, v in document.items() if k in known and k != "directory"})


def _staged_entry_check(config, entry):
    """The factory index hash and the staged bootstrap; SubmitError if they are missing or the entry is not staged."""
    try:
        factory_sha256 = staged_index_sha256(config.staging_dir, "factory")
    except FactoryError as exc:
        raise SubmitError(str(exc)) from None
    area = StagingArea(config.staging_dir)
    staged = area.read_document() or {}
    if entry.name not in staged.get("entries", {}):
        raise SubmitError("entry {} is not in the staged index {}/index.json (it was added after the last stage); run "
                          "'cvmfs-pilot factory stage --config {}'".format(entry.name, config.staging_dir, config.path))
    bootstrap = area.path(FILES) / BOOTSTRAP
    listed = staged.get("files", {}).get(BOOTSTRAP, {}).get("sha256")
    try:
        actual = hashlib.sha256(bootstrap.read_bytes()).hexdigest()
    except FileNotFoundError:
        actual = None
    if actual is None or actual != listed:
        problem = "is missing" if actual is None else "differs from the one the staged index lists"
        raise SubmitError("{} {}; run 'cvmfs-pilot factory stage --config {}'".format(bootstrap, problem, config.path))
    frontend_sha256 = None
    if config.frontend is not None:
        try:
            frontend_sha256 = staged_index_sha256(config.frontend.staging_dir, "frontend")
        except FactoryError as exc:
            raise SubmitError(str(exc)) from None
    return factory_sha256, frontend_sha256, bootstrap


def _new_record_directory(entry_dir, entry, stamp, number, dry_run):
    """(id, directory, number) of the next free pilot id from number on; the directory is made unless dry_run."""
    while True:
        pilot_id = "{}-{}-{}".format(entry, stamp, number)
        directory = entry_dir / pilot_id
        if dry_run:
            if not directory.exists():
                return pilot_id, directory, number
        else:
            try:
                directory.mkdir(parents=True)
                return pilot_id, directory, number
            except FileExistsError:
                pass
        number += 1


def pilot_arguments(config, entry, record, provider, factory_sha256, frontend_sha256, credential, debug=False):
    """The bootstrap's arguments (docs/glidein.md), with paths as the provider's pilots see them."""
    work_dir, report, credential_argument = provider.pilot_paths(record, credential)
    arguments = ["-factory", ",".join(config.staging_urls), "-factory-sha256", factory_sha256, "-entry", entry.name]
    if config.frontend is not None:
        arguments += ["-frontend", ",".join(config.frontend.staging_urls), "-frontend-sha256", frontend_sha256]
    arguments += ["-id", record.id]
    if work_dir is not None:
        arguments += ["-work-dir", work_dir]
    arguments += ["-report", report]
    if credential_argument is not None:
        arguments += ["-credential", credential_argument]
    if debug:
        arguments.append("-debug")
    return arguments


def _copy_into_record(record, bootstrap, credential):
    """Copy the bootstrap (mode 0755) and the credential (mode 0600) into the record directory; make work/."""
    shutil.copyfile(bootstrap, record.bootstrap)
    record.bootstrap.chmod(0o755)
    record.work_dir.mkdir(mode=0o755)
    if credential is not None:
        record.credential_path.parent.mkdir(mode=0o700)
        record.credential_path.touch(mode=0o600)
        shutil.copyfile(credential, record.credential_path)


def submit(config, entry, count, dry_run=False, debug=False):
    """Submit count pilots to the entry named entry; [PilotRecord] (their job ids set).

    dry_run: make nothing and submit nothing; each record's ``submission`` holds what would be submitted (see
    :func:`describe`). debug: the pilots keep their work directories (``-debug``)."""
    entry = config.entry(entry)
    if count < 1:
        raise SubmitError("--count is {}; submit at least one pilot".format(count))
    factory_sha256, frontend_sha256, bootstrap = _staged_entry_check(config, entry)
    credential = entry.credential
    if credential is not None and not credential.is_file():
        raise SubmitError("{}: entries.{}.credential: {} is not a file; renew the credential or fix the "
                          "path".format(config.path, entry.name, credential))
    provider = provider_for(entry.provider, entry.provider_options)
    entry_dir = config.pilots_dir / entry.name
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    records, number = [], 1
    for _ in range(count):
        pilot_id, directory, number = _new_record_directory(entry_dir, entry.name, stamp, number, dry_run)
        number += 1
        record = PilotRecord(id=pilot_id, entry=entry.name, provider=entry.provider, directory=directory,
                             factory=config.name, submitted=utc_iso(time.time()), command=[],
                             index_sha256=factory_sha256, frontend_sha256=frontend_sha256)
        if credential is not None:
            record.credential = str(directory / CREDENTIAL_DIR / credential.name)
        record.command = [str(record.bootstrap)] + pilot_arguments(config, entry, record, provider, factory_sha256,
                                                                   frontend_sha256, record.credential_path, debug)
        if dry_run:
            record.submission = provider.submission(record)
            records.append(record)
            continue
        try:
            _copy_into_record(record, bootstrap, credential)
            record.submission = provider.submission(record)
            record.job_id = provider.submit(record)
            record.save()
        except (FactoryError, OSError) as exc:
            shutil.rmtree(directory, ignore_errors=True)
            done = "; submitted before it: {}".format(", ".join(r.id for r in records)) if records else ""
            reason = exc if isinstance(exc, FactoryError) else "{}: {}".format(exc.filename or "", exc.strerror)
            raise SubmitError("pilot {} of {} to entry {} failed: {}{}".format(len(records) + 1, count, entry.name,
                                                                              reason, done)) from None
        records.append(record)
    return records


def describe(config, record):
    """What submit(dry_run=True) would give the batch system for record, as text."""
    entry = config.entry(record.entry)
    return provider_for(entry.provider, entry.provider_options).describe(record)


def find_records(config, entry=None):
    """[PilotRecord] below work_dir/pilots (of one entry, or all), oldest first."""
    if entry is not None:
        config.entry(entry)
    base = config.pilots_dir
    entry_dirs = [base / entry] if entry is not None else sorted(p for p in base.glob("*") if p.is_dir())
    records = []
    for entry_dir in entry_dirs:
        for path in entry_dir.glob("*/" + RECORD):
            try:
                records.append(PilotRecord.load(path.parent))
            except (OSError, ValueError, TypeError):
                continue  # a record being written, or not ours
    return sorted(records, key=lambda r: (r.submitted, r.id))


def _provider_of(config, record):
    options = config.entries[record.entry].provider_options if record.entry in config.entries else {}
    if record.entry in config.entries and config.entries[record.entry].provider != record.provider:
        options = {}  # the entry changed provider since: ask the one the pilot was submitted to
    return provider_for(record.provider, options)


def pilot_status(config, record):
    """A dict: the pilot's id, entry, provider, job id, submission time, state (see providers.Provider.state),
    and from its report (else None): outcome, failure_class, duration, reason, exit_code; its directory."""
    state = _provider_of(config, record).state(record)
    report = record.report() or {}
    result = {"id": record.id, "entry": record.entry, "provider": record.provider, "job_id": record.job_id,
              "submitted": record.submitted, "state": state}
    result.update({name: report.get(name) for name in REPORT_FIELDS})
    result["directory"] = str(record.directory)
    return result


def status(config, entry=None):
    """The status dict of every pilot (of one entry, or all), oldest first; see :func:`pilot_status`."""
    return [pilot_status(config, record) for record in find_records(config, entry)]


def active_pilot_ids(config, entry):
    """Ids of the entry's pilots that the batch system still has."""
    return [item["id"] for item in status(config, entry) if item["state"] in ACTIVE_STATES]


def remove(config, ids):
    """Remove the pilots with these ids through their providers; [{"id", "state" (before), "removed"}]."""
    records = {record.id: record for record in find_records(config)}
    unknown = [pilot_id for pilot_id in ids if pilot_id not in records]
    if unknown:
        raise FactoryError("no pilot {} below {}; 'cvmfs-pilot status' lists them".format(
            ", ".join(unknown), config.pilots_dir))
    results = []
    for pilot_id in dict.fromkeys(ids):
        record = records[pilot_id]
        provider = _provider_of(config, record)
        before = provider.state(record)
        removed = False
        if before in ACTIVE_STATES:
            removed = provider.remove(record)
            if removed:
                record.removed = utc_iso(time.time())
                record.save()
        results.append({"id": pilot_id, "state": before, "removed": removed})
    return results
