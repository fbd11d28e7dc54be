"""Helpers for tests that publish repositories and read them back straight from the storage directory."""

import os

from cvmfs_pilot.cvmfs import paths
from cvmfs_pilot.cvmfs.catalog import Catalog
from cvmfs_pilot.cvmfs.compression import decompress
from cvmfs_pilot.cvmfs.hashing import SHA1, SUFFIX_CATALOG, SUFFIX_NONE, SUFFIX_PARTIAL
from cvmfs_pilot.cvmfs.manifest import Manifest
from cvmfs_pilot.publish.chunking import ChunkSizes
from cvmfs_pilot.publish.keys import generate_keys
from cvmfs_pilot.publish.publisher import PublishOptions, publish

SMALL_CHUNKS = ChunkSizes(4096, 8192, 16384)


def make_keys(directory, fqrn):
    generate_keys(fqrn, directory)
    return directory


def options(**overrides):
    values = dict(algorithm=SHA1, compression=0, chunk_sizes=SMALL_CHUNKS, workers=2)
    values.update(overrides)
    return PublishOptions(**values)


def publish_tree(source, storage, fqrn, keys, **overrides):
    return publish(str(source), str(storage), fqrn, str(keys), options(**overrides))


def read_manifest(storage):
    with open(os.path.join(str(storage), ".cvmfspublished"), "rb") as f:
        return Manifest.parse(f.read())


def _object(storage, content_hash, suffix):
    with open(os.path.join(str(storage), content_hash.object_path(suffix)), "rb") as f:
        return f.read()


class StoredRepository:
    """All catalogs of the current revision of a storage directory, opened from decompressed copies."""

    def __init__(self, storage, workdir):
        self.storage = str(storage)
        self.manifest = read_manifest(storage)
        self.catalogs = {}  # root prefix -> (Catalog, hash)
        self._load(self.manifest.root_catalog, paths.ROOT_PATH, str(workdir))

    def _load(self, content_hash, prefix, workdir):
        filename = os.path.join(workdir, content_hash.hex() + ".db")
        with open(filename, "wb") as f:
            f.write(decompress(_object(self.storage, content_hash, SUFFIX_CATALOG)))
        catalog = Catalog(filename)
        self.catalogs[prefix] = (catalog, content_hash)
        for ref in catalog.nested_catalogs():
            self._load(ref.hash, ref.path, workdir)

    def catalog_for(self, path):
        best = paths.ROOT_PATH
        for prefix in self.catalogs:
            if paths.is_below(path, prefix) and len(prefix) > len(best):
                best = prefix
        return self.catalogs[best][0]

    def entry(self, path):
        return self.catalog_for(path).lookup(path)

    def walk(self):
        """``{path: Entry}`` of the whole tree, each entry from the catalog responsible for it."""
        result = {}
        stack = [paths.ROOT_PATH]
        while stack:
            path = stack.pop()
            catalog = self.catalog_for(path)
            result[path] = catalog.lookup(path)
            for child in catalog.listing(path):
                if child.is_directory:
                    stack.append(child.path)
                else:
                    result[child.path] = child
        return result

    def content(self, path):
        entry = self.entry(path)
        catalog = self.catalog_for(path)
        if entry.is_chunked:
            return b"".join(decompress(_object(self.storage, c.hash, SUFFIX_PARTIAL), entry.compression)
                            for c in catalog.chunks(entry))
        return decompress(_object(self.storage, entry.hash, SUFFIX_NONE), entry.compression)

    def close(self):
        for catalog, _ in self.catalogs.values():
            catalog.close()
