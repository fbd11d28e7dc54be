"""Objects by content hash: from the local cache, or downloaded, verified and cached (what the real client's
fetcher does between its cache and download managers)."""

from .cache import REGULAR


class ObjectFetcher(object):
    def __init__(self, cache, downloader):
        self.cache = cache
        self.downloader = downloader

    def open(self, content_hash, suffix, compression, expected_size=None, kind=REGULAR, pin=False):
        """The decompressed object, open for reading (binary). Only one process fetches a given object at a
        time; the others wait and then read the cached copy (once it is recorded: see Cache.defer_stores)."""
        f = self.cache.open(content_hash)
        if f is None:
            with self.cache.fetch_lock(content_hash):
                f = self.cache.open(content_hash)
                if f is None:
                    return self.cache.store_and_open(
                        content_hash,
                        lambda out: self.downloader.fetch_object(content_hash, suffix, compression, out, expected_size),
                        kind=kind, pin=pin)
        if pin:
            self.cache.pin(content_hash)
        return f

    def close(self):
        self.downloader.close()
        self.cache.close()

    def path(self, content_hash, suffix, compression, expected_size=None, kind=REGULAR, pin=False):
        """Like :meth:`open`, but returns the cached file's path (for SQLite, which opens files by name)."""
        with self.open(content_hash, suffix, compression, expected_size, kind, pin):
            return self.cache.path_of(content_hash)
