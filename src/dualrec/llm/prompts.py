"""Stage-2 prompts, rendered from the template files in ``dualrec/prompts/`` (none of the wording lives in code).

The paper's prompt (DUALRec section 4.2.2) is three parts; we keep them as the paper's fine-tuning schema names them,
so the same text serves zero-shot generation and LoRA training:

* ``input``: the 5 most recent movies, one ``- Title (Year) (Genre, Genre)`` line each, oldest first, plus the
  Stage-1 hint "the system (LSTM) recommends: Title (Year)" (``input_dualrec.txt``; ``input_llm_only.txt`` drops
  the hint for the LLM-alone baseline);
* ``instruction``: "recommend 3 more full movie titles with release years and genres ..." (``instruction.txt``);
* ``output``: the answer, one ``N. Title (Year) (Genres)`` line each (``answer_line.txt``); only for training.

``frame.txt`` joins them into one completion prompt ending with "Recommendations:" and a newline, because the
embedded model is a base model with no chat template (a completion cue is what makes it answer). Chat backends send
the same text as the user message, after ``system.txt``.

Design choice where the paper is silent: titles are written in natural order ("A Bug's Life (1998)", the
Catalog's normalised title) rather than MovieLens's library order ("Bug's Life, A (1998)"), since that is how a
language model has seen them written and how it will write them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Sequence

from dualrec.data.catalog import Catalog

N_RECENT = 5


@lru_cache(maxsize=None)
def template(name: str) -> str:
    """The text of ``dualrec/prompts/<name>.txt`` without its final newline."""
    path = files("dualrec").joinpath("prompts", f"{name}.txt")
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {name!r} not found in dualrec/prompts/")
    text = path.read_text(encoding="utf-8")
    return text[:-1] if text.endswith("\n") else text


def describe_item(catalog: Catalog, item: int, line: str = "history_line") -> str:
    genres = ", ".join(catalog.genres(item)) or "unknown genre"
    return template(line).format(title=catalog.title(item), genres=genres)


@dataclass(frozen=True)
class PromptBuilder:
    """Builds Stage-2 prompts for one catalog. ``hint=False`` gives the LLM-alone prompt (no Stage-1 title)."""

    catalog: Catalog
    n_recommend: int = 3
    n_recent: int = N_RECENT
    hint: bool = True

    def input_text(self, history: Sequence[int], stage1_item: int | None) -> str:
        recent = [int(i) for i in list(history)[-self.n_recent:] if int(i) in self.catalog]
        lines = "\n".join(describe_item(self.catalog, i) for i in recent)
        if self.hint:
            if stage1_item is None:
                raise ValueError("PromptBuilder(hint=True) needs the Stage-1 top-1 item")
            return template("input_dualrec").format(history=lines, stage1_title=self.catalog.title(stage1_item))
        return template("input_llm_only").format(history=lines)

    def instruction(self) -> str:
        return template("instruction").format(n=self.n_recommend)

    def join(self, input_text: str, instruction: str) -> str:
        return frame(input_text, instruction)

    def prompt(self, history: Sequence[int], stage1_item: int | None) -> str:
        return self.join(self.input_text(history, stage1_item), self.instruction())

    def answer(self, items: Sequence[int]) -> str:
        """The training target: numbered lines ``1. Title (Year) (Genres)``."""
        return "\n".join(template("answer_line").format(rank=r, title=self.catalog.title(i),
                                                        genres=", ".join(self.catalog.genres(i)) or "unknown genre")
                         for r, i in enumerate(items, 1))

    def record(self, history: Sequence[int], stage1_item: int | None, targets: Sequence[int]) -> dict:
        """One instruction/input/output example, the paper's fine-tuning schema."""
        return {"instruction": self.instruction(), "input": self.input_text(history, stage1_item),
                "output": self.answer(targets)}


def frame(input_text: str, instruction: str) -> str:
    """The completion prompt (ends with a newline, right where the answer's first line starts)."""
    return template("frame").format(input=input_text, instruction=instruction) + "\n"


def system_message() -> str:
    return template("system")
