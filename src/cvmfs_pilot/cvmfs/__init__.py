"""The CernVM-FS repository format: hashes, object paths, manifest, whitelist, signatures, catalogs.

Node tier: Python 3.6+, standard library only. Byte-compatible with the real ``cvmfs_server``/``cvmfs2``.
"""
