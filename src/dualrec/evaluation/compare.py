"""Per-user first-hit ranks read back from what a run leaves: a predictions file or a result record.

* predictions (``dualrec predict``): JSON lines with ``user``, ``target`` (list of ids) and ``items`` (ranked ids);
* a result record (``results/<protocol>/<row>.json``) that carries ``per_user``: ``{"users": [...], "ranks": [...]}``
  (0-based rank of the first hit, -1 for none; written by the results table command). Under ``chrono`` a user
  has several test cases: such a record also lists ``cases`` (the case's index in the test split), which is then
  the key.

Both give ``{user (or case): rank}``, so :func:`dualrec.evaluation.bootstrap.paired_bootstrap` can compare any two runs on
the users they share.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dualrec.evaluation.metrics import first_hit_ranks


def load_ranks(path: str | Path) -> dict[int, int]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text()
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        record = None
    if isinstance(record, dict) and "metrics" in record:
        per_user = record.get("per_user")
        if not per_user:
            raise ValueError(f"{path}: this result record has no per_user ranks; re-run it, or compare the "
                             f"`dualrec predict` files of the two runs")
        keys = per_user.get("cases", per_user["users"])
        return dict(zip((int(k) for k in keys), (int(r) for r in per_user["ranks"])))
    users, items, targets = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            users.append(int(row["user"]))
            items.append(np.asarray(row["items"], np.int64))
            targets.append(np.asarray(row["target"], np.int64))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{n}: not a prediction line with user, target and items ({exc})") from None
    if len(set(users)) != len(users):
        raise ValueError(f"{path}: a user appears more than once")
    ranks = first_hit_ranks(items, targets, max((len(i) for i in items), default=1) or 1)
    return dict(zip(users, ranks.tolist()))
