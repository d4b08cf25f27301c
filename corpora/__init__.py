"""Text sets that both the tests and the benchmarks evaluate the gateway on: the
labelled guard cases (PII and prompt injection, with how they are scored) and the
seeded tokenizer corpus.

They live beside tests/ and bench/ rather than in either, so that neither imports the
other: the unit tests hold the guards and the counter to floors on these sets, and
bench/guards.py and bench/tokens.py report the full figures on the same sets. Not
shipped (src/ is the product), not collected by pytest.
"""
