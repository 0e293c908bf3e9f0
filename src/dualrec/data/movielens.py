"""Readers for MovieLens-1M, MovieLens-100K and any interactions table, plus the GroupLens download.

Every reader returns a :class:`~dualrec.data.dataset.Dataset` whose :class:`LoadReport` counts each skipped line
(malformed, empty rating, unknown item, duplicate) with file:line examples; ``errors="raise"`` stops at the first.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from platformdirs import user_cache_dir
from tqdm.auto import tqdm

from dualrec.data.catalog import Catalog
from dualrec.data.dataset import Dataset
from dualrec.data.report import DataError, LoadReport

ML1M_GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
               "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
ML100K_GENRES = ["unknown"] + ML1M_GENRES

# Official GroupLens archives and their MD5, as GroupLens publishes them beside each zip (``ml-1m.zip.md5``).
DATASETS = {
    "ml-1m": {
        "url": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "md5": "c4d9eecfca2ab87c1945afe126590906",
        "marker": "ratings.dat",
    },
    "ml-100k": {
        "url": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "md5": "0e33842e24a9c977be4e0107933c0723",
        "marker": "u.data",
    },
}


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``--data-dir``, else ``$DUALREC_DATA_DIR``, else the user cache directory."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("DUALREC_DATA_DIR"):
        return Path(os.environ["DUALREC_DATA_DIR"]).expanduser()
    return Path(user_cache_dir("dualrec")) / "data"


def _decode(path: Path, report: LoadReport) -> list[str]:
    """Lines of a text file: UTF-8 where it decodes, Latin-1 for the lines that do not (counted in the report)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        lines = []
        for b in raw.splitlines():
            try:
                lines.append(b.decode("utf-8"))
            except UnicodeDecodeError:
                lines.append(b.decode("latin-1"))
                report.note("lines decoded as Latin-1 (not UTF-8)")
        return lines


_RATING_RE = r"\s*(\d+)\s*{sep}\s*(\d+)\s*{sep}\s*(-?\d+(?:\.\d+)?)?\s*{sep}\s*(\d+)\s*"


def _parse_ratings(lines: list[str], sep: str, path: Path, report: LoadReport, errors: str) -> pd.DataFrame:
    """Vectorised parse of ``user SEP item SEP rating SEP timestamp`` lines; bad lines counted with file:line."""
    s = pd.Series(lines, dtype=object)
    report.read += len(s)
    blank = s.str.strip() == ""
    parts = s.str.extract("^" + _RATING_RE.format(sep=re.escape(sep)) + "$")
    malformed = parts[0].isna() & ~blank
    empty_rating = parts[0].notna() & parts[2].isna()
    for mask, reason in ((malformed, "malformed line"), (empty_rating, "empty rating")):
        if mask.any():
            idx = np.flatnonzero(mask.to_numpy())
            report.skip(reason, f"{path.name}:{idx[0] + 1}: {lines[idx[0]][:80]!r}", errors, count=len(idx))
            report.examples[reason] = [f"{path.name}:{i + 1}: {lines[i][:80]!r}" for i in idx[:3]]
    ok = ~(malformed | empty_rating | blank)
    good = parts[ok.to_numpy()]
    frame = pd.DataFrame({
        "user": good[0].astype(np.int64).to_numpy(),
        "item": good[1].astype(np.int64).to_numpy(),
        "rating": good[2].astype(np.float32).to_numpy(),
        "timestamp": good[3].astype(np.int64).to_numpy(),
        "line": np.flatnonzero(ok.to_numpy()) + 1,
    })
    return frame


