"""The labelled guard sets, for the tests. They live in corpora/ (at the repository's
root), which bench/guards.py reads too, so that the benchmarks need not import tests/."""

from corpora.guard_cases import (
    InjectionCase,
    PiiCase,
    Tally,
    injection_cases,
    pii_cases,
    score_pii,
)

__all__ = ["InjectionCase", "PiiCase", "Tally", "injection_cases", "pii_cases", "score_pii"]
