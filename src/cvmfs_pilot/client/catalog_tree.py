"""The catalogs of one revision: the root catalog and the nested ones, loaded on demand as paths are looked up.

Inode numbers are stable for the life of a tree: each catalog gets a block of numbers when it is loaded
(its rows' ``rowid`` plus a base), and the members of a hard-link group share the number of the group.
"""

import threading

from cvmfs_pilot.cvmfs import paths
from cvmfs_pilot.cvmfs.catalog import Catalog

ROOT_INODE = 1


class LoadedCatalog(object):
    __slots__ = ("catalog", "prefix", "hash", "inode_base", "group_base")

    def __init__(self, catalog, prefix, content_hash, inode_base, group_base):
        self.catalog = catalog
        self.prefix = prefix
        self.hash = content_hash
        self.inode_base = inode_base
        self.group_base = group_base

    def inode(self, entry):
        if entry.path == paths.ROOT_PATH:
            return ROOT_INODE
        if entry.hardlink_group:
            return self.group_base + entry.hardlink_group
        return self.inode_base + entry.rowid


class CatalogTree(object):
    """``load(content_hash, size) -> filename`` fetches a verified, decompressed catalog (pinned in the cache)."""

    def __init__(self, load, root_hash, root_size):
        self._load = load
        self._lock = threading.Lock()
        self._next_inode = ROOT_INODE + 1
        self._catalogs = {}
        self.root = self._open(paths.ROOT_PATH, root_hash, root_size)

    def _open(self, prefix, content_hash, size):
        filename = self._load(content_hash, size)
        catalog = Catalog(filename)
        with self._lock:
            loaded = self._catalogs.get(prefix)
            if loaded is not None and loaded.hash == content_hash:
                catalog.close()
                return loaded
            max_group = catalog.max_hardlink_group()
            inode_base = self._next_inode
            group_base = inode_base + catalog.max_rowid()
            self._next_inode = group_base + max_group + 1
            loaded = LoadedCatalog(catalog, prefix, content_hash, inode_base, group_base)
            self._catalogs[prefix] = loaded
            return loaded

    def loaded(self):
        """The catalogs loaded so far."""
        with self._lock:
            return list(self._catalogs.values())

    def catalog_for(self, path):
        """The loaded catalog responsible for ``path`` (descending into nested catalogs as needed)."""
        current = self.root
        while True:
            ref = current.catalog.find_nested(path)
            if ref is None:
                return current
            with self._lock:
                child = self._catalogs.get(ref.path)
            if child is None or child.hash != ref.hash:
                child = self._open(ref.path, ref.hash, ref.size)
            current = child

    def lookup(self, path):
        """``(entry, loaded catalog)`` for a canonical path, or ``(None, None)``. An entry comes from the catalog
        of its parent directory, so a nested catalog is loaded only when something inside it is needed."""
        loaded = self.catalog_for(paths.parent(path)) if path != paths.ROOT_PATH else self.root
        entry = loaded.catalog.lookup(path)
        return (entry, loaded) if entry is not None else (None, None)

    def listing(self, path):
        """``[(entry, loaded catalog)]`` of the children of directory ``path``."""
        loaded = self.catalog_for(path)
        return [(entry, loaded) for entry in loaded.catalog.listing(path)]

    def close(self):
        with self._lock:
            for loaded in self._catalogs.values():
                loaded.catalog.close()
            self._catalogs.clear()
