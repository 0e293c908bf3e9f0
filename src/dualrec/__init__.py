"""dualrec: hybrid sequential + LLM recommendation (DUALRec, DUIP), evaluated honestly and served live."""

__version__ = "0.1.0"
