"""Durable watch-event storage for the service, through SQLAlchemy Core (SQLite by default, PostgreSQL by URL).

Design choices (the issue is silent on them):

* **One table of events** ``(id, user_id, item, ts)``; a user's history is their events ordered by ``(ts, id)``, so a
  late event with an old timestamp lands in its place, and the newest ``limit`` events are read with one indexed
  query. User ids are strings (a product's users are not MovieLens integers).
* **Durable once answered.** :meth:`EventStore.append` commits before it returns and the API answers only after it
  returns. SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk, not only in the OS cache) and a
  busy timeout so concurrent writers queue instead of failing; PostgreSQL commits are durable by default.
* **Idempotency.** A post may carry a key; the key row is inserted in the *same* transaction as the events, under a
  primary key ``(user_id, key)``. A retry (or a concurrent duplicate, which blocks on that key until the first commits)
  hits the constraint and gets the stored answer back; the same key with a different body is a conflict. Keys older
  than ``idempotency_ttl_s`` are purged when the store opens.
* The same code runs on both engines: only the URL differs (``postgresql://`` is mapped to the psycopg 3 driver).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

metadata = sa.MetaData()

events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("item", sa.BigInteger, nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Index("ix_events_user_ts", "user_id", "ts", "id"),
)

idempotency_keys = sa.Table(
    "idempotency_keys", metadata,
    sa.Column("user_id", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("response", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)


class IdempotencyConflict(Exception):
    """The idempotency key was already used for a different request body."""


@dataclass(frozen=True)
class AppendResult:
    """What a post stored (or, for a replayed key, what the first post stored); ``replayed`` marks a retry."""

    response: dict
    replayed: bool


def database_url(target: str | Path) -> str:
    """A URL for SQLAlchemy: a plain path becomes a SQLite file URL; ``postgresql://`` uses psycopg 3."""
    target = str(target)
    if "://" not in target:
        return f"sqlite:///{Path(target).expanduser().resolve()}"
    if target.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + target.split("://", 1)[1]
    return target


def request_hash(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class EventStore:
    """Append and read watch events. Thread-safe (one SQLAlchemy engine with a connection pool)."""

    def __init__(self, url: str | Path, idempotency_ttl_s: float = 7 * 24 * 3600.0):
        self.url = database_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs: dict = {}
        if self.is_sqlite:
            path = self.url.split("///", 1)[1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30.0, "check_same_thread": False}
        else:
            kwargs.update(pool_size=8, max_overflow=8, pool_pre_ping=True)
        self.engine = sa.create_engine(self.url, **kwargs)
        if self.is_sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._create_schema()
        with self.engine.begin() as conn:
            conn.execute(idempotency_keys.delete().where(idempotency_keys.c.created < time.time() - idempotency_ttl_s))

    def _create_schema(self, attempts: int = 5) -> None:
        """Create the tables if missing. Several server processes may start at once on a new database: the loser
        of a concurrent CREATE TABLE gets an error (PostgreSQL: a unique violation in its catalog; SQLite: "table
        already exists") and simply tries again, when the tables are there."""
        for attempt in range(attempts):
            try:
                metadata.create_all(self.engine)
                return
            except sa.exc.DBAPIError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.text("SELECT 1")).scalar() == 1

    def append(self, user_id: str, items: Sequence[int], timestamps: Sequence[float],
               idempotency_key: str | None = None, request_fingerprint: str | None = None) -> AppendResult:
        """Store events in one transaction and return the answer to give; committed when this returns.

        With ``idempotency_key``, a second call with the same key returns the first call's answer and stores nothing;
        with a different ``request_fingerprint`` it raises :class:`IdempotencyConflict`.
        """
        rows = [{"user_id": user_id, "item": int(i), "ts": float(t)} for i, t in zip(items, timestamps)]
        fingerprint = request_fingerprint or request_hash(rows)
        try:
            with self.engine.begin() as conn:
                if idempotency_key is not None:
                    # Claim the key first: a concurrent duplicate blocks here until this transaction ends.
                    conn.execute(idempotency_keys.insert().values(
                        user_id=user_id, key=idempotency_key, request_hash=fingerprint, response="", created=time.time()))
                if rows:
                    conn.execute(events.insert(), rows)
                count = conn.execute(sa.select(sa.func.count()).select_from(events)
                                     .where(events.c.user_id == user_id)).scalar_one()
                response = {"user": user_id, "stored": len(rows), "history_length": int(count),
                            "events": [{"item": r["item"], "timestamp": r["ts"]} for r in rows]}
                if idempotency_key is not None:
                    conn.execute(idempotency_keys.update()
                                 .where(idempotency_keys.c.user_id == user_id, idempotency_keys.c.key == idempotency_key)
                                 .values(response=json.dumps(response)))
            return AppendResult(response, replayed=False)
        except IntegrityError:
            if idempotency_key is None:
                raise
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(idempotency_keys.c.request_hash, idempotency_keys.c.response).where(
                idempotency_keys.c.user_id == user_id, idempotency_keys.c.key == idempotency_key)).one()
        if row.request_hash != fingerprint:
            raise IdempotencyConflict(f"idempotency key {idempotency_key!r} was already used for user {user_id!r} "
                                      "with a different body")
        return AppendResult(json.loads(row.response), replayed=True)

    def history(self, user_id: str, limit: int | None = None) -> tuple[list[int], list[float]]:
        """The user's items and timestamps, oldest first; with ``limit``, only the newest ``limit`` events."""
        q = sa.select(events.c.item, events.c.ts).where(events.c.user_id == user_id)
        q = q.order_by(events.c.ts.desc(), events.c.id.desc())
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        rows.reverse()
        return [int(r.item) for r in rows], [float(r.ts) for r in rows]

    def count_events(self, user_id: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(events)
        if user_id is not None:
            q = q.where(events.c.user_id == user_id)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
