"""Providing CVMFS to a command: probe the node, decide the mode and engine, fetch the distribution the engine
needs, and run the command in the first mode that sets up (``node exec``, and the pilot's CVMFS step)."""

import logging
import os

from cvmfs_pilot.node import decide, dist_fetch, engines, execute, osinfo, probe, staging_index

log = logging.getLogger(__name__)


class NotProvided(Exception):
    """No mode that the requirement allows could be set up; the command did not run."""


class ProvideOptions(object):
    """What ``node exec`` takes on its command line (see its --help)."""

    def __init__(self, work_dir, repositories=(), require=decide.REQUIRED, mode=None, engine=None, config_dir=None,
                 overrides=None, staging=None, index_sha256=None, source=None, dist=None, cache=None, subtrees=(),
                 pid_namespace="auto"):
        self.work_dir = os.path.abspath(work_dir)
        self.repositories = list(repositories)
        self.require = require
        self.mode = mode
        self.engine = engine
        self.config_dir = config_dir
        self.overrides = dict(overrides or {})
        self.staging = staging
        self.index_sha256 = index_sha256
        self.source = source
        self.dist = os.path.abspath(dist) if dist else None
        self.cache = os.path.abspath(cache or dist_fetch.default_cache())
        self.subtrees = list(subtrees)
        self.pid_namespace = pid_namespace


def this_node():
    """(platforms whose builds run here, best first; architecture)."""
    try:
        with open("/etc/os-release") as handle:
            node_os = probe.check_os(handle.read())
    except OSError:
        node_os = probe.check_os("")
    return osinfo.build_platforms(node_os.details.get("platform")), probe.check_arch(os.uname().machine).result


class Provider(object):
    """The plan for one command: ``decision`` (decide.Decision) and ``node`` (the probe) are known on creation;
    distributions are fetched only for the mode that is tried."""

    def __init__(self, options):
        if options.dist and options.staging:
            raise ValueError("give either a distribution directory or a staging area, not both")
        self.options = options
        self.entries, self.downloader = [], None
        if options.staging:
            if not options.index_sha256:
                raise ValueError("a staging area needs the SHA-256 of its index.json")
            self.downloader = dist_fetch.Downloader(options.staging)
            self.entries = staging_index.parse_index(dist_fetch.fetch_index(self.downloader, options.index_sha256,
                                                                            options.cache))
        self.distributions = [dict(e._asdict()) for e in self.entries]
        if options.dist:
            self.distributions = [dict(dist_fetch.read_dist_json(options.dist), name=os.path.basename(options.dist))]
        self.node = probe.probe(options.work_dir, options.repositories or None)
        self.decision = decide.decide(self.node, options.require, self.distributions, options.mode, options.engine,
                                      options.subtrees)
        self._engines = {}

    @property
    def pid_namespace(self):
        choice = {"yes": True, "no": False}.get(self.options.pid_namespace)
        return self.node.result("proc_masked") != probe.YES if choice is None else choice

    def modes(self):
        """The decided mode, then (unless forced) the next ones the requirement allows and the probe says work;
        none last unless CVMFS is required."""
        if self.decision.failed:
            return []
        if self.options.mode:
            return [self.decision.mode]
        level = decide.requirement_level(self.options.require)
        candidates = decide.CANDIDATES[level]
        after = candidates[candidates.index(self.decision.mode) + 1:] if self.decision.mode in candidates else ()
        modes = [self.decision.mode] + [m for m in after if decide.availability(m, self.node,
                                                                                 self.options.subtrees)[0]]
        if level != decide.REQUIRED and decide.NONE not in modes:
            modes.append(decide.NONE)
        return modes

    def engine_name(self, mode):
        if mode == self.decision.mode:
            return self.decision.engine
        return decide.choose_engine(mode, self.node, self.distributions, self.options.engine)[0]

    def engine(self, mode):
        """The engine object that mounts in mode (None for the modes that mount nothing)."""
        if mode not in (decide.USERNS, decide.FUSERMOUNT):
            return None
        name = self.engine_name(mode)
        if name not in self._engines:
            self._engines[name] = self._make_engine(name)
        return self._engines[name]

    def distribution(self, name):
        """(path, dist.json) of the distribution for engine name, fetched and unpacked, or None."""
        if self.options.dist:
            return self.options.dist, dist_fetch.read_dist_json(self.options.dist)
        if not self.entries:
            return None
        platforms, arch = this_node()
        entry = staging_index.choose(self.entries, name, self.options.source, platforms, arch)
        path, dist, _ = dist_fetch.install(self.downloader, entry, self.options.cache)
        return path, dist

    def _make_engine(self, name):
        found = self.distribution(name)
        if found is None:
            return engines.PythonEngine(self.options.config_dir or "/etc/cvmfs")
        root, dist = found
        if dist.get("engine") == engines.CVMFS2:
            return engines.Cvmfs2Engine(root, dist)
        return engines.PythonEngine(self.options.config_dir or os.path.join(root, dist.get("config_dir") or
                                                                            "etc/cvmfs"))

    def default_repositories(self):
        """The repositories the distribution's configuration source mounts by default (none without one)."""
        if not (self.options.dist or self.entries) or self.decision.engine is None:
            return []
        found = self.distribution(self.engine_name(self.decision.mode) or engines.PYTHON)
        return list(found[1].get("default_repositories") or []) if found else []

    def run(self, command, environ=None, on_attempt=None):
        """Run command in the first mode that sets up; its exit status. ``on_attempt(mode, engine)`` is called
        before each try. NotProvided with every mode's failure when none does."""
        failures = list(self.decision.reasons) if self.decision.failed else []
        for mode in self.modes():
            engine = self.engine(mode)
            if mode in (decide.USERNS, decide.FUSERMOUNT) and not self.options.repositories:
                raise ValueError("name the repositories to mount")
            request = execute.ExecRequest(self.options.work_dir, self.options.repositories, command, engine,
                                          self.options.overrides, environ=environ, subtrees=self.options.subtrees,
                                          export_config_dir=self.options.config_dir or "/etc/cvmfs")
            log.info("mode %s, engine %s", mode, engine.name if engine else "none")
            if on_attempt is not None:
                on_attempt(mode, engine)
            try:
                return execute.run(request, mode, self.pid_namespace)
            except execute.SetupFailed as exc:
                failures.append("mode {} failed: {}".format(mode, exc))
                log.warning("mode %s failed: %s", mode, exc)
        raise NotProvided("CVMFS could not be provided (requirement {}): {}".format(
            self.options.require, "; ".join(failures) or "no mode applies"))
