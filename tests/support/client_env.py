"""Client configuration directories for tests: what a site's /etc/cvmfs would hold, pointing at test servers."""

import os
import shutil
import tarfile

from cvmfs_pilot.client.session import open_repository
from cvmfs_pilot.publish.resign import resign

from .repo import make_keys, publish_tree


def write_config(config_dir, fqrn, server_url, pubkey, cache_base, proxy="DIRECT", extra=None):
    """A configuration root for one repository: default.local (proxy, cache), config.d/<fqrn>.conf (server),
    keys/<fqrn>.pub."""
    os.makedirs(os.path.join(config_dir, "config.d"), exist_ok=True)
    os.makedirs(os.path.join(config_dir, "keys"), exist_ok=True)
    shutil.copy(str(pubkey), os.path.join(config_dir, "keys", fqrn + ".pub"))
    lines = ["CVMFS_HTTP_PROXY='{}'".format(proxy), "CVMFS_CACHE_BASE={}".format(cache_base),
             "CVMFS_TIMEOUT=2", "CVMFS_TIMEOUT_DIRECT=2", "CVMFS_BACKOFF_INIT=0.05", "CVMFS_BACKOFF_MAX=0.1"]
    lines += ["{}={}".format(k, v) for k, v in (extra or {}).items()]
    with open(os.path.join(config_dir, "default.local"), "a") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(config_dir, "config.d", fqrn + ".conf"), "w") as f:
        f.write('CVMFS_SERVER_URL="{}"\n'.format(server_url))
    return config_dir


def publish_and_serve(src, fqrn, tmp_path, nginx, config_dir, cache_base, **publish_options):
    """Publish ``src`` as ``fqrn`` into ``tmp_path``/srv (keys in ``tmp_path``/keys), serve it with the ``nginx``
    fixture and write a client configuration for it: ``{keys, storage, base, config}``."""
    keys = make_keys(tmp_path / "keys", fqrn)
    storage = tmp_path / "srv" / fqrn
    publish_tree(src, storage, fqrn, keys, **publish_options)
    base = nginx(tmp_path / "srv")
    config = write_config(config_dir, fqrn, base + "/@fqrn@", keys / (fqrn + ".pub"), cache_base)
    return dict(keys=keys, storage=storage, base=base, config=config)


def open_with(config_dir, fqrn, **overrides):
    return open_repository(fqrn, str(config_dir), overrides, environ={})


def unpack_fixture(shared_dir, destination, days=30):
    """The real test.cern.ch repository, re-signed (its whitelist expired in 2016): returns its storage path."""
    fixture = shared_dir / "fixtures" / "test.cern.ch"
    with tarfile.open(str(fixture / "repository.tar.gz")) as tar:
        tar.extractall(str(destination))
    storage = destination / "cvmfs" / "test.cern.ch"
    resign(str(storage), str(fixture), days)
    return storage
