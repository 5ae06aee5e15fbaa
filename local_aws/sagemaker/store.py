"""Durable state of the local SageMaker: one SQLite file, one row per resource holding its Describe response.

Every resource (jobs, models, endpoint configs, endpoints, model package groups and packages, labeling jobs,
monitoring schedules and executions) is stored as the exact JSON its Describe operation returns (timestamps as epoch
seconds, as the JSON 1.1 protocol sends them), so Describe is a read and every state change is one atomic
read-modify-write. Tags live beside, by ARN.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, name TEXT NOT NULL, arn TEXT NOT NULL, created REAL NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE UNIQUE INDEX IF NOT EXISTS resources_arn ON resources (arn);
CREATE TABLE IF NOT EXISTS tags (arn TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (arn, key));
"""


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()

    # -- resources ---------------------------------------------------------------------------------------------------
    def create(self, kind: str, name: str, arn: str, data: dict[str, Any], created: float) -> bool:
        """Insert; False when a resource of that kind and name exists already."""
        with self._lock:
            try:
                self._db.execute("INSERT INTO resources VALUES (?, ?, ?, ?, ?)",
                                 (kind, name, arn, created, json.dumps(data)))
            except sqlite3.IntegrityError:
                return False
            return True

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM resources WHERE kind = ? AND name = ?", (kind, name)).fetchone()
        return json.loads(row[0]) if row else None

    def get_by_arn(self, arn: str) -> tuple[str, str, dict[str, Any]] | None:
        with self._lock:
            row = self._db.execute("SELECT kind, name, data FROM resources WHERE arn = ?", (arn,)).fetchone()
        return (row[0], row[1], json.loads(row[2])) if row else None

    def update(self, kind: str, name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
        """Apply ``change`` to the stored description atomically; None when the resource is gone."""
        with self._lock:
            data = self.get(kind, name)
            if data is None:
                return None
            change(data)
            self._db.execute("UPDATE resources SET data = ? WHERE kind = ? AND name = ?",
                             (json.dumps(data), kind, name))
            return data

    def delete(self, kind: str, name: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT arn FROM resources WHERE kind = ? AND name = ?", (kind, name)).fetchone()
            if not row:
                return False
            self._db.execute("DELETE FROM resources WHERE kind = ? AND name = ?", (kind, name))
            self._db.execute("DELETE FROM tags WHERE arn = ?", (row[0],))
            return True

    def items(self, kind: str) -> Iterator[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT data FROM resources WHERE kind = ? ORDER BY created", (kind,)).fetchall()
        return (json.loads(row[0]) for row in rows)

    # -- tags --------------------------------------------------------------------------------------------------------
    def set_tags(self, arn: str, tags: list[dict[str, str]]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO tags VALUES (?, ?, ?)",
                                 [(arn, t["Key"], t.get("Value", "")) for t in tags])

    def tags(self, arn: str) -> list[dict[str, str]]:
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM tags WHERE arn = ? ORDER BY key", (arn,)).fetchall()
        return [{"Key": k, "Value": v} for k, v in rows]

    def delete_tags(self, arn: str, keys: list[str]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM tags WHERE arn = ? AND key = ?", [(arn, k) for k in keys])
