"""Evaluation: protocols (strict, paper, chrono), metrics, the single evaluator, reports."""

from dualrec.evaluation.evaluator import DEFAULT_KS, EvalResult, evaluate
from dualrec.evaluation.protocols import PROTOCOLS, EvalCases, Split, make_split

__all__ = ["DEFAULT_KS", "PROTOCOLS", "EvalCases", "EvalResult", "Split", "evaluate", "make_split"]
