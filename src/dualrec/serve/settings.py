"""What ``dualrec serve`` configures, as one JSON-able dataclass (uvicorn worker processes get the same settings)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from dualrec.serve.limits import Limits

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeSettings:
    """Everything ``dualrec serve`` configures. API keys themselves are never part of it (they are read from
    ``api_key_file`` or ``$DUALREC_API_KEYS`` when the app is built), so settings can be logged and passed on."""

    model: str | None                   # run/model folder of the ranker and fallback (None: DUALRec's Stage 1)
    dualrec: str | None = None          # run folder of the DUALRec hybrid, optional
    db: str = "dualrec-events.db"       # SQLite file path, or a database URL (postgresql://user@host:port/db)
    llm_budget_s: float = 5.0           # per-request time budget of the hybrid before falling back
    max_batch: int = 32                 # most requests one model call answers
    llm_max_batch: int = 1              # ... for DUALRec (llama.cpp generates one prompt at a time anyway)
    batch_wait_ms: float = 5.0          # under load only: how long a batch that has company waits for more
    torch_threads: int = 1              # intra-op threads of a server process (0: torch's default); see set_threads
    api_key_file: str | None = None     # lines `KEY SCOPE[,SCOPE...]`; see serve/auth.py
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS  # Host header values answered ("*": any)
    limits: Limits = field(default_factory=Limits)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeSettings":
        values = json.loads(text)
        limits = values.pop("limits", {})
        limits["exempt_paths"] = tuple(limits.get("exempt_paths", Limits.exempt_paths))
        values["allowed_hosts"] = tuple(values.get("allowed_hosts", LOOPBACK_HOSTS))
        return cls(**values, limits=Limits(**limits))
