"""The CernVM-FS client: configuration, fetching, cache and the file system view of a repository."""
