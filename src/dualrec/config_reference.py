"""The configuration reference (docs/configuration.md), generated from the typed configs themselves: every key of
an experiment YAML's ``data`` and ``evaluation`` sections and of each model's ``model`` section, its default and
what it does (the comment beside the field in the source). Generating it keeps the page from drifting from the
code: ``python -m dualrec.config_reference > docs/configuration.md``."""

from __future__ import annotations

import dataclasses
import inspect
import re

from dualrec.config import DataConfig, EvalConfig, ExperimentConfig
from dualrec.models import MODELS, get_model_class

HEADER = """# Configuration reference

Every key an experiment YAML (`configs/*.yaml`) can set, its default, and what it does; override any of them on
the command line with `--set section.key=value` (e.g. `--set model.epochs=2`). Generated from the typed configs:
`python -m dualrec.config_reference > docs/configuration.md` (a test fails when this page is out of date).
"""


def field_comments(cls) -> dict[str, str]:
    """``{field: comment}`` from the ``# ...`` comment beside each field of a dataclass and its bases; a comment
    line right below a commented field, indented past the fields or aligned after its ``#``, continues it."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        names = {f.name for f in dataclasses.fields(klass)}
        previous = None
        for line in inspect.getsource(klass).splitlines():
            m = FIELD_LINE.match(line)
            if m and m.group(1) in names:
                previous = m.group(1) if m.group(2) else None
                if m.group(2):
                    out[previous] = m.group(2).strip()
                continue
            c = COMMENT_LINE.match(line)
            if c and previous and (len(c.group(1)) > 4 or c.group(2).startswith("  ")):
                out[previous] += " " + c.group(2).strip()
            else:
                previous = None
    return out


FIELD_LINE = re.compile(r"^    (\w+)\s*:[^#]*(?:#(.*))?$")
COMMENT_LINE = re.compile(r"^(\s*)#(.*)$")


# keys whose meaning is the same wherever they appear, for fields without a comment of their own
COMMON = {
    "seed": "random seed (initialisation, sampling); a model takes the experiment's `seed` unless it sets one",
    "ks": "the list lengths k every metric is reported at (HR@k, NDCG@k, MRR@k)",
    "batch_size": "rows (users, windows or prompts) per forward pass",
    "lr": "learning rate (Adam)",
    "weight_decay": "L2 weight decay",
    "progress": "progress bars (and, for neural models, one line per epoch)",
    "dropout": "dropout probability",
}


def default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).replace("|", "\\|")


def table(cls, prefix: str) -> str:
    comments = field_comments(cls)
    lines = ["| key | default | what it does |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        value = default_of(f)
        shown = "null" if value is None else value
        lines.append(f"| `{prefix}{f.name}` | `{_cell(shown)}` | {_cell(comments.get(f.name) or COMMON.get(f.name, '-'))} |")
    return "\n".join(lines)


def markdown() -> str:
    parts = [HEADER, "## Top level\n", "| key | default | what it does |", "|---|---|---|",
             "| `seed` | `42` | seeds the split-independent randomness: model initialisation, sampling, "
             "bootstrap |", "| `model.name` | `lstm` | which model: one of "
             + ", ".join(f"`{n}`" for n in MODELS) + " |", ""]
    assert {f.name for f in dataclasses.fields(ExperimentConfig)} == {"model", "data", "evaluation", "seed"}
    parts += ["## `data`\n", table(DataConfig, "data."), "", "## `evaluation`\n", table(EvalConfig, "evaluation."),
              ""]
    for name in MODELS:
        cls = get_model_class(name).config_class
        doc = (get_model_class(name).__doc__ or "").strip().split("\n\n")[0]
        parts += [f"## `model` for `name: {name}` ({cls.__name__})\n"] + ([_cell(doc), ""] if doc else []) + [
            table(cls, "model."), ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(markdown(), end="")