def _finish(frame: pd.DataFrame, catalog: Catalog, path: Path, report: LoadReport, errors: str) -> pd.DataFrame:
    """Drop (and count) ratings of unknown items and duplicate (user, item) pairs; keep the latest duplicate."""
    unknown = ~catalog.has(frame["item"].to_numpy())
    if unknown.any():
        first = frame[unknown].iloc[0]
        report.skip("unknown item id", f"{path.name}:{int(first.line)}: item {int(first['item'])} not in the item file",
                    errors,
                    count=int(unknown.sum()))
        frame = frame[~unknown]
    dup = frame.duplicated(["user", "item"], keep=False)
    if dup.any():
        order = frame.sort_values(["user", "item", "timestamp", "line"])
        drop = order.duplicated(["user", "item"], keep="last")
        first = order[drop].iloc[0]
        report.skip("duplicate (user, item) rating, kept the latest",
                    f"{path.name}:{int(first.line)}: user {int(first.user)} item {int(first['item'])}", errors,
                    count=int(drop.sum()))
        frame = frame.drop(index=order.index[drop.to_numpy()])
    report.kept = len(frame)
    return frame.reset_index(drop=True)


def read_ml1m(root: str | os.PathLike, ratings: str | os.PathLike | None = None, errors: str = "skip") -> Dataset:
    """MovieLens-1M: ``movies.dat`` (+ ``users.dat`` if present) from ``root``; ``ratings`` may lie elsewhere."""
    root = Path(root)
    movies_path = root / "movies.dat"
    ratings_path = Path(ratings) if ratings else root / "ratings.dat"
    for p in (movies_path, ratings_path):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found; fetch it with `dualrec data download ml-1m` "
                                    f"(or pass --data-dir / --ratings)")
    item_report = LoadReport(str(movies_path))
    rows = []
    for n, line in enumerate(_decode(movies_path, item_report), 1):
        item_report.read += 1
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) != 3 or not parts[0].strip().isdigit() or not parts[1].strip():
            item_report.skip("malformed line", f"{movies_path.name}:{n}: {line[:80]!r}", errors)
            continue
        rows.append((int(parts[0]), parts[1], parts[2]))
    items = pd.DataFrame(rows, columns=["item", "title", "genres"])
    if items["item"].duplicated().any():
        dup = items[items["item"].duplicated()].iloc[0]
        raise DataError(f"{movies_path}: item id {dup['item']} appears twice")
    item_report.kept = len(items)
    catalog = Catalog.from_frame(items, genre_names=ML1M_GENRES)
    report = LoadReport(str(ratings_path))
    frame = _parse_ratings(_decode(ratings_path, report), "::", ratings_path, report, errors)
    frame = _finish(frame, catalog, ratings_path, report, errors)
    return Dataset("ml-1m", frame.drop(columns="line"), catalog, [item_report, report])


def read_ml100k(root: str | os.PathLike, errors: str = "skip") -> Dataset:
    """MovieLens-100K: ``u.data`` (tab-separated) and ``u.item`` (``|``-separated, Latin-1, 19 genre flags)."""
    root = Path(root)
    item_path, data_path = root / "u.item", root / "u.data"
    for p in (item_path, data_path):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found; fetch it with `dualrec data download ml-100k`")
    item_report = LoadReport(str(item_path))
    rows = []
    for n, line in enumerate(_decode(item_path, item_report), 1):
        item_report.read += 1
        parts = line.split("|")
        if len(parts) != 24 or not parts[0].isdigit():
            if line.strip():
                item_report.skip("malformed line", f"{item_path.name}:{n}: {line[:80]!r}", errors)
            continue
        genres = "|".join(g for g, flag in zip(ML100K_GENRES, parts[5:]) if flag.strip() == "1" and g != "unknown")
        rows.append((int(parts[0]), parts[1], genres))
    item_report.kept = len(rows)
    catalog = Catalog.from_frame(pd.DataFrame(rows, columns=["item", "title", "genres"]), genre_names=ML1M_GENRES)
    report = LoadReport(str(data_path))
    frame = _parse_ratings(_decode(data_path, report), "\t", data_path, report, errors)
    frame = _finish(frame, catalog, data_path, report, errors)
    return Dataset("ml-100k", frame.drop(columns="line"), catalog, [item_report, report])


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, sep=None, engine="python") if path.suffix not in (".csv",) else pd.read_csv(path)


