"""The ``htcondor`` provider: each pilot is an HTCondor job, in the vanilla universe or the grid universe
(through an HTCondor-CE, ``grid_resource = "condor ce.example.org ce.example.org:9619"``).

HTCondor transfers the files: the bootstrap (the executable) and the credential copy go in with the job, the
pilot runs in the job's scratch directory (``$_CONDOR_SCRATCH_DIR``, the bootstrap's default work directory, so
there is no ``-work-dir``), and writes ``report.json`` there, which comes back on exit into the record
directory (``initialdir``), beside stdout, stderr and the job's event log. So ``-report`` and ``-credential`` are
file names relative to the directory the job starts in.

The submit description is validated by the HTCondor Python bindings (``htcondor2``, or the older ``htcondor``
module), which need no running HTCondor; submitting, querying and removing need a reachable schedd.
"""

from ..errors import ProviderError, SubmitError
from . import ENDED, HELD, QUEUED, RUNNING, UNKNOWN, Provider

REPORT_NAME = "report.json"
EVENT_LOG = "condor.log"
# JobStatus: 1 idle, 2 running, 3 removed, 4 completed, 5 held, 6 transferring output, 7 suspended
JOB_STATUS = {1: QUEUED, 2: RUNNING, 3: ENDED, 4: ENDED, 5: HELD, 6: RUNNING, 7: RUNNING}


def bindings():
    """The HTCondor Python bindings module (htcondor2, else htcondor); ProviderError when not installed."""
    try:
        import htcondor2 as bindings
    except ImportError:
        try:
            import htcondor as bindings
        except ImportError:
            raise ProviderError("the HTCondor Python bindings are not installed; install them with "
                                "'pip install htcondor' (cvmfs-pilot[server] does)") from None
    return bindings


def condor_arguments(argv):
    """argv in the submit language's new arguments syntax: double-quoted, arguments separated by spaces, an
    argument with spaces or quotes in single quotes, quotes doubled."""
    words = []
    for argument in argv:
        argument = argument.replace('"', '""')
        if not argument or any(c in argument for c in " \t'"):
            argument = "'" + argument.replace("'", "''") + "'"
        words.append(argument)
    return '"' + " ".join(words) + '"'


def classad_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class HTCondorProvider(Provider):
    name = "htcondor"
    shared_file_system = False

    def pilot_paths(self, record, credential):
        return None, REPORT_NAME, credential.name if credential is not None else None

    def submission(self, record):
        """The submit description as a dict of submit commands."""
        description = {
            "universe": self.options.get("universe", "vanilla"),
            "executable": record.command[0],
            "arguments": condor_arguments(record.command[1:]),
            "initialdir": str(record.directory),
            "output": str(record.stdout_path),
            "error": str(record.stderr_path),
            "log": str(record.directory / EVENT_LOG),
            "should_transfer_files": "YES",
            "when_to_transfer_output": "ON_EXIT",
        }
        if self.options.get("grid_resource"):
            description["grid_resource"] = self.options["grid_resource"]
        if record.credential_path is not None:
            description["transfer_input_files"] = str(record.credential_path)
        if self.options.get("requirements"):
            description["requirements"] = self.options["requirements"]
        description["+cvmfs_pilot_factory"] = classad_string(record.factory)
        description["+cvmfs_pilot_entry"] = classad_string(record.entry)
        description["+cvmfs_pilot_id"] = classad_string(record.id)
        description.update(self.options.get("extra") or {})
        return description

    def _submit_object(self, record):
        htcondor = bindings()
        try:
            return htcondor.Submit(self.submission(record))
        except Exception as exc:  # the bindings raise ValueError, HTCondorException, ...
            raise SubmitError("HTCondor refused the submit description of entry {}: {}; check its "
                              "provider_options".format(record.entry, exc)) from None

    def describe(self, record):
        return str(self._submit_object(record))

    def _schedd(self, what):
        htcondor = bindings()
        try:
            return htcondor.Schedd()
        except Exception as exc:
            raise ProviderError("cannot {}: no HTCondor schedd is reachable from here ({}); run this on an HTCondor "
                                "access point (submit host), or use --dry-run to see the submit "
                                "description".format(what, exc)) from None

    def submit(self, record):
        submit = self._submit_object(record)
        try:
            result = self._schedd("submit pilots").submit(submit, count=1)
        except ProviderError as exc:
            raise SubmitError(str(exc)) from None
        except Exception as exc:
            raise SubmitError("the schedd refused the pilot of entry {}: {}".format(record.entry, exc)) from None
        return str(result.cluster())

    def batch_state(self, record):
        try:
            schedd = self._schedd("query pilots")
            ads = schedd.query(constraint="ClusterId == {}".format(int(record.job_id)), projection=["JobStatus"])
        except Exception:
            return UNKNOWN
        if not ads:
            return ENDED  # left the queue: completed or removed
        return JOB_STATUS.get(int(ads[0].get("JobStatus", 0)), UNKNOWN)

    def cancel(self, record):
        htcondor = bindings()
        schedd = self._schedd("remove pilot {}".format(record.id))
        try:
            schedd.act(htcondor.JobAction.Remove, "ClusterId == {}".format(int(record.job_id)))
        except Exception as exc:
            raise ProviderError("the schedd did not remove pilot {} (job {}): {}".format(record.id, record.job_id,
                                                                                       exc)) from None


PROVIDER = HTCondorProvider
