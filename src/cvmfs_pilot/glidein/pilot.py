"""The pilot (docs/glidein.md): staging areas verified, files downloaded and verified before anything runs,
glidein_config and the GlideinWMS helpers, scripts in GlideinWMS order, CVMFS through the node layer, payload
under lifetime limits, cleanup however it ends, and a report.

The pilot runs in two parts. The outer part (``glidein run``) does everything up to the CVMFS step, then runs
the inner part (``glidein continue STATE``) as the command that the node layer gives CVMFS to: inside the user
namespace in userns mode, with ``CVMFS_MOUNT_DIR`` in fusermount mode, as a plain child otherwise. The inner part
(:mod:`inner`) runs at_file_list, the client file_list, after_file_list, the last script and the payload, and
writes its part of the report; the outer part merges it, runs the cleanup scripts and removes the work
directory.
"""

import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time

from cvmfs_pilot.glidein import credentials, glidein_config, helper_files, payload, staging
from cvmfs_pilot.glidein.inner import DEFAULT_GRACE, ScriptRunner, files_state
from cvmfs_pilot.glidein.report import CONFIG, SITE, PilotFailure, Report
from cvmfs_pilot.node import decide, dist_fetch, engines, probe, provide

log = logging.getLogger(__name__)

SOURCES = ("osg", "egi", "default", "none")
CLIENT_PREFIX = "CVMFS_CLIENT_"  # attributes CVMFS_CLIENT_X become the client parameter CVMFS_X


class PilotArguments(object):
    def __init__(self, factory, factory_sha256, entry, frontend=None, frontend_sha256=None, pilot_id=None,
                 work_dir=None, runtime_work_dir=None, credential=None, report=None, debug=False):
        self.factory = factory
        self.factory_sha256 = factory_sha256
        self.entry = entry
        self.frontend = frontend
        self.frontend_sha256 = frontend_sha256
        self.pilot_id = pilot_id or "pilot-{}-{}".format(int(time.time()), os.getpid())
        self.work_dir = work_dir and os.path.abspath(work_dir)
        self.runtime_work_dir = runtime_work_dir
        self.credential = credential and os.path.abspath(credential)  # relative: to where the pilot started
        self.report = report and os.path.abspath(report)
        self.debug = debug


# -- the outer part ---------------------------------------------------------------------------------------------

