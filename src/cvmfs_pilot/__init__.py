"""cvmfs-pilot: CernVM-FS for pilot jobs on any Linux worker node, with no root and no site installation.

Two tiers live in this package:

* node tier  -- ``cvmfs``, ``client``, ``fuse``, ``node``, ``glidein`` and ``cli``: Python 3.6+, standard library
  only. This code runs on worker nodes with whatever ``python3`` the node has.
* server tier -- ``publish``, ``dist``, ``factory``: Python 3.10+, third-party libraries allowed. It runs at the
  repository owner's or factory operator's host.

The node tier never imports the server tier (``scripts/check_tiers.py`` enforces it in CI).
"""

__version__ = "0.1.0"
