"""Prompts, parsing and grounding on real MovieLens titles; the paper's fine-tuning records."""

from __future__ import annotations

import numpy as np
import pytest

from dualrec.llm.parse import extract_titles, parse_and_ground
from dualrec.llm.prompts import PromptBuilder, template

# Messy outputs in the shapes LLMs really write (the paper's own example first), with the titles a reader would take.
CORPUS = [
    ("Based on the user's preference for animated, family-friendly films with adventurous and musical elements, "
     "here are three recommendations that align with their viewing history:\n\n"
     "- Tarzan (1999) Genres: Animation, Adventure, Children's, Musical\n\n"
     "- The Emperor's New Groove (2000) Genres: Animation, Adventure, Children's, Comedy\n\n"
     "- Lilo & Stitch (2002) Genres: Animation, Children's, Comedy, Science Fiction",
     ["Tarzan (1999)", "The Emperor's New Groove (2000)", "Lilo & Stitch (2002)"]),
    ("1. Toy Story 2 (1999) (Animation, Children's, Comedy)\n2. Antz (1998) (Animation, Children's)\n"
     "3. A Bug's Life (1998) (Animation, Children's, Comedy)",
     ["Toy Story 2 (1999)", "Antz (1998)", "A Bug's Life (1998)"]),
    ("Sure! Here are some movies you might enjoy:\n\n1) **The Matrix** (1999) - a mind-bending sci-fi classic\n"
     "2) \"Fargo\" (1996)\n3) Heat (1995): a crime epic\n\nGenres: Action, Crime\nI hope you enjoy them!",
     ["The Matrix (1999)", "Fargo (1996)", "Heat (1995)"]),
    ("* Alien (1979)\n   Genres: Horror, Sci-Fi\n* Aliens (1986)\n   Genre: Action\n* Alien (1979)\n",
     ["Alien (1979)", "Aliens (1986)"]),                                  # duplicate dropped
    ("#1. Casablanca\n#2. Vertigo — Hitchcock at his best\n", ["Casablanca", "Vertigo"]),  # no years, listed
    ("", []),
    ("I'm sorry, I cannot help with that request.", []),                 # prose without a title
    ("- Jurassic Park (1993)\n- The Expanse (2002)\n- The Last", ["Jurassic Park (1993)", "The Expanse (2002)",
                                                                 "The Last"]),
]


@pytest.mark.parametrize("text,expected", CORPUS)
def test_extract_titles_from_messy_outputs(text, expected):
    assert extract_titles(text) == expected


@pytest.mark.parametrize("text,n,expected", [
    ("1. Antz (1998)\n2. Heat (1995)\n3. Fargo (1996)\n4. Alien", 3,
     len("1. Antz (1998)\n2. Heat (1995)\n3. Fargo (1996)\n")),
    ("Sure! Here are three:\n\n- Antz (1998)\nGenres: Animation\n- Heat (1995)\n", 3, None),    # 2 of 3 only
    ("Sure! Here are three:\n\n- Antz (1998)\nGenres: Animation\n- Heat (1995)\n", 1,
     len("Sure! Here are three:\n\n- Antz (1998)\n")),
    ("- Alien (1979)\n- Alien (1979)\n- Alien (1979)\n", 2, None),   # a repeated title counts once
    ("1. Antz (1998)\n2. Heat (19", 2, None),                         # the second line is still being written
    ("", 3, None),
])
def test_end_of_titles_is_right_after_the_nth_complete_title_line(text, n, expected):
    from dualrec.llm.parse import end_of_titles

    assert end_of_titles(text, n) == expected
    if expected is not None:
        assert len(extract_titles(text[:expected])) == n


def test_truncated_output_drops_the_partial_last_line():
    text = "- Jurassic Park (1993)\n- The Expanse (2002)\n- The Last"
    assert extract_titles(text, truncated=True) == ["Jurassic Park (1993)", "The Expanse (2002)"]
    assert extract_titles(text + "\n", truncated=True)[-1] == "The Last"  # a complete last line is kept


