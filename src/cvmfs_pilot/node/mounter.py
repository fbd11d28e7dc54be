"""The repositories a pilot has mounted: the config repository first (the others' configuration may come from
it), the others in the order asked; unmounted in reverse, the config repository last."""

import collections
import logging
import os
import re

from cvmfs_pilot.fuse import mount as mounting
from cvmfs_pilot.node import engines, relocate

log = logging.getLogger(__name__)

REPOSITORY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.[A-Za-z0-9_.-]+$")


def check_repository_name(name):
    if not REPOSITORY_NAME.match(name or "") or ".." in name:
        raise ValueError("{!r} is not a repository name (a fully qualified name such as atlas.cern.ch)".format(name))
    return name


class Mounter(object):
    """Mounts repositories below mount_dir with an engine. ``make_directory(fqrn) -> path`` creates the mount
    point; ``on_change()`` is called after every mount and unmount (the pilot records its state)."""

    def __init__(self, engine, mount_dir, run_dir, overrides, make_directory, on_change=lambda: None):
        self.engine = engine
        self.mount_dir = mount_dir
        self.run_dir = run_dir
        self.overrides = dict(overrides)
        self.config_repository = engine.config_repository(self.overrides)
        self._make_directory = make_directory
        self._on_change = on_change
        self.mounted = collections.OrderedDict()  # fqrn -> engines.MountedRepository

    def with_config_repository(self, repositories):
        """repositories with the config repository put first (added when missing)."""
        names = [check_repository_name(r) for r in repositories]
        if self.config_repository:
            names = [self.config_repository] + [r for r in names if r != self.config_repository]
        return list(collections.OrderedDict.fromkeys(names))

    def mount(self, fqrn):
        """Mount fqrn (and the config repository before it); nothing if it is mounted already."""
        return self.mount_all([fqrn])[-1]

    def mount_all(self, repositories):
        """Mount the config repository first (if it is not yet), then the other repositories at once (their
        servers start together); the MountedRepository of each, in order. On a failure, those of this call that
        did mount stay mounted (unmount_all undoes them)."""
        names = [check_repository_name(r) for r in repositories]
        if self.config_repository and self.config_repository not in self.mounted and any(
                name != self.config_repository for name in names):
            self.mount_all([self.config_repository])
        launched = []
        try:
            for fqrn in collections.OrderedDict.fromkeys(names):
                if fqrn not in self.mounted:
                    launched.append(self._launch(fqrn))
            for mounted in launched:
                engines.wait_until_mounted(self.engine, mounted)
                self.mounted[mounted.fqrn] = mounted
                log.info("mounted %s on %s (%s engine, server pid %d)", mounted.fqrn, mounted.mountpoint,
                         self.engine.name, mounted.process.pid)
        except BaseException:
            for mounted in launched:
                if mounted.fqrn not in self.mounted:
                    engines.stop_server(mounted.process, grace=1.0)
            raise
        finally:
            self._on_change()
        return [self.mounted[name] for name in names]

    def _launch(self, fqrn):
        mountpoint = self._make_directory(fqrn)
        for sub in ("config", "log"):
            os.makedirs(os.path.join(self.run_dir, sub), mode=0o700, exist_ok=True)
        config_file = os.path.join(self.run_dir, "config", fqrn + ".conf")
        log_path = os.path.join(self.run_dir, "log", fqrn + ".log")
        text = self.engine.config_text(fqrn, self.mount_dir, self.overrides, log_path)
        relocate.write_relocated_config(config_file, text)
        return engines.launch_server(self.engine, fqrn, mountpoint, config_file, log_path)

    def unmount(self, fqrn):
        """Unmount fqrn (lazily if busy) and wait for its server; the config repository only when it is the
        last one."""
        if fqrn not in self.mounted:
            raise ValueError("{} is not mounted by this pilot".format(fqrn))
        if fqrn == self.config_repository and len(self.mounted) > 1:
            raise ValueError("{} is the config repository; unmount the others first".format(fqrn))
        mounted = self.mounted.pop(fqrn)
        try:
            _unmount(mounted.mountpoint)
        finally:
            engines.stop_server(mounted.process)
            self._on_change()

    def unmount_all(self):
        """Unmount everything, the config repository last; the errors, as messages."""
        errors = []
        for fqrn in reversed(list(self.mounted)):
            try:
                self.unmount(fqrn)
            except (OSError, ValueError) as exc:
                errors.append(str(exc))
        return errors

    def server_pids(self):
        return [m.process.pid for m in self.mounted.values()]

    def forget_server(self, pid):
        """A server ended by itself (crashed, or unmounted from outside): its mount is gone or dead."""
        for fqrn, mounted in list(self.mounted.items()):
            if mounted.process.pid == pid:
                log.warning("the server of %s ended unexpectedly (exit status %s); see %s", fqrn,
                            mounted.process.returncode, mounted.log_path)
                self.mounted.pop(fqrn)
                try:
                    _unmount(mounted.mountpoint)
                except OSError:
                    pass
                self._on_change()


def _unmount(mountpoint):
    if not mounting.is_mounted(mountpoint):
        return
    try:
        mounting.unmount(mountpoint)
    except mounting.MountError as exc:
        log.info("%s; detaching it lazily", exc)
        mounting.unmount(mountpoint, lazy=True)