def read_interactions(interactions: str | os.PathLike, items: str | os.PathLike, user_col: str = "user",
                      item_col: str = "item", time_col: str = "timestamp", title_col: str = "title",
                      genres_col: str = "genres", errors: str = "skip") -> Dataset:
    """Any domain: an interactions CSV/Parquet (user, item, timestamp[, rating]) and an items file (item, title,
    genres as ``a|b|c``). Rows with missing fields or unknown items are counted and skipped (or raised)."""
    inter_path, items_path = Path(interactions), Path(items)
    item_frame = _read_table(items_path)
    for col in (item_col, title_col):
        if col not in item_frame:
            raise DataError(f"{items_path}: missing column {col!r} (has {list(item_frame.columns)})")
    catalog = Catalog.from_frame(item_frame.rename(columns={item_col: "item", title_col: "title"}),
                                 genres_col=genres_col if genres_col in item_frame else None)
    table = _read_table(inter_path)
    for col in (user_col, item_col, time_col):
        if col not in table:
            raise DataError(f"{inter_path}: missing column {col!r} (has {list(table.columns)})")
    report = LoadReport(str(inter_path), read=len(table))
    frame = pd.DataFrame({
        "user": pd.to_numeric(table[user_col], errors="coerce"),
        "item": pd.to_numeric(table[item_col], errors="coerce"),
        "rating": pd.to_numeric(table["rating"], errors="coerce") if "rating" in table else 1.0,
        "timestamp": pd.to_numeric(table[time_col], errors="coerce"),
        "line": np.arange(len(table)) + 2,  # +1 for 1-based, +1 for the header row
    })
    bad = frame[["user", "item", "timestamp"]].isna().any(axis=1)
    if bad.any():
        first = frame[bad].iloc[0]
        report.skip("missing or non-numeric user/item/timestamp", f"{inter_path.name}:{int(first.line)}", errors,
                    count=int(bad.sum()))
        frame = frame[~bad]
    frame = frame.astype({"user": np.int64, "item": np.int64, "timestamp": np.int64, "rating": np.float32})
    frame = _finish(frame, catalog, inter_path, report, errors)
    return Dataset(inter_path.stem, frame.drop(columns="line"), catalog, [report])


def load(name: str, data_dir_: str | os.PathLike | None = None, ratings: str | os.PathLike | None = None,
         items: str | os.PathLike | None = None, errors: str = "skip") -> Dataset:
    """Load ``ml-1m``, ``ml-100k`` (from the data directory) or a generic interactions file given as ``name``."""
    if name in ("ml-1m", "ml-100k"):
        root = data_dir(data_dir_) / name
        if name == "ml-1m":
            return read_ml1m(root, ratings=ratings, errors=errors)
        return read_ml100k(root, errors=errors)
    if items is None:
        raise DataError(f"dataset {name!r}: a generic interactions file needs --items (item, title, genres)")
    return read_interactions(name, items, errors=errors)


def download(name: str, dest: str | os.PathLike | None = None, url: str | None = None, md5: str | None = None,
             progress: bool = True) -> Path:
    """Fetch the official GroupLens zip, verify its published MD5 and unpack it into ``<data dir>/<name>``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    spec = DATASETS[name]
    root = data_dir(dest)
    target = root / name
    if (target / spec["marker"]).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    buf, digest = io.BytesIO(), hashlib.md5()
    with httpx.stream("GET", url or spec["url"], follow_redirects=True, timeout=60) as resp:
        resp.raise_for_status()
        total = int(resp.headers.get("content-length", 0)) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}", disable=not progress) as bar:
            for chunk in resp.iter_bytes():
                buf.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    expected = md5 or spec["md5"]
    if digest.hexdigest() != expected:
        raise DataError(f"{url or spec['url']}: md5 {digest.hexdigest()} does not match the published {expected}")
    with zipfile.ZipFile(buf) as zf:
        zf.extractall(root)
    return target
