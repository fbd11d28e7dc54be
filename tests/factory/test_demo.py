"""`cvmfs-pilot demo`, the README's main job, as CI runs it (as root: it prepares /dev/fuse and the unprivileged
user itself): two local pilots whose jobs read and run files from /cvmfs on this host without /cvmfs."""

import glob
import os
import re
import subprocess
import sys

import pytest

from support.fuse_env import user_processes


def test_the_demo_runs_two_pilots_whose_jobs_use_cvmfs(unprivileged):
    if os.geteuid() != 0:
        pytest.skip("the demo prepares the machine as root")
    before = set(glob.glob("/tmp/cvmfs-pilot-demo-*"))
    result = subprocess.run([sys.executable, "-m", "cvmfs_pilot", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stdout
    out = result.stdout
    assert "== done: 2 of 2 pilots gave their jobs /cvmfs/demo.cvmfs-pilot.org" in out
    assert out.count("printed: This file comes from the CernVM-FS repository demo.cvmfs-pilot.org") == 2
    assert out.count("printed: imported from /cvmfs") == 2
    assert out.count("(success, cvmfs userns, engine python: exit 0)") == 2
    assert set(glob.glob("/tmp/cvmfs-pilot-demo-*")) == before  # removed
    assert not os.path.exists("/cvmfs")
    (work,) = re.findall(r"^removed (/tmp/cvmfs-pilot-demo-\S+)$", out, re.MULTILINE)
    left = [pid for pid, cmdline, paths in user_processes(unprivileged.uid)
            if work.encode() in cmdline or any(path.startswith(work) for path in paths)]
    assert not left, "processes of the demo are left: {}".format(left)
