"""How to provide /cvmfs on a node: a pure function of the probe, the requirement and the staged distributions.

Modes, best first:

* ``native``: the host already serves the repositories at /cvmfs; nothing to mount.
* ``userns``: mounts inside a private user + mount namespace; /cvmfs is visible to the jobs, and the kernel
  removes everything when the pilot dies, even by ``kill -9``.
* ``fusermount``: mounts through the setuid fusermount under ``<work dir>/cvmfs``, exported to jobs as
  ``CVMFS_MOUNT_DIR``; a ``kill -9`` can leave stale mounts for the next pilot to clean up.
* ``export``: no FUSE at all; ``fs get`` copies the subtrees the job declares.
* ``none``: no CVMFS.

Requirement levels (any case):

* ``required``: the best available mode; ``none`` is a failure.
* ``preferred``: the best available mode, else ``none`` without failing.
* ``optional``: only what costs the node nothing and leaves nothing behind, native or userns; else ``none``
  without failing. fusermount (mounts visible to the user's other processes, stale after kill -9) and export
  (bulk downloads) are not worth it for a job that runs without CVMFS.
* ``never``: ``none``.

Engine: the host's own client for native; ``python`` (our client, ``fs get``) for export; otherwise the
upstream ``cvmfs2`` when a staged distribution is built for this platform (or one it can borrow, see
:mod:`osinfo`) and architecture and has not been seen failing here (``"runs": false``), else ``python``.
"""

import collections
import os

from cvmfs_pilot.node import osinfo
from cvmfs_pilot.node.probe import GLIDEIN_USERNS, YES

NATIVE, USERNS, FUSERMOUNT, EXPORT, NONE = "native", "userns", "fusermount", "export", "none"
MODES = (NATIVE, USERNS, FUSERMOUNT, EXPORT, NONE)
CVMFS2, PYTHON, HOST = "cvmfs2", "python", "host"
ENGINES = (CVMFS2, PYTHON)
REQUIRED, PREFERRED, OPTIONAL, NEVER = "required", "preferred", "optional", "never"
REQUIREMENTS = (REQUIRED, PREFERRED, OPTIONAL, NEVER)
CANDIDATES = {REQUIRED: (NATIVE, USERNS, FUSERMOUNT, EXPORT), PREFERRED: (NATIVE, USERNS, FUSERMOUNT, EXPORT),
              OPTIONAL: (NATIVE, USERNS), NEVER: ()}
MOUNT_DIR_NAME = "cvmfs"  # fusermount mode: <work dir>/cvmfs

Decision = collections.namedtuple("Decision", "mode engine failed reasons attributes")
Decision.__doc__ = """``failed``: the requirement cannot be met (the pilot must stop); ``reasons``: why, in
order; ``attributes``: the GlideinWMS attributes to publish."""


class DecisionError(ValueError):
    """The request itself is wrong (an unknown level, mode or engine)."""


def requirement_level(text):
    level = text.strip().lower()
    if level not in REQUIREMENTS:
        raise DecisionError("unknown requirement level {!r}; use one of {} (in any case)".format(
            text, ", ".join(REQUIREMENTS)))
    return level


def availability(mode, probe, subtrees):
    """(whether ``mode`` can work on the probed node, why)."""
    if mode == NATIVE:
        check = probe["cvmfs"]
        return check.result == YES, "/cvmfs: " + check.reason
    if mode == USERNS:
        for name in ("user_namespaces", "fuse_in_user_namespace"):
            if probe.result(name) != YES:
                return False, "{}: {}".format(name, probe[name].reason)
        return True, "user namespaces work and mount FUSE"
    if mode == FUSERMOUNT:
        for name in ("dev_fuse", "fusermount"):
            if probe.result(name) != YES:
                return False, "{}: {}".format(name, probe[name].reason)
        return True, "/dev/fuse is usable and {} is setuid root".format(probe["fusermount"].details["path"])
    if mode == EXPORT:
        if not subtrees:
            return False, "the job declares no subtrees to export"
        return True, "the job declares subtrees to export: " + ", ".join(subtrees)
    return True, "no CVMFS"


