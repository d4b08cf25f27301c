"""The seeded tokenizer corpus, for the tests. It lives in corpora/ (at the repository's
root), which bench/tokens.py reads too, so that the benchmarks need not import tests/."""

from corpora.token_corpus import corpus, corpus_kinds, random_text

__all__ = ["corpus", "corpus_kinds", "random_text"]
