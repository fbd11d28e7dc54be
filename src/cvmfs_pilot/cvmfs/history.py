"""The tag/history database (``H`` object, §5): schema 1.0 revision 3, one tag per published revision."""

import sqlite3

SCHEMA = "1.0"
SCHEMA_REVISION = 3

SCHEMA_DDL = (
    "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key));",
    "CREATE TABLE tags (name TEXT, hash TEXT, revision INTEGER, timestamp INTEGER, channel INTEGER, "
    "description TEXT, size INTEGER, branch TEXT, CONSTRAINT pk_tags PRIMARY KEY (name));",
    "CREATE TABLE branches (branch TEXT, parent TEXT, initial_revision INTEGER, "
    "CONSTRAINT pk_branch PRIMARY KEY (branch));",
    "CREATE TABLE recycle_bin (hash TEXT, flags INTEGER, CONSTRAINT pk_hash PRIMARY KEY (hash));",
)


class Tag(object):
    __slots__ = ("name", "hash", "revision", "timestamp", "description", "size")

    def __init__(self, name, content_hash_text, revision, timestamp, description, size):
        self.name = name
        self.hash = content_hash_text
        self.revision = revision
        self.timestamp = timestamp
        self.description = description
        self.size = size


def read_tags(filename):
    """All tags of a history database, newest revision first."""
    db = sqlite3.connect("file:{}?mode=ro&immutable=1".format(filename), uri=True)
    try:
        rows = db.execute("SELECT name, hash, revision, timestamp, description, size FROM tags "
                          "ORDER BY revision DESC, name").fetchall()
    finally:
        db.close()
    return [Tag(*row) for row in rows]
