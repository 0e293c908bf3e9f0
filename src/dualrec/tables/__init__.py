"""Tables rendered from committed result records (:mod:`dualrec.tables.docs` puts them in docs/results.md)."""