class Pilot(object):
    def __init__(self, arguments):
        self.args = arguments
        self.report = Report(arguments.pilot_id, arguments.entry)
        self.stop = payload.Stop()
        self.work_dir = None
        self.credential = None
        self.environ = dict(os.environ)
        self.attributes = {}
        self.factory_index = None
        self.runner = None

    def run(self):
        """The pilot's whole life; its exit code (0, or 10/11/12 by failure class)."""
        try:
            self._make_work_dir()
            self._outer()
        except PilotFailure as failure:
            self.report.fail(failure.failure_class, failure.reason)
        except Exception as exc:  # a bug or an unforeseen condition: reported, cleaned up
            log.exception("the pilot failed")
            self.report.fail(CONFIG, "internal error: {}: {}".format(type(exc).__name__, exc))
        finally:
            self._cleanup()
        code = self.report.finish()
        sys.stdout.write(self.report.text())
        sys.stdout.flush()
        if self.args.report:
            try:
                self.report.write(self.args.report)
            except OSError as exc:
                sys.stderr.write("cannot write the report to {}: {}\n".format(self.args.report, exc))
        return code

    def _make_work_dir(self):
        if self.args.runtime_work_dir:
            self.work_dir = os.path.abspath(self.args.runtime_work_dir)
        else:
            base = self.args.work_dir or os.environ.get("_CONDOR_SCRATCH_DIR") or tempfile.gettempdir()
            os.makedirs(base, exist_ok=True)
            self.work_dir = tempfile.mkdtemp(prefix="glidein_", dir=base)
        for sub in ("main", "entry", "client", "logs", "helpers"):
            os.makedirs(os.path.join(self.work_dir, sub), mode=0o700, exist_ok=True)

    def _outer(self):
        step = self.report.run_step
        factory = step("factory staging area", lambda: self._fetch("factory", self.args.factory,
                                                                   self.args.factory_sha256))
        self.report.data["factory"] = factory.name
        self.factory_index = factory
        frontend = None
        if self.args.frontend:
            frontend = step("frontend staging area", lambda: self._fetch("frontend", self.args.frontend,
                                                                         self.args.frontend_sha256))
        entry = factory.entries.get(self.args.entry)
        if entry is None:
            raise PilotFailure(CONFIG, "the factory index has no entry {!r} (it has: {})".format(
                self.args.entry, ", ".join(sorted(factory.entries)) or "none"))
        step("download and verify every file", lambda: self._download(factory, entry, frontend))
        runner = step("glidein_config", lambda: self._configure(factory, entry, frontend))
        if self.args.credential:
            step("credential", self._take_credential)
        runner.run_list(files_state(factory.lists["file_list"]), "main", "file_list")
        runner.run_list(files_state(entry["file_list"]), "entry", "file_list")
        runner.run_list(files_state(factory.lists["precvmfs_file_list"]), "main", "precvmfs_file_list")
        payload_commands = (frontend and frontend.payload) or entry["payload"] or factory.payload or []
        state = self._inner_state(factory, frontend, payload_commands)
        self._cvmfs_and_continue(state)

    def _take_credential(self):
        try:
            self.credential = credentials.take(self.args.credential, os.path.join(self.work_dir, "credential"))
        except (OSError, ValueError) as exc:
            raise PilotFailure(CONFIG, "the pilot's credential: {}".format(exc))
        self.environ.update(self.credential.environment())
        os.environ.update(self.credential.environment())  # the CVMFS engine's authorization helpers read it too
        return self.credential.describe(self._deadline())

    def _fetch(self, kind, urls, sha256):
        if not sha256:
            raise PilotFailure(CONFIG, "the {} staging area needs its index's SHA-256".format(kind))
        try:
            return staging.fetch_index(dist_fetch.mirror_list(urls), sha256, kind, self.work_dir)
        except staging.StagingError as exc:
            failure = SITE if "cannot download" in str(exc) and "SHA-256" not in str(exc) else CONFIG
            raise PilotFailure(failure, str(exc))

    def _download(self, factory, entry, frontend):
        try:
            main = [f for name in staging.LISTS for f in factory.lists[name]]
            if factory.last_script is not None:
                main.append(factory.last_script)
            staging.download_files(factory, main, os.path.join(self.work_dir, "main"))
            staging.download_files(factory, entry["file_list"], os.path.join(self.work_dir, "entry"))
            if frontend is not None:
                client = [f for name in staging.LISTS for f in frontend.lists[name]]
                staging.download_files(frontend, client, os.path.join(self.work_dir, "client"))
        except staging.StagingError as exc:
            raise PilotFailure(CONFIG, str(exc))
        return "all files match the hashes of their index"

    def _deadline(self):
        walltime = self._number("GLIDEIN_MAX_WALLTIME")
        return self.report.started + walltime if walltime else None

    def _number(self, key):
        value = self.attributes.get(key)
        if value in (None, ""):
            return None
        try:
            return float(value)
        except ValueError:
            raise PilotFailure(CONFIG, "the attribute {} = {!r} is not a number of seconds".format(key, value))

    def _configure(self, factory, entry, frontend):
        attributes = dict(factory.attributes)
        attributes.update(entry["attributes"])
        if frontend is not None:
            attributes.update(frontend.attributes)
        self.attributes = attributes
        helpers = helper_files.helpers_dir(os.path.join(self.work_dir, "helpers"))
        initial = dict(attributes)
        initial.update({
            "GLIDEIN_WORK_DIR": os.path.join(self.work_dir, "main"),
            "GLIDEIN_ENTRY_WORK_DIR": os.path.join(self.work_dir, "entry"),
            "GLIDECLIENT_WORK_DIR": os.path.join(self.work_dir, "client"),
            "GLIDEIN_Factory": factory.name, "GLIDEIN_Entry_Name": self.args.entry,
            "GLIDEIN_Name": self.args.pilot_id, "CONDOR_VARS_FILE": os.path.join(self.work_dir, "condor_vars.lst"),
            "DESCRIPTION_FILE": factory.path, "DESCRIPTION_ENTRY_FILE": factory.path,
            "TMP_DIR": os.path.join(self.work_dir, "tmp")})
        if frontend is not None:
            initial["GLIDECLIENT_DESCRIPTION_FILE"] = frontend.path
        initial.setdefault("GLIDEIN_CPUS", str(len(os.sched_getaffinity(0))))
        memory = probe.check_memory(_read("/proc/meminfo")).details.get("total_bytes")
        if memory:
            initial.setdefault("GLIDEIN_MaxMemMBs", str(memory >> 20))
        initial.update(helper_files.config_entries(helpers))
        os.makedirs(initial["TMP_DIR"], mode=0o700, exist_ok=True)
        with open(initial["CONDOR_VARS_FILE"], "a"):
            pass
        config_path = os.path.join(self.work_dir, "glidein_config")
        try:
            glidein_config.create(config_path, initial)
        except ValueError as exc:
            raise PilotFailure(CONFIG, "glidein_config: {}".format(exc))
        self.config_path = config_path
        self.runner = ScriptRunner(self.report, config_path, os.path.join(self.work_dir, "results.jsonl"),
                                   os.path.join(self.work_dir, "logs"), self.stop, self.environ)
        return self.runner

    def _inner_state(self, factory, frontend, payload_commands):
        main = factory.lists
        state = {"work_dir": self.work_dir, "glidein_config": self.config_path,
                 "results": self.runner.results_path, "logs": self.runner.logs_dir,
                 "report_part": os.path.join(self.work_dir, "report-inner.json"),
                 "steps": [["main", "at_file_list", files_state(main["at_file_list"])],
                           ["client", "file_list", files_state(frontend.lists["file_list"]) if frontend else []],
                           ["main", "after_file_list", files_state(main["after_file_list"])],
                           ["main", "last_script", files_state([factory.last_script] if factory.last_script
                                                                else [])]],
                 "payload": payload_commands, "deadline": self._deadline(),
                 "retire": (self.report.started + self._number("GLIDEIN_RETIRE_TIME")
                            if self._number("GLIDEIN_RETIRE_TIME") else None),
                 "grace": self._number("GLIDEIN_GRACE_TIME") or DEFAULT_GRACE}
        path = os.path.join(self.work_dir, "inner-state.json")
        with open(path, "w") as out:
            json.dump(state, out)
        self.inner_state_path = path
        return state

    # -- CVMFS ----------------------------------------------------------------------------------------------

    def _provide_options(self):
        config = self.runner.config
        source = (config.get("CVMFS_SRC") or "").strip().lower() or None
        if source is not None and source not in SOURCES:
            raise PilotFailure(CONFIG, "CVMFS_SRC {!r} is not one of {}".format(config.get("CVMFS_SRC"),
                                                                             ", ".join(SOURCES)))
        require = (config.get("GLIDEIN_CVMFS") or decide.PREFERRED).strip()
        mode = (config.get("GLIDEIN_CVMFS_MODE") or "").strip().lower() or None
        engine = (config.get("GLIDEIN_CVMFS_ENGINE") or "").strip().lower() or None
        try:
            decide.requirement_level(require)
            if mode is not None and mode not in decide.MODES:
                raise ValueError("GLIDEIN_CVMFS_MODE {!r} is not one of {}".format(mode, ", ".join(decide.MODES)))
            if engine is not None and engine not in decide.ENGINES:
                raise ValueError("GLIDEIN_CVMFS_ENGINE {!r} is not one of {}".format(engine,
                                                                                    ", ".join(decide.ENGINES)))
        except ValueError as exc:
            raise PilotFailure(CONFIG, str(exc))
        repositories = [r for r in re.split(r"[\s,:]+", config.get("GLIDEIN_CVMFS_REPOS") or "") if r]
        overrides = {"CVMFS_" + key[len(CLIENT_PREFIX):]: value for key, value in config.items().items()
                     if key.startswith(CLIENT_PREFIX) and len(key) > len(CLIENT_PREFIX)}
        staging_urls = config.get("CVMFS_DIST_STAGING")
        return provide.ProvideOptions(
            self.work_dir, repositories, require, mode, engine, config.get("GLIDEIN_CVMFS_CONFIG_DIR") or None,
            overrides, dist_fetch.mirror_list(staging_urls) if staging_urls else None,
            config.get("CVMFS_DIST_INDEX_SHA256") or None, source)

    def _cvmfs_and_continue(self, state):
        started = time.time()
        options = self._provide_options()
        try:
            provider = provide.Provider(options)
            if provider.decision.mode in (decide.USERNS, decide.FUSERMOUNT):
                defaults = provider.default_repositories()
                options.repositories += [r for r in defaults if r not in options.repositories]
        except (ValueError, OSError, dist_fetch.FetchError) as exc:
            self.report.step("cvmfs", "failed", started, str(exc))
            raise PilotFailure(CONFIG, "CVMFS: {}".format(exc))
        config = self.runner.config
        attributes = provider.node.glidein_attributes()
        config.update(attributes)
        condor_vars = glidein_config.CondorVars(config.get("CONDOR_VARS_FILE"))
        condor_vars.add(probe.GLIDEIN_USERNS, "S", "-", "+", "Y", "Y", "+")

        def on_attempt(mode, engine):
            used = {"GLIDEIN_CVMFS_MODE_USED": mode, "GLIDEIN_CVMFS_ENGINE_USED": engine.name if engine else
                    (decide.HOST if mode == decide.NATIVE else "none")}
            if mode in (decide.FUSERMOUNT, decide.EXPORT):
                used["CVMFS_MOUNT_DIR"] = os.path.join(self.work_dir, decide.MOUNT_DIR_NAME)
            elif mode in (decide.USERNS, decide.NATIVE):
                used["CVMFS_MOUNT_DIR"] = "/cvmfs"
            config.update(used)
            self.report.data["cvmfs"] = {"mode": mode, "engine": used["GLIDEIN_CVMFS_ENGINE_USED"],
                                         "repositories": options.repositories if mode != decide.NONE else [],
                                         "mount_dir": used.get("CVMFS_MOUNT_DIR"),
                                         "reasons": provider.decision.reasons}
            self.report.step("cvmfs", "ok", started, "mode {}, engine {}".format(
                mode, used["GLIDEIN_CVMFS_ENGINE_USED"]))

        command = engines.self_command() + ["glidein", "continue", self.inner_state_path]
        try:
            provider.run(command, environ=self.environ, on_attempt=on_attempt)
        except provide.NotProvided as exc:
            self.report.step("cvmfs", "failed", started, str(exc))
            raise PilotFailure(SITE, str(exc))
        except (ValueError, OSError, dist_fetch.FetchError) as exc:
            self.report.step("cvmfs", "failed", started, str(exc))
            raise PilotFailure(CONFIG, "CVMFS: {}".format(exc))
        try:
            with open(state["report_part"]) as handle:
                inner = json.load(handle)
        except (OSError, ValueError) as exc:
            raise PilotFailure(CONFIG, "the pilot's inner part left no report ({}); see its output".format(exc))
        self.report.merge(inner)
        if inner.get("failure_class"):
            raise PilotFailure(inner["failure_class"], inner.get("reason") or "the inner part failed")

    # -- the end ------------------------------------------------------------------------------------------

    def _cleanup(self):
        if self.runner is not None and self.factory_index is not None:
            for listed in files_state(self.factory_index.lists["cleanup"]):
                try:
                    self.runner.run_file(listed, "main", "cleanup")
                except PilotFailure as failure:
                    log.warning("cleanup script %s failed: %s", listed["name"], failure.reason)
        if self.work_dir and os.path.isdir(self.work_dir) and not self.args.debug:
            started = time.time()
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.report.step("remove the work directory", "ok" if not os.path.exists(self.work_dir) else "failed",
                             started)


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""