def matching_distributions(probe, distributions):
    """The cvmfs2 distributions built for the probed platform (or one it borrows) and architecture, best first,
    leaving out those seen failing here."""
    platforms = osinfo.build_platforms(probe["os"].details.get("platform"))
    arch = probe.result("arch")
    found = [d for d in distributions if d.get("engine") == CVMFS2 and d.get("arch") == arch
             and d.get("platform") in platforms and d.get("runs") is not False]
    return sorted(found, key=lambda d: platforms.index(d["platform"]))


def choose_engine(mode, probe, distributions, forced_engine):
    """(engine, reason, error): error is a message when ``forced_engine`` cannot serve ``mode``."""
    if mode == NONE:
        return None, None, None
    if mode == NATIVE:
        note = " (--engine {} does not apply)".format(forced_engine) if forced_engine else ""
        return HOST, "engine: the host's own client serves /cvmfs" + note, None
    if mode == EXPORT:
        if forced_engine == CVMFS2:
            return None, None, "the export mode copies with our python client; cvmfs2 cannot export without FUSE"
        return PYTHON, "engine python: exports with 'fs get'", None
    where = "{}-{}".format(probe.result("os"), probe.result("arch"))
    matching = matching_distributions(probe, distributions)
    if forced_engine == PYTHON:
        return PYTHON, "engine python: forced by --engine", None
    if matching:
        d = matching[0]
        reason = "engine cvmfs2: the staged {}-{} distribution{} fits {}".format(
            d["platform"], d["arch"], " " + d["name"] if d.get("name") else "", where)
        return CVMFS2, reason + (" (forced by --engine)" if forced_engine else ""), None
    if forced_engine == CVMFS2:
        return None, None, "--engine cvmfs2: no staged cvmfs2 distribution fits {} (or all failed here)".format(
            where)
    return PYTHON, "engine python: no staged cvmfs2 distribution fits {}".format(where), None


def _attributes(mode, probe):
    attributes = {GLIDEIN_USERNS: probe.glidein_attributes()[GLIDEIN_USERNS]}
    if mode == FUSERMOUNT and probe.work_dir:
        attributes["CVMFS_MOUNT_DIR"] = os.path.join(probe.work_dir, MOUNT_DIR_NAME)
    return attributes


def decide(probe, requirement, distributions=(), forced_mode=None, forced_engine=None, subtrees=()):
    """The Decision for a Probe. ``distributions``: the staged ones, dicts with engine, platform, arch (as in a
    staging index.json) and optionally ``runs`` (False once seen failing here); ``subtrees``: what the job
    declares for the export mode."""
    level = requirement_level(requirement)
    if forced_mode is not None and forced_mode not in MODES:
        raise DecisionError("unknown mode {!r}; use one of {}".format(forced_mode, ", ".join(MODES)))
    if forced_engine is not None and forced_engine not in ENGINES:
        raise DecisionError("unknown engine {!r}; use one of {}".format(forced_engine, ", ".join(ENGINES)))
    reasons = ["requirement: " + level]
    if level == NEVER:
        mode = NONE
        reasons.append("mode none: the requirement is never" +
                       (" (--mode {} does not apply)".format(forced_mode) if forced_mode else ""))
    elif forced_mode is not None:
        mode = forced_mode
        works, why = availability(mode, probe, subtrees)
        reasons.append("mode {}: forced by --mode{}".format(
            mode, "" if works else "; the probe says it will not work: " + why))
    else:
        mode = NONE
        for candidate in CANDIDATES[level]:
            works, why = availability(candidate, probe, subtrees)
            reasons.append("mode {}: {}, {}".format(candidate, "chosen" if works else "not available", why))
            if works:
                mode = candidate
                break
        if mode == NONE:
            reasons.append("mode none: no mode that {} allows works here".format(level))
    engine, why, error = choose_engine(mode, probe, distributions, forced_engine)
    if error:
        reasons.append("error: " + error)
        return Decision(NONE, None, True, reasons, _attributes(NONE, probe))
    if why:
        reasons.append(why)
    failed = mode == NONE and level == REQUIRED
    if failed:
        reasons.append("error: CVMFS is required but cannot be provided on this node; see the reasons above")
    return Decision(mode, engine, failed, reasons, _attributes(mode, probe))


def to_dict(decision):
    return dict(decision._asdict())
