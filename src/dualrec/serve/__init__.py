"""The real-time recommendation service (``dualrec serve``): FastAPI app, event store, micro-batching, limits.

Importing this package is cheap; FastAPI, SQLAlchemy and the models load when an app is created.
"""

from dualrec.serve.limits import Limits

__all__ = ["Limits"]
