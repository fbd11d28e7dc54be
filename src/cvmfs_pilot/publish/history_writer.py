"""The history database of a new revision: the previous one plus a tag for this revision (§5)."""

import os
import sqlite3
import time

from cvmfs_pilot.cvmfs import history as fmt
from cvmfs_pilot.cvmfs.hashing import SUFFIX_HISTORY

from .errors import PublishError


def _create(db, fqrn):
    for ddl in fmt.SCHEMA_DDL:
        db.execute(ddl)
    db.execute("INSERT INTO branches (branch, parent, initial_revision) VALUES ('', NULL, 0)")
    db.executemany("INSERT INTO properties (key, value) VALUES (?, ?)",
                   [("schema", fmt.SCHEMA), ("schema_revision", str(fmt.SCHEMA_REVISION)), ("fqrn", fqrn)])


def _upgrade(db):
    """Bring a history database of an older schema revision (2: no branches) to revision 3."""
    columns = [row[1] for row in db.execute("PRAGMA table_info(tags)")]
    if "branch" not in columns:
        db.execute("ALTER TABLE tags ADD COLUMN branch TEXT")
        db.execute("UPDATE tags SET branch = ''")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "branches" not in tables:
        db.execute(fmt.SCHEMA_DDL[2])
        db.execute("INSERT INTO branches (branch, parent, initial_revision) VALUES ('', NULL, 0)")
    db.execute("INSERT OR REPLACE INTO properties (key, value) VALUES ('schema_revision', ?)",
               (str(fmt.SCHEMA_REVISION),))


def write_history(storage, previous, fqrn, root_catalog, root_size, revision, timestamp, algorithm, workdir):
    """Store the new history object and return its hash. ``previous`` is the previous history's hash or None."""
    filename = os.path.join(workdir, "history.db")
    if previous is not None:
        try:
            data = storage.read_decompressed(previous, SUFFIX_HISTORY)
        except (OSError, ValueError) as exc:
            raise PublishError("history database {} of the previous revision is unreadable: {}".format(
                previous.hex(), exc))
        with open(filename, "wb") as f:
            f.write(data)
    db = sqlite3.connect(filename, isolation_level=None)
    try:
        db.execute("BEGIN")
        if previous is None:
            _create(db, fqrn)
        else:
            _upgrade(db)
            db.execute("INSERT OR REPLACE INTO properties (key, value) VALUES ('previous_revision', ?)",
                       (previous.hex(),))
        name = "generic-" + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
        row = (root_catalog.hex(), revision, timestamp, 0, root_size, "")
        db.execute("INSERT OR REPLACE INTO tags (name, hash, revision, timestamp, channel, size, branch, "
                   "description) VALUES (?, ?, ?, ?, ?, ?, ?, '')", (name,) + row)
        db.execute("DELETE FROM tags WHERE name = 'trunk-previous'")
        db.execute("UPDATE tags SET name = 'trunk-previous', description = 'default undo target' "
                   "WHERE name = 'trunk'")
        db.execute("INSERT INTO tags (name, hash, revision, timestamp, channel, size, branch, description) "
                   "VALUES ('trunk', ?, ?, ?, ?, ?, ?, 'current HEAD')", row)
        db.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise PublishError("cannot write the history database: {}".format(exc))
    finally:
        db.close()
    return storage.put_file_compressed(filename, SUFFIX_HISTORY, algorithm)
