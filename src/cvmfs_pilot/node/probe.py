"""What a worker node offers for providing /cvmfs: each check a small function returning a :class:`Check`.

Checks take what they read as arguments (file texts, paths, trial results), so tests feed them recorded inputs;
:func:`probe` gathers the live inputs. Results are ``yes``/``no``, ``error`` when the check could not decide,
``skipped`` when it does not apply; checks that measure something (os, arch, kernel, cpus, memory, disk) give
the value, with the exact numbers in ``details``.

``HAS_UNPRIVILEGED_USER_NAMESPACES`` is GlideinWMS's classification: ``enabled`` (the trial works and the kernel
has user namespaces), ``disabled`` (the kernel has them but they are off for us: a sysctl, AppArmor, seccomp),
``unavailable`` (the kernel has none), ``error`` (the trial works although the kernel seems to have none, or the
trial could not decide).
"""

import collections
import grp
import json
import os
import platform
import re
import shutil
import socket
import stat

from cvmfs_pilot.client import proxies
from cvmfs_pilot.fuse import mount
from cvmfs_pilot.node import osinfo, trial

YES, NO, ERROR, SKIPPED = "yes", "no", "error", "skipped"
FORMAT = 1  # of the probe record (to_dict)
GLIDEIN_USERNS = "HAS_UNPRIVILEGED_USER_NAMESPACES"
CONTAINER_TOOLS = ("apptainer", "singularity", "bwrap")
USERNS_SYSCTLS = ("user/max_user_namespaces", "kernel/unprivileged_userns_clone",
                  "kernel/apparmor_restrict_unprivileged_userns")
PROXY_TIMEOUT = 5.0

Check = collections.namedtuple("Check", "name result reason details")


class Probe(object):
    """The checks of one node, in order, and the work directory they were made for."""

    def __init__(self, checks, work_dir):
        self.checks = collections.OrderedDict((check.name, check) for check in checks)
        self.work_dir = work_dir

    def __getitem__(self, name):
        return self.checks[name]

    def result(self, name):
        return self.checks[name].result if name in self.checks else None

    def glidein_attributes(self):
        return {GLIDEIN_USERNS: self.checks["user_namespaces"].details["glidein"]}

    def to_dict(self):
        return {"format": FORMAT, "work_dir": self.work_dir,
                "checks": [dict(check._asdict()) for check in self.checks.values()],
                "glidein": self.glidein_attributes()}

    @classmethod
    def from_dict(cls, record):
        if record.get("format") != FORMAT:
            raise ValueError("not a probe record of format {} (format {!r}); make it with "
                             "'cvmfs-pilot node probe --json'".format(FORMAT, record.get("format")))
        return cls([Check(c["name"], c["result"], c["reason"], c.get("details", {})) for c in record["checks"]],
                   record.get("work_dir"))


# -- platform ---------------------------------------------------------------------------------------------------

def check_os(os_release_text):
    fields = osinfo.parse_os_release(os_release_text)
    platform_id = osinfo.platform_of(fields)
    details = {"id": fields.get("ID"), "version_id": fields.get("VERSION_ID"), "id_like": fields.get("ID_LIKE"),
               "family": osinfo.family_of(fields), "platform": platform_id,
               "pretty_name": fields.get("PRETTY_NAME")}
    name = fields.get("PRETTY_NAME") or "{} {}".format(fields.get("ID", "?"), fields.get("VERSION_ID", "?"))
    if platform_id is None:
        return Check("os", "unknown", "{} is not a platform with client builds (el7-el10, suse15, debian11-13, "
                                      "ubuntu22/24); only our python engine can run here".format(name), details)
    return Check("os", platform_id, name, details)


def check_arch(machine):
    return Check("arch", machine, "uname -m", {"machine": machine})


