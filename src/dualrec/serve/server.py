"""Running the app as a server process: checks before binding, torch threads, uvicorn (one or several workers)."""

from __future__ import annotations

import os

import torch
import uvicorn

from dualrec.serve.app import create_app
from dualrec.serve.auth import KEYS_ENV, ApiKeys, check_bind
from dualrec.serve.deployment import build_deployment
from dualrec.serve.metrics import Metrics
from dualrec.serve.settings import ServeSettings

SETTINGS_ENV = "DUALREC_SERVE_SETTINGS"


def set_threads(settings: ServeSettings) -> None:
    """Set torch's intra-op threads for a server *process* (never in ``create_app``: it is process-wide state).

    One thread by default: the event loop needs a core too, and on a busy 2-core machine two OpenMP threads spin
    against other processes (docs/service.md). Several workers (or a bigger machine) scale by processes, not threads.
    """
    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)


def app_from_env():
    """Factory for uvicorn worker processes (``--workers N``): settings come from ``$DUALREC_SERVE_SETTINGS``."""
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    set_threads(settings)
    return create_app(settings)


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info") -> None:
    """Run the app under uvicorn (blocking). Raises :class:`~dualrec.serve.auth.AuthConfigError` or
    :class:`~dualrec.serve.deployment.ModelLoadError` (one line each) before binding when the keys, the address or
    the models cannot be served. Several workers need a database several processes can share."""
    check_bind(host, ApiKeys.load(settings.api_key_file, os.environ.get(KEYS_ENV)), settings.allowed_hosts)
    set_threads(settings)
    if workers > 1:
        build_deployment(settings, Metrics()).close_models()  # each worker loads it again; this says what is wrong once
        os.environ[SETTINGS_ENV] = settings.to_json()
        # Each worker loads torch and the models before it answers uvicorn's health pings; on a busy machine that
        # can take longer than uvicorn's 5 s default, and the supervisor would kill a healthy worker mid-start.
        uvicorn.run("dualrec.serve.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, timeout_worker_healthcheck=120)
    else:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
