"""On-disk cache of LLM responses, so re-running an evaluation costs nothing (no tokens, no API money).

Key: sha256 of the canonical JSON of everything that determines a response: the backend's identity (kind, model,
adapter, endpoint mode, system message), the prompt, and the sampling parameters. Store: one SQLite file (WAL mode,
safe for several processes and threads; each thread gets its own connection). Only successful responses are
stored; errors are retried next time.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path


def cache_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
                      "meta TEXT, created REAL DEFAULT (unixepoch('subsec')))")
        self.hits = 0
        self.misses = 0

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60)
            self._local.conn = conn
        return conn

    def get_many(self, keys: list[str]) -> dict[str, tuple[str, dict]]:
        """``{key: (text, meta)}`` for the keys that are cached."""
        found: dict[str, tuple[str, dict]] = {}
        conn = self._conn()
        for lo in range(0, len(keys), 500):
            chunk = keys[lo:lo + 500]
            rows = conn.execute(f"SELECT key, text, meta FROM responses WHERE key IN ({','.join('?' * len(chunk))})",
                                chunk).fetchall()
            found.update((k, (t, json.loads(m) if m else {})) for k, t, m in rows)
        self.hits += len(found)
        self.misses += len(set(keys)) - len(found)
        return found

    def put_many(self, rows: list[tuple[str, str, dict | None]]) -> None:
        if not rows:
            return
        with self._conn() as c:
            c.executemany("INSERT OR REPLACE INTO responses (key, text, meta) VALUES (?, ?, ?)",
                          [(k, t, json.dumps(m) if m else None) for k, t, m in rows])

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0]
