"""Title normalisation and grounding free text to catalog items."""

from __future__ import annotations

import pytest

from dualrec.data.catalog import match_key, normalise_title, split_year


@pytest.mark.parametrize("raw,expected", [
    ("Matrix, The (1999)", "The Matrix (1999)"),
    ("Bug's Life, A (1998)", "A Bug's Life (1998)"),
    ("Misérables, Les (1995)", "Les Misérables (1995)"),
    ("Avventura, L' (1960)", "L'Avventura (1960)"),
    ("Confessional, The (Le Confessionnal) (1995)", "The Confessional (Le Confessionnal) (1995)"),
    ("Toy Story (1995)", "Toy Story (1995)"),
    ("Shawshank Redemption, The", "The Shawshank Redemption"),
    ("Sense and Sensibility (1995)", "Sense and Sensibility (1995)"),
])
def test_normalise_title(raw, expected):
    assert normalise_title(raw) == expected


def test_split_year_and_keys():
    assert split_year("Heat (1995)") == ("Heat", 1995)
    assert split_year("Heat") == ("Heat", None)
    assert match_key("Matrix, The (1999)") == match_key("the matrix") == "matrix"


@pytest.mark.parametrize("text,title", [
    ("The Matrix (1999)", "The Matrix (1999)"),
    ("Matrix, The (1999)", "The Matrix (1999)"),
    ("the matrix", "The Matrix (1999)"),
    ("Tarzan (1999)", "Tarzan (1999)"),
    ("Star Wars: Episode IV - A New Hope (1977)", "Star Wars: Episode IV - A New Hope (1977)"),
    ("A Bug's Life", "A Bug's Life (1998)"),
    ("Le Confessionnal", "The Confessional (Le Confessionnal) (1995)"),
    ("Les Miserables (1995)", "Les Misérables (1995)"),
])
def test_grounding_finds_the_item(ml1m, text, title):
    g = ml1m.catalog.ground(text)
    assert g.title == title and g.score >= 80


def test_year_separates_remakes(ml1m):
    cat = ml1m.catalog
    heat = [i for i, t in zip(cat.ids, cat.items["raw_title"]) if t.startswith("Heat (")]
    assert len(heat) >= 1
    assert cat.ground("Heat (1995)").title == "Heat (1995)"
    # same words, a year 15 years off: the score drops below a perfect match
    assert cat.ground("Heat (1980)").score < cat.ground("Heat (1995)").score


def test_titles_outside_the_catalog_do_not_ground(ml1m):
    for text in ["Lilo & Stitch (2002)", "The Emperor's New Groove (2000)", "Completely Invented Film (2031)", ""]:
        assert ml1m.catalog.ground(text).item is None


def test_ground_many_matches_ground_and_respects_allowed(ml1m_top1000):
    cat = ml1m_top1000.catalog
    texts = ["Toy Story (1995)", "Jumanji", "Star Wars (1977)", "nothing like a title at all"]
    many = cat.ground_many(texts)
    assert [g.item for g in many] == [cat.ground(t).item for t in texts]
    only = cat.ground_many(["Toy Story (1995)"], allowed=[2])
    assert only[0].item != 1
