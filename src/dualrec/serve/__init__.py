"""The real-time recommendation service (``dualrec serve``); see docs/service.md for the module map.

Importing this package is cheap; its modules import FastAPI, SQLAlchemy and the models.
"""
