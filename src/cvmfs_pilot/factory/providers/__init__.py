"""Providers: the batch systems pilots are submitted to, behind one small interface.

A provider turns a pilot record (its directory, the bootstrap copied into it, the pilot's command line) into a
batch job: :meth:`Provider.submit` returns the job id, :meth:`Provider.state` says where the pilot is, and
:meth:`Provider.remove` takes it away. ``local`` runs pilots as detached processes on this host, ``slurm`` through
sbatch, ``htcondor`` through a schedd.
"""

import importlib

QUEUED = "queued"
RUNNING = "running"
HELD = "held"
ENDED = "ended"  # the batch job is over: the pilot is finished, lost or removed, see Provider.state
UNKNOWN = "unknown"  # the batch system cannot be asked
FINISHED = "finished"  # ended, and its report is there
LOST = "lost"  # ended with no report
REMOVED = "removed"  # removed (cvmfs-pilot remove) before it wrote a report
ACTIVE_STATES = (QUEUED, RUNNING, HELD, UNKNOWN)

MODULES = {"local": "cvmfs_pilot.factory.providers.local", "slurm": "cvmfs_pilot.factory.providers.slurm",
           "htcondor": "cvmfs_pilot.factory.providers.htcondor"}


class Provider:
    """The interface; subclasses implement submit, describe, batch_state and cancel."""

    name = ""
    shared_file_system = True  # pilots see the record directory at the same path (False: files are transferred)

    def __init__(self, options):
        self.options = dict(options)

    def pilot_paths(self, record, credential):
        """(work dir or None, report file, credential argument or None) for the pilot's command line."""
        return (str(record.work_dir), str(record.report_path),
                str(credential) if credential is not None else None)

    def submission(self, record):
        """What the batch system is given (an argv list, or a dict of submit commands); JSON-serializable."""
        raise NotImplementedError

    def describe(self, record):
        """The submission as text, for ``submit --dry-run``."""
        raise NotImplementedError

    def submit(self, record):
        """Submit the pilot of record; returns the job id (a string). May add record.details."""
        raise NotImplementedError

    def batch_state(self, record):
        """QUEUED, RUNNING, HELD, ENDED or UNKNOWN, as the batch system sees the job."""
        raise NotImplementedError

    def cancel(self, record):
        """Take the job away from the batch system; the pilot gets SIGTERM, as from any batch system."""
        raise NotImplementedError

    def state(self, record):
        """The pilot's state: QUEUED, RUNNING, HELD or UNKNOWN while the batch system has it; then FINISHED
        (its report is there), REMOVED (removed before it reported) or LOST."""
        if record.job_id is None:
            return LOST  # never reached the batch system
        batch = self.batch_state(record)
        if batch not in (ENDED, UNKNOWN) or (batch == UNKNOWN and record.report() is None):
            return batch
        if record.report() is not None:
            return FINISHED
        return REMOVED if record.removed else LOST

    def remove(self, record):
        """Remove the pilot if the batch system still has it; returns whether there was anything to remove."""
        if self.batch_state(record) == ENDED:
            return False
        self.cancel(record)
        return True


def provider_for(name, options=None):
    """The Provider named name (local, slurm or htcondor) with its options (an entry's provider_options)."""
    module = importlib.import_module(MODULES[name])
    return module.PROVIDER(options or {})
