"""The revision a publish builds upon: its catalogs, loaded from the storage on demand and verified."""

import os
from collections import OrderedDict

from cvmfs_pilot.cvmfs import paths
from cvmfs_pilot.cvmfs.catalog import FLAG_CHUNKED, Catalog, CatalogError
from cvmfs_pilot.cvmfs.compression import ZLIB
from cvmfs_pilot.cvmfs.hashing import SUFFIX_CATALOG

from .errors import PublishError
from .stored_object import verify_object

_OPEN_CATALOGS = 16


def load_catalog_file(storage, content_hash, size, directory):
    """Copy catalog object ``content_hash`` from the storage, verified and decompressed (streaming, bounded by
    its recorded size), into ``directory``; returns the file name."""
    filename = os.path.join(directory, content_hash.hex() + ".db")
    if os.path.exists(filename):
        return filename
    tmp = filename + ".part"
    with open(tmp, "wb") as out:
        verify_object(str(storage.root), content_hash, SUFFIX_CATALOG, ZLIB,
                      "catalog of the previous revision", expected_size=size or None, sink=out.write)
    os.rename(tmp, filename)
    return filename


class PreviousRevision:
    """Lookups in the previous revision by directory, opening at most a few catalogs at a time."""

    def __init__(self, storage, manifest, directory):
        self.storage = storage
        self.manifest = manifest
        self.directory = directory
        self._open = OrderedDict()
        self.root = self._catalog(manifest.root_catalog, manifest.root_catalog_size)

    def _catalog(self, content_hash, size):
        catalog = self._open.get(content_hash)
        if catalog is not None:
            self._open.move_to_end(content_hash)
            return catalog
        filename = load_catalog_file(self.storage, content_hash, size, self.directory)
        try:
            catalog = Catalog(filename)
        except CatalogError as exc:
            raise PublishError("previous revision of {}: {}".format(self.storage.root, exc))
        self._open[content_hash] = catalog
        while len(self._open) > _OPEN_CATALOGS:
            self._open.popitem(last=False)[1].close()
        return catalog

    def catalog_holding(self, path):
        """The catalog that lists the contents of directory ``path``, with its reference (None for the root)."""
        catalog, ref = self.root, None
        while True:
            nested = catalog.find_nested(path)
            if nested is None:
                return catalog, ref
            catalog, ref = self._catalog(nested.hash, nested.size), nested

    def nested_ref(self, path):
        """The reference of the nested catalog mounted exactly at ``path``, or None."""
        _, ref = self.catalog_holding(path)
        return ref if ref is not None and ref.path == path else None

    def listing(self, path):
        """``{name: (flags, size, mtime, mtimens, raw hash, chunks)}`` of directory ``path``, straight from the
        catalog rows (only chunked files cost a lookup); empty if it did not exist."""
        catalog, _ = self.catalog_holding(path)
        listing = {}
        for name, flags, size, mtime, mtimens, raw_hash in catalog.file_rows(path):
            chunks = catalog.chunks(catalog.lookup(paths.join(path, name))) if flags & FLAG_CHUNKED else []
            listing[name] = (flags, size, mtime, mtimens, raw_hash, chunks)
        return listing

    def catalog_file_at(self, path):
        """The file of the catalog whose root is directory ``path``, or None if there was none."""
        if path == paths.ROOT_PATH:
            return self.root.filename
        ref = self.nested_ref(path)
        return self.catalog_file(ref) if ref is not None else None

    def catalog_file(self, ref):
        return load_catalog_file(self.storage, ref.hash, ref.size, self.directory)

    def close(self):
        for catalog in self._open.values():
            catalog.close()
        self._open.clear()


def nested_statistics(filename):
    with Catalog(filename) as catalog:
        return catalog.statistics()


