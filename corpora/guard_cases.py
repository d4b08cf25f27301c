"""The labelled guard sets (`pii_cases.jsonl`, `injection_cases.jsonl`, beside this file)
and how they are scored; shared by the unit tests and `bench/guards.py`."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

DATA = Path(__file__).resolve().parent


@dataclass
class PiiCase:
    text: str
    expected: list[tuple[str, str]]  # (kind, value)
    split: str  # "dev" (written before the rules) or "holdout" (after; never tuned on)


@dataclass
class InjectionCase:
    text: str
    attack: bool
    kind: str  # attack class, or "benign"


def pii_cases() -> list[PiiCase]:
    lines = (DATA / "pii_cases.jsonl").read_text().splitlines()
    return [PiiCase(d["text"], [(e["kind"], e["value"]) for e in d["expected"]], d["split"])
            for d in map(json.loads, lines)]


def injection_cases() -> list[InjectionCase]:
    lines = (DATA / "injection_cases.jsonl").read_text().splitlines()
    return [InjectionCase(d["text"], d["attack"], d.get("kind", "benign"))
            for d in map(json.loads, lines)]


@dataclass
class Tally:
    """Counts per finding, matched on (kind, exact value)."""

    tp: Counter[str] = field(default_factory=Counter)
    fp: Counter[str] = field(default_factory=Counter)
    fn: Counter[str] = field(default_factory=Counter)
    misses: list[tuple[str, str, str]] = field(default_factory=list)  # (what, kind, value)

    def add(self, expected: list[tuple[str, str]], got: list[tuple[str, str]]) -> None:
        want = Counter(expected)
        have = Counter(got)
        for kind, value in want | have:
            hit = min(want[(kind, value)], have[(kind, value)])
            self.tp[kind] += hit
            self.fn[kind] += want[(kind, value)] - hit
            self.fp[kind] += have[(kind, value)] - hit
            if want[(kind, value)] > hit:
                self.misses.append(("missed", kind, value))
            if have[(kind, value)] > hit:
                self.misses.append(("false", kind, value))

    def precision(self, kind: str | None = None) -> float:
        tp, fp = self._sum(self.tp, kind), self._sum(self.fp, kind)
        return tp / (tp + fp) if tp + fp else 1.0

    def recall(self, kind: str | None = None) -> float:
        tp, fn = self._sum(self.tp, kind), self._sum(self.fn, kind)
        return tp / (tp + fn) if tp + fn else 1.0

    @staticmethod
    def _sum(c: Counter[str], kind: str | None) -> int:
        return sum(c.values()) if kind is None else c[kind]


def score_pii(cases: list[PiiCase]) -> Tally:
    from tollway.guards import pii

    tally = Tally()
    for case in cases:
        got = [(f.kind, case.text[f.start:f.end]) for f in pii.find(case.text)]
        tally.add(case.expected, got)
    return tally