def test_grounding_counts_hallucinations_history_and_duplicates(ml1m_top1000):
    cat = ml1m_top1000.catalog
    toy = int(cat.items.loc[cat.items["title"] == "Toy Story (1995)", "item"].iloc[0])
    matrix = int(cat.items.loc[cat.items["title"] == "The Matrix (1999)", "item"].iloc[0])
    text = ("Here you go:\n1. Matrix, The (1999)\n2. The Expanse: Leviathan Wakes (2027)\n3. Toy Story (1995)\n"
            "4. The Matrix (1999) (Action, Sci-Fi)")
    out = parse_and_ground(text, cat, history=np.array([toy]))
    assert out.items == [matrix]                                         # library-style title grounds too
    assert out.ungrounded == ["The Expanse: Leviathan Wakes (2027)"]     # invented: counted, not ranked
    assert out.in_history == ["Toy Story (1995)"]                        # real, but already watched
    assert len(out.titles) == 3                                          # the 4th line is the same film as the 1st


def test_prompt_renders_the_papers_example_from_templates(ml1m):
    cat = ml1m.catalog
    ids = {t: int(cat.items.loc[cat.items["raw_title"] == t, "item"].iloc[0]) for t in
           ["Bug's Life, A (1998)", "Antz (1998)", "Hercules (1997)", "Mulan (1998)", "Pocahontas (1995)",
            "Mission to Mars (2000)", "Toy Story (1995)"]}
    history = [ids["Toy Story (1995)"], ids["Bug's Life, A (1998)"], ids["Antz (1998)"], ids["Hercules (1997)"],
               ids["Mulan (1998)"], ids["Pocahontas (1995)"]]
    prompt = PromptBuilder(cat).prompt(history, ids["Mission to Mars (2000)"])
    lines = prompt.splitlines()
    assert lines[0] == "Below is a user's movie watching history:"
    assert lines[1] == "- A Bug's Life (1998) (Animation, Children's, Comedy)"     # the 5 most recent, oldest first
    assert lines[5] == "- Pocahontas (1995) (Animation, Children's, Musical, Romance)"
    assert "Toy Story" not in prompt                                                # the 6th most recent is left out
    assert "the system (LSTM) recommends: Mission to Mars (2000)." in prompt
    assert template("instruction").format(n=3) in prompt
    assert prompt.endswith("Recommendations:\n")
    alone = PromptBuilder(cat, hint=False).prompt(history, None)
    assert "LSTM" not in alone and lines[1] in alone


def test_finetune_records_follow_the_paper(ml1m_small, tmp_path):
    from dualrec.evaluation.protocols import make_split
    from dualrec.llm.finetune import build_records, read_jsonl, write_jsonl
    from dualrec.models import build_model

    split = make_split(ml1m_small.sequences(), "paper")
    cat = ml1m_small.catalog
    stage1 = build_model("mostpop").fit(split.train, cat)
    records, counts = build_records(stage1, split.train, cat, max_users=5)
    assert counts["users_used"] == len(records) == 5
    u = records[0]["user"]
    seq = split.train[int(np.flatnonzero(split.train.users == u)[0])]
    seq = seq[cat.has(seq)]
    history, last5 = seq[:-5], seq[-5:]
    for item in history[-5:]:
        assert f"- {cat.title(item)} (" in records[0]["input"]
    out_lines = records[0]["output"].splitlines()
    assert [line.split(". ", 1)[1].rsplit(" (", 1)[0] for line in out_lines] == cat.titles(last5[:3])
    top1 = stage1.recommend([history], 1).items[0][0]
    assert f"recommends: {cat.title(top1)}." in records[0]["input"]
    path = write_jsonl(records, tmp_path / "train.jsonl")
    assert read_jsonl(path) == records


def test_bad_jsonl_names_the_line(tmp_path):
    from dualrec.llm.finetune import read_jsonl

    p = tmp_path / "bad.jsonl"
    p.write_text('{"instruction": "a", "input": "b", "output": "c"}\n{"instruction": "a"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: record lacks \['input', 'output'\]"):
        read_jsonl(p)
