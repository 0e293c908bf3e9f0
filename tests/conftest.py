"""Shared fixtures. ``synthetic``: a tiny generated dataset every unit test can use anywhere. ``ml1m`` and the
fixtures built on it: the real MovieLens copies in ../shared/data (never committed to this repo); a test that uses
them, directly or through another fixture, is marked ``integration`` here, so ``pytest -m "not integration"`` runs
on a clone without ../shared. A test that reads the copy by path is marked by hand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DUALREC_SHARED_DATA", REPO.parent / "shared" / "data"))
ML1M_DIR = SHARED_DATA / "ml-1m"
ML1M_RATINGS = SHARED_DATA / "ml-1m-ratings-head" / "ratings.dat"
ML100K_DIR = SHARED_DATA / "ml-100k"


SHARED_FIXTURES = {"ml1m", "ml1m_top1000", "ml1m_small", "ml100k"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SHARED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def synthetic():
    """A generated Dataset: 40 items with titles, years and genres, 48 users walking the catalog in steps of 1-2
    items (a next-item signal a sequence model can learn), timestamps increasing along each sequence."""
    from dualrec.data import Dataset
    from tiny import tiny_catalog, tiny_interactions

    catalog = tiny_catalog(40)
    return Dataset("synthetic", tiny_interactions(catalog, n_users=48, seed=3), catalog)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} missing: tests need the MovieLens copies in ../shared/data (or $DUALREC_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def ml1m():
    """ML-1M as shipped in ../shared (users 1..2999), all items."""
    from dualrec.data import read_ml1m

    return read_ml1m(_require(ML1M_DIR), ratings=_require(ML1M_RATINGS))


@pytest.fixture(scope="session")
def ml1m_top1000(ml1m):
    return ml1m.top_items(1000)


@pytest.fixture(scope="session")
def ml1m_small(ml1m_top1000):
    """The first 600 users of the top-1000-item ML-1M copy: small enough to train on in seconds."""
    inter = ml1m_top1000.interactions
    from dualrec.data import Dataset

    return Dataset("ml-1m-600u", inter[inter["user"] <= 600].reset_index(drop=True), ml1m_top1000.catalog,
                   ml1m_top1000.reports, ml1m_top1000.filters)


@pytest.fixture(scope="session")
def ml100k():
    from dualrec.data import read_ml100k

    return read_ml100k(_require(ML100K_DIR))
