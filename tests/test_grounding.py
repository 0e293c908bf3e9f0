"""Grounding against the experiments' catalog (ML-1M, 1,000 most-rated films): a labelled corpus of LLM answer lines
(the embedded Gemma 3 270M's real outputs and hand-written ones) and properties that hold for every catalog film."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualrec.data.grounding import split_year
from dualrec.llm.parse import extract_titles

CORPUS = [json.loads(line) for line in (Path(__file__).parent / "data" / "grounding_corpus.jsonl").open()]


def first_grounded(catalog, line: str):
    titles = extract_titles(line, catalog=catalog)
    return catalog.ground_many(titles)[0] if titles else None


def test_corpus_is_large_and_mixed():
    assert len(CORPUS) >= 200
    assert {r["source"] for r in CORPUS} == {"hand", "gemma-3-270m"}
    assert sum(r["item"] is None for r in CORPUS) >= 100 and sum(r["item"] is not None for r in CORPUS) >= 100


def test_corpus_lines_ground_to_their_labels(ml1m_top1000):
    cat = ml1m_top1000.catalog
    wrong = []
    for r in CORPUS:
        g = first_grounded(cat, r["line"])
        got = g.item if g is not None else None
        if got != r["item"]:
            wrong.append((r["line"], r["title"], g.title if g else None, g.why if g else "not extracted"))
    assert wrong == []


@pytest.mark.parametrize("line,why", [
    ("- Die Hard 4", "sequel: 4 in the text, 2 in Die Hard 2 (1990)"),
    ("3. The Godfather Part IV", "sequel: 4 in the text, 2 in The Godfather: Part II (1974)"),
    ("2. Toy Story 4", "sequel: 4 in the text, 2 in Toy Story 2 (1999)"),
    ("1. Planet of the Apes (2001)", "year: Planet of the Apes (1968) is 1968 in the catalog, not 2001"),
    ("- Star Wars", "ambiguous: 4 catalog films fit (Star Wars: Episode IV - A New Hope (1977), Star Wars: Episode V "
                    "- The Empire Strikes Back (1980), Star Wars: Episode VI - Return of the Jedi (1983), Star Wars: "
                    "Episode I - The Phantom Menace (1999)); a year would decide"),
    ("- Batman Begins (2005)", "no-match: nothing in the catalog scores 80"),
])
def test_made_up_sequels_remakes_and_ambiguous_titles_ground_nothing_and_say_why(ml1m_top1000, line, why):
    g = first_grounded(ml1m_top1000.catalog, line)
    assert (g.item, g.why) == (None, why)


@pytest.mark.parametrize("text,item,score,why", [
    ("The Matrix", 2571, 100.0, "exact: The Matrix (1999)"),
    ("Matrix, The (2000)", 2571, 95.0, "exact: The Matrix (1999), year off by 1"),
    ("Star Wars (1980)", 1196, 95.0, "main-title: Star Wars: Episode V - The Empire Strikes Back (1980)"),
    ("Sabrina (1995)", 7, 100.0, "year-decides: Sabrina (1995)"),
    ("Shawshank Redemtion (1994)", 318, 97.4, "fuzzy: The Shawshank Redemption (1994) (97)"),
    ("Godfather 2", 1221, 100.0, "exact: The Godfather: Part II (1974)"),
])
def test_grounded_scores_and_rules(ml1m_top1000, text, item, score, why):
    g = ml1m_top1000.catalog.ground(text)
    assert (g.item, round(g.score, 1), g.why) == (item, score, why)


def test_allowed_excludes_a_film_instead_of_grounding_a_neighbour(ml1m_top1000):
    cat = ml1m_top1000.catalog
    g = cat.ground("Toy Story (1995)", allowed=[i for i in cat.ids if i != 1])
    assert (g.item, g.rule) == (None, "not-allowed")


# ---- properties over every catalog film -------------------------------------------------------------------------

def _films(catalog):
    """(item, display title without year, year) for films whose title has no sequel number and a unique name."""
    out = []
    for item, title, year in zip(catalog.ids, catalog.items["title"], catalog.items["year"]):
        name, _ = split_year(title)
        name = re.sub(r"(?:\s*\([^()]*\))+$", "", name)
        if not re.search(r"\d|\b[IVX]+\b", name) and len(catalog.matcher().exact_rows(name)) == 1:
            out.append((int(item), name, int(year)))
    return out


@pytest.fixture(scope="module")
def films(ml1m_top1000):
    return _films(ml1m_top1000.catalog)


def _perturb(name: str, how: int) -> str:
    if how == 0:
        return name.upper()
    if how == 1:
        return f'"{name}"'
    if how == 2:
        return f"**{name}**"
    if how == 3:
        return re.sub(r"^(The|A|An) (.+)$", r"\2, \1", name)
    if how == 4:
        return name.replace(",", "").replace("'", "").replace(":", "")
    return name.replace("e", "é", 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_perturbations_that_keep_the_film_ground_to_it(ml1m_top1000, films, data):
    item, name, year = data.draw(st.sampled_from(films))
    how = data.draw(st.integers(0, 5))
    shift = data.draw(st.sampled_from([None, 0, 1, -1]))
    text = _perturb(name, how) + ("" if shift is None else f" ({year + shift})")
    g = ml1m_top1000.catalog.ground(text)
    assert g.item == item, (text, g.why)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_sequel_number_never_grounds_to_the_original(ml1m_top1000, films, data):
    item, name, year = data.draw(st.sampled_from(films))
    number = data.draw(st.sampled_from(["2", "3", "4", "II", "III", "IV", "Part 2", "Part II", "Part IV"]))
    with_year = data.draw(st.booleans())
    text = f"{name} {number}" + (f" ({year})" if with_year else "")
    g = ml1m_top1000.catalog.ground(text)
    assert g.item != item, (text, g.why)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_year_far_from_the_film_never_grounds_to_it(ml1m_top1000, films, data):
    item, name, year = data.draw(st.sampled_from(films))
    gap = data.draw(st.integers(2, 40)) * data.draw(st.sampled_from([-1, 1]))
    g = ml1m_top1000.catalog.ground(f"{name} ({year + gap})")
    assert g.item != item, (name, year + gap, g.why)


_ROMAN = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X"]
_NUMBER = re.compile(r"\b(\d{1,2}|II|III|IV|V|VI|VII|VIII|IX)\b")


@pytest.fixture(scope="module")
def sequels(ml1m_top1000):
    """(item, display title without year, year) for numbered films: "Rocky II", "Lethal Weapon 4", "Apollo 13"."""
    out = []
    for item, title, year in zip(ml1m_top1000.catalog.ids, ml1m_top1000.catalog.items["title"],
                                 ml1m_top1000.catalog.items["year"]):
        name, _ = split_year(title)
        if _NUMBER.search(name):
            out.append((int(item), name, int(year)))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_changing_a_films_number_never_grounds_to_it(ml1m_top1000, sequels, data):
    item, name, year = data.draw(st.sampled_from(sequels))
    m = list(_NUMBER.finditer(name))[-1]
    n = int(m.group(1)) if m.group(1).isdigit() else _ROMAN.index(m.group(1)) + 1
    other = data.draw(st.integers(2, 9).filter(lambda x: x != n))
    written = data.draw(st.sampled_from([str(other), _ROMAN[other - 1]]))
    text = name[: m.start()] + written + name[m.end():] + data.draw(st.sampled_from(["", f" ({year})"]))
    g = ml1m_top1000.catalog.ground(text)
    assert g.item != item, (text, g.why)


def test_every_catalog_title_grounds_to_its_own_film(ml1m):
    """All 3,883 ML-1M titles, as MovieLens writes them and as displayed ("M*A*S*H", "Enfer, L'", films listed twice
    under an alternate title such as "Bewegte Mann, Der" / "Maybe, Maybe Not (Bewegte Mann, Der)")."""
    cat = ml1m.catalog
    for column in ("raw_title", "title"):
        grounded = cat.ground_many(cat.items[column].tolist())
        assert [g.item for g in grounded] == cat.ids.tolist()
        assert {g.rule for g in grounded} == {"exact", "year-decides"}         # 114 titles exist twice or more
        assert sum(g.rule == "year-decides" for g in grounded) == 114