def kernel_has_userns_fuse(release):
    """Whether a kernel release mounts FUSE inside user namespaces: 4.18 and newer, or RHEL 7.8's
    3.10.0-1127 and newer builds."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?(?:-(\d+))?", release)
    if match is None:
        return False
    major, minor = int(match.group(1)), int(match.group(2))
    if (major, minor) == (3, 10):
        return int(match.group(4) or 0) >= 1127
    return (major, minor) >= (4, 18)


def check_kernel(release):
    supported = kernel_has_userns_fuse(release)
    reason = ("mounts FUSE in user namespaces" if supported else
              "too old to mount FUSE in user namespaces (needs 4.18, or 3.10.0-1127 of RHEL 7.8)")
    return Check("kernel", release, reason, {"release": release, "userns_fuse": supported})


# -- user namespaces and FUSE -----------------------------------------------------------------------------------

def read_userns_sysctls(proc_sys="/proc/sys"):
    """The user-namespace sysctls as integers (None when the kernel has no such file)."""
    values = {}
    for name in USERNS_SYSCTLS:
        try:
            with open(os.path.join(proc_sys, name)) as handle:
                values[os.path.basename(name)] = int(handle.read().strip())
        except (OSError, ValueError):
            values[os.path.basename(name)] = None
    return values


def glidein_userns_value(kernel_supports, works):
    """GlideinWMS's HAS_UNPRIVILEGED_USER_NAMESPACES from "the kernel has them" and "the trial worked" (None:
    the trial could not decide)."""
    if works is None:
        return "error"
    if works:
        return "enabled" if kernel_supports else "error"
    return "disabled" if kernel_supports else "unavailable"


def _userns_blocker(sysctls):
    """Why the sysctls forbid unprivileged user namespaces, and what the site can do; None if they allow them."""
    if sysctls.get("max_user_namespaces") == 0:
        return ("user.max_user_namespaces is 0 (the RHEL 7 default); the site can enable them with "
                "'sysctl user.max_user_namespaces=15000'")
    if sysctls.get("unprivileged_userns_clone") == 0:
        return ("kernel.unprivileged_userns_clone is 0; the site can enable them with "
                "'sysctl kernel.unprivileged_userns_clone=1'")
    if sysctls.get("apparmor_restrict_unprivileged_userns") == 1:
        return ("kernel.apparmor_restrict_unprivileged_userns is 1 (Ubuntu 23.10 and newer): namespaces are "
                "created without capabilities; the site can set it to 0 or allow cvmfs-pilot in an AppArmor profile")
    return None


def check_user_namespaces(kernel_supports, sysctls, outcome):
    """``kernel_supports``: the kernel has user namespaces (/proc/self/ns/user exists); ``sysctls`` from
    :func:`read_userns_sysctls`; ``outcome`` of the :data:`trial.USER_NAMESPACE` trial."""
    works = outcome.get("ok")
    details = dict(sysctls, kernel_supports=kernel_supports, trial=outcome,
                   glidein=glidein_userns_value(kernel_supports, works))
    if works is None:
        return Check("user_namespaces", ERROR, "the unshare trial could not decide: " + outcome["error"], details)
    if works:
        return Check("user_namespaces", YES, "a child entered a new user and mount namespace", details)
    if not kernel_supports:
        return Check("user_namespaces", NO, "the kernel has no user namespaces", details)
    blocker = _userns_blocker(sysctls)
    return Check("user_namespaces", NO, blocker or "{} (a container's seccomp policy or an LSM may forbid them)"
                 .format(outcome["error"]), details)


def check_fuse_in_user_namespace(user_namespaces, dev_fuse, outcome):
    """``outcome`` of the :data:`trial.FUSE_IN_USER_NAMESPACE` trial, None when it was not run because
    ``user_namespaces`` or ``dev_fuse`` already failed."""
    name = "fuse_in_user_namespace"
    if outcome is None:
        failed = user_namespaces if user_namespaces.result != YES else dev_fuse
        return Check(name, SKIPPED, "not tried: {} is {}".format(failed.name, failed.result), {})
    details = {"trial": outcome}
    if outcome.get("ok") is None:
        return Check(name, ERROR, "the FUSE mount trial could not decide: " + outcome["error"], details)
    if outcome["ok"]:
        return Check(name, YES, "a child mounted /dev/fuse with mount(2) inside a user namespace", details)
    return Check(name, NO, outcome["error"], details)


def check_dev_fuse(path=mount.FUSE_DEVICE):
    try:
        info = os.stat(path)
    except OSError as exc:
        return Check("dev_fuse", NO, "{} is missing ({}); the node needs the fuse kernel module (in a container: "
                                     "--device /dev/fuse)".format(path, exc.strerror), {"path": path})
    details = {"path": path, "mode": "{:o}".format(stat.S_IMODE(info.st_mode))}
    if not stat.S_ISCHR(info.st_mode):
        return Check("dev_fuse", NO, "{} is not a character device".format(path), details)
    try:
        os.close(os.open(path, os.O_RDWR))
    except OSError as exc:
        return Check("dev_fuse", NO, "cannot open {} for reading and writing: {}; the site must make it mode "
                                     "0666".format(path, exc.strerror), details)
    return Check("dev_fuse", YES, "{} opens for reading and writing".format(path), details)


def check_fusermount(path):
    """``path`` of fusermount3/fusermount (:func:`mount.find_fusermount`), or None."""
    if path is None:
        return Check("fusermount", NO, "neither fusermount3 nor fusermount is installed", {})
    try:
        info = os.stat(path)
    except OSError as exc:
        return Check("fusermount", NO, "cannot stat {}: {}".format(path, exc.strerror), {"path": path})
    setuid_root = bool(info.st_mode & stat.S_ISUID) and info.st_uid == 0
    details = {"path": path, "setuid_root": setuid_root}
    if not setuid_root:
        return Check("fusermount", NO, "{} is not setuid root, so it cannot mount for us".format(path), details)
    return Check("fusermount", YES, "{} is setuid root".format(path), details)


def check_fuse_group(group, user_groups):
    """``group``: the ``grp`` entry of the group ``fuse`` or None; ``user_groups``: this process's group ids.
    Some old distributions let only this group use /dev/fuse and fusermount."""
    if group is None:
        return Check("fuse_group", NO, "there is no group 'fuse'", {})
    member = group.gr_gid in user_groups
    return Check("fuse_group", YES if member else NO,
                 "{} a member of group 'fuse' ({})".format("is" if member else "is not", group.gr_gid),
                 {"gid": group.gr_gid})


# -- host environment -------------------------------------------------------------------------------------------

def check_cvmfs(root, exists, answers):
    """An existing ``root`` (/cvmfs) and which repositories answer: ``answers`` maps each repository wanted
    (or, when none is named, each one listed under ``root``) to its :data:`trial.STAT` result. Yes when every
    one answers, and there is at least one."""
    details = {"root": root, "answering": sorted(r for r, a in answers.items() if a.get("ok")),
               "failing": {r: a["error"] for r, a in sorted(answers.items()) if not a.get("ok")}}
    if not answers:
        return Check("cvmfs", NO, "{} {}".format(root, "has no repositories" if exists else "does not exist"),
                     details)
    if details["failing"]:
        return Check("cvmfs", NO, "{} of {} repositories do not answer: {}".format(
            len(details["failing"]), len(answers), ", ".join(sorted(details["failing"]))), details)
    return Check("cvmfs", YES, "answering: " + ", ".join(details["answering"]), details)


def proc_masks(mountinfo_text):
    """The mount points under /proc that mask it (Docker/Kubernetes), /proc/sys/fs/binfmt_misc excepted."""
    masks = []
    for line in mountinfo_text.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point.startswith("/proc/") and point != "/proc/sys/fs/binfmt_misc":
                masks.append(point)
    return masks


def check_proc_masked(mountinfo_text):
    masks = proc_masks(mountinfo_text)
    if masks:
        return Check("proc_masked", YES, "mounts cover parts of /proc ({}), as in a container: no new proc "
                                         "mount, so no PID namespace".format(", ".join(masks[:4])),
                     {"masks": masks})
    return Check("proc_masked", NO, "/proc is fully visible", {"masks": []})


def check_container_tools(which):
    """``which(name) -> path or None`` (shutil.which)."""
    found = {name: which(name) for name in CONTAINER_TOOLS}
    present = sorted(name for name, path in found.items() if path)
    return Check("container_tools", YES if present else NO,
                 "found: " + ", ".join(present) if present else "none of {} found".format(", ".join(CONTAINER_TOOLS)),
                 {name: path for name, path in found.items() if path})


def _size(count):
    return "{:.1f} GiB".format(count / 2.0 ** 30)


def check_disk(work_dir):
    try:
        info = os.statvfs(work_dir)
    except OSError as exc:
        return Check("disk", ERROR, "cannot statvfs {}: {}".format(work_dir, exc.strerror), {"path": work_dir})
    free = info.f_bavail * info.f_frsize
    return Check("disk", _size(free), "free for us in " + work_dir, {"path": work_dir, "free_bytes": free})


def check_cpus(usable):
    """``usable``: the CPUs this process may run on (os.sched_getaffinity)."""
    return Check("cpus", str(len(usable)), "CPUs this process may use", {"count": len(usable)})


def check_memory(meminfo_text):
    values = {}
    for line in meminfo_text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and rest.split():
            values[key] = int(rest.split()[0]) * 1024
    if "MemTotal" not in values:
        return Check("memory", ERROR, "/proc/meminfo has no MemTotal", {})
    return Check("memory", _size(values["MemTotal"]), "{} available".format(_size(values.get("MemAvailable", 0))),
                 {"total_bytes": values["MemTotal"], "available_bytes": values.get("MemAvailable")})


def check_http_proxy(setting, connect):
    """``setting``: a CVMFS_HTTP_PROXY value (empty: none configured); ``connect(host, port)`` raises OSError
    when the proxy cannot be reached. Yes when at least one proxy accepts a connection."""
    if not setting.strip():
        return Check("http_proxy", SKIPPED, "no proxy configured (CVMFS_HTTP_PROXY, http_proxy)", {})
    try:
        groups = proxies.parse_groups(setting, "CVMFS_HTTP_PROXY")
    except proxies.ProxyConfigError as exc:
        return Check("http_proxy", ERROR, str(exc), {"setting": setting})
    reachable, unreachable = [], {}
    for proxy in [p for group in groups for p in group if p != proxies.DIRECT]:
        host, _, port = proxy[len("http://"):].rpartition(":")
        try:
            connect(host.strip("[]"), int(port))
            reachable.append(proxy)
        except OSError as exc:
            unreachable[proxy] = str(exc)
    details = {"setting": setting, "reachable": reachable, "unreachable": unreachable}
    if not reachable and not unreachable:
        return Check("http_proxy", SKIPPED, "DIRECT: no proxy to reach", details)
    if not reachable:
        return Check("http_proxy", NO, "no proxy accepts connections: " + "; ".join(
            "{} ({})".format(p, e) for p, e in sorted(unreachable.items())), details)
    return Check("http_proxy", YES, "reachable: " + ", ".join(reachable), details)


def _connect(host, port):
    socket.create_connection((host, port), timeout=PROXY_TIMEOUT).close()


# -- the live probe ---------------------------------------------------------------------------------------------

def _read(path, default=""):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return default


def answers_under(root, repos, timeout):
    """repository -> STAT trial result for ``repos`` (or every entry of ``root`` when repos is None)."""
    if repos is None:
        try:
            repos = sorted(os.listdir(root))
        except OSError:
            return {}
    elif not os.path.isdir(root):
        return {}
    return {repo: trial.run(trial.STAT, os.path.join(root, repo), timeout) for repo in repos}


def configured_proxy(environ):
    return environ.get("CVMFS_HTTP_PROXY") or environ.get("http_proxy") or environ.get("HTTP_PROXY") or ""


def probe(work_dir, repos=None, proxy=None, timeout=10.0, cvmfs_root="/cvmfs"):
    """Probe this node for a pilot working in ``work_dir``. ``repos``: the repositories wanted (None: whatever
    ``cvmfs_root`` lists); ``proxy``: a CVMFS_HTTP_PROXY value (default from the environment)."""
    checks = [check_os(_read("/etc/os-release") or _read("/usr/lib/os-release")), check_arch(platform.machine()),
              check_kernel(platform.release())]
    kernel_supports = os.path.exists("/proc/self/ns/user")
    dev_fuse = check_dev_fuse()
    # One trial answers both questions where it succeeds: the FUSE trial enters a user namespace first.
    fuse_outcome = trial.run_fuse_in_user_namespace(timeout) if kernel_supports and dev_fuse.result == YES else None
    if fuse_outcome is not None and fuse_outcome.get("ok"):
        userns_outcome = {"ok": True, "by": "the FUSE trial, which enters a user namespace first"}
    else:
        userns_outcome = trial.run(trial.USER_NAMESPACE, timeout=timeout)
    userns = check_user_namespaces(kernel_supports, read_userns_sysctls(), userns_outcome)
    usable = userns.result == YES and dev_fuse.result == YES
    checks += [userns, dev_fuse, check_fuse_in_user_namespace(userns, dev_fuse, fuse_outcome if usable else None),
               check_fusermount(mount.find_fusermount()),
               check_fuse_group(_group("fuse"), set(os.getgroups()) | {os.getegid()}),
               check_cvmfs(cvmfs_root, os.path.isdir(cvmfs_root), answers_under(cvmfs_root, repos, timeout)),
               check_proc_masked(_read("/proc/self/mountinfo")),
               check_container_tools(shutil.which),
               check_disk(work_dir),
               check_cpus(os.sched_getaffinity(0)),
               check_memory(_read("/proc/meminfo")),
               check_http_proxy(configured_proxy(os.environ) if proxy is None else proxy, _connect)]
    return Probe(checks, work_dir)


def _group(name):
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


def load(path):
    """A Probe from a JSON record (``node probe --json``)."""
    with open(path) as handle:
        try:
            return Probe.from_dict(json.load(handle))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError("{} is not a probe record: {}".format(path, exc))
