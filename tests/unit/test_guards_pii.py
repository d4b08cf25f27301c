"""PII finding, redaction and restoring; the labelled set's precision and recall."""

from __future__ import annotations

import pytest
from corpora.guard_cases import pii_cases, score_pii

from tollway.guards import pii


def kinds_and_values(text: str) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start:f.end]) for f in pii.find(text)]


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("mail me at jane.doe+x@example.co.uk today", "email", "jane.doe+x@example.co.uk"),
    ("call (415) 555-2671 now", "phone", "(415) 555-2671"),
    ("ring +44 20 7946 0958 please", "phone", "+44 20 7946 0958"),
    ("mobile +49 151 23456789.", "phone", "+49 151 23456789"),
    ("card 4111-1111-1111-1111 exp", "credit_card", "4111-1111-1111-1111"),
    ("SSN 536-22-1748 on file", "us_ssn", "536-22-1748"),
    ("IBAN GB29 NWBK 6016 1331 9268 19, thanks", "iban", "GB29 NWBK 6016 1331 9268 19"),
    ("pay NL91ABNA0417164300 now", "iban", "NL91ABNA0417164300"),
    ("from 203.0.113.45:443", "ip_address", "203.0.113.45"),
    ("peer 2001:db8::8a2e:370:7334 down", "ip_address", "2001:db8::8a2e:370:7334"),
    ("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "secret", "AKIAIOSFODNN7EXAMPLE"),
])
def test_each_kind_is_found(text: str, kind: str, value: str) -> None:
    assert kinds_and_values(text) == [(kind, value)]


@pytest.mark.parametrize("text", [
    "Order 112-3948572-1234567 shipped on 2024-03-15 for $1,299.99",
    "Upgrade to v2.14.1; firmware version 10.2.0.1 is out",
    "Test card 4111 1111 1111 1112 fails Luhn",
    "IBAN DE89 3704 0044 0532 0130 01 has a bad checksum",
    "Request 3f2b8c1e-9a4d-4e6b-8f21-7c5d0e9a1b34 at 2024-03-15T10:22:31Z",
    "Commit 9fceb02d0ae598e95dc970b74767f19372d61af8 and ISBN 978-0-13-468599-1",
    "Unix time 1710498151; listen on 0.0.0.0:8080 and 127.0.0.1",
    "666-45-1234 cannot be an SSN; sklearn is not sk-learn",
    "Replace sk-XXXXXXXXXXXXXXXXXXXXXXXX with your key; icon@2x.png",
    "MAC 00:1A:2B:3C:4D:5E, ratio 16:9, std::vector",
])
def test_near_misses_are_not_flagged(text: str) -> None:
    assert kinds_and_values(text) == []


@pytest.mark.parametrize(("text", "kind", "value"), [
    # Shapes at the edges of the fast paths: the shortest token key (the gate looks for
    # runs of 15 key characters), an AWS secret split by "/", a PEM header with no body,
    # the shortest dotted quad, an unseparated card, spaced SSN, trunk-0 and "(0)" phones,
    # and non-ASCII text (scanned without the bytes fast path).
    ("token xoxb-1-abcdefgh here", "secret", "xoxb-1-abcdefgh"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "secret",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("-----BEGIN PRIVATE KEY-----", "secret", "-----BEGIN PRIVATE KEY-----"),
    ("dns 8.8.4.4 answers", "ip_address", "8.8.4.4"),
    ("paid 4111111111111111.", "credit_card", "4111111111111111"),
    ("SSN 536 22 1748 ok", "us_ssn", "536 22 1748"),
    ("call 020 7946 0958 today", "phone", "020 7946 0958"),
    ("ring +44 (0) 20 7946 0958", "phone", "+44 (0) 20 7946 0958"),
    ("Llámame al +34 612 34 56 78 mañana.", "phone", "+34 612 34 56 78"),
])
def test_edge_shapes_are_found(text: str, kind: str, value: str) -> None:
    assert kinds_and_values(text) == [(kind, value)]


def test_find_all_is_find_per_text() -> None:
    # The texts are scanned joined: nothing may run from one into the next (a phone
    # split over two messages, an IBAN's head in one and its digits in the next).
    texts = ["call 415 555", "2671 now", "GB29 NWBK", "6016 1331 9268 19", "",
             "card 4111 1111 1111 1111", "peer 2001:db8::8a2e:370:7334", "aws", "_secret_key",
             "Llámame al +34 612 34 56 78", "mail a@example.com", "-----BEGIN", "PRIVATE KEY-----"]
    found = pii.find_all(texts)
    assert found == [pii.find(t) for t in texts]
    assert [[f.kind for f in fs] for fs in found] == [
        [], [], [], [], [], ["credit_card"], ["ip_address"], [], [], ["phone"], ["email"], [], []]


def test_secret_kinds_are_named() -> None:
    text = "key ghp_" + "a1B2" * 9 + " and sk_live_" + "Zx9" * 8
    assert [f.detail for f in pii.find(text)] == ["github_token", "stripe_key"]


def test_redact_uses_typed_placeholders_and_reuses_them() -> None:
    text = "Write to ann@example.com or ANN@example.com; bob@example.com; call +44 20 7946 0958"
    red = pii.redact(text, pii.find(text))
    assert red.text == "Write to [EMAIL_1] or [EMAIL_1]; [EMAIL_2]; call [PHONE_1]"
    assert red.mapping == {"[EMAIL_1]": "ann@example.com", "[EMAIL_2]": "bob@example.com",
                           "[PHONE_1]": "+44 20 7946 0958"}
    assert pii.restore(red.text, red.mapping).replace("ANN@", "ann@") == text.replace(
        "ANN@", "ann@")


def test_placeholders_are_shared_across_messages() -> None:
    first = pii.redact("card 4111 1111 1111 1111", pii.find("card 4111 1111 1111 1111"))
    text = "same card 4111-1111-1111-1111, new mail x@example.org"
    second = pii.redact(text, pii.find(text), first.placeholders)
    assert second.text == "same card [CREDIT_CARD_1], new mail [EMAIL_1]"


def test_redact_skips_placeholders_the_caller_typed() -> None:
    text = "template says [EMAIL_1]; real one is a@example.com"
    red = pii.redact(text, pii.find(text))
    assert red.text == "template says [EMAIL_1]; real one is [EMAIL_2]"
    assert pii.restore(red.text, red.mapping) == text


def test_every_kind_round_trips() -> None:
    for case in pii_cases():
        found = pii.find(case.text)
        red = pii.redact(case.text, found)
        for f in found:
            assert case.text[f.start:f.end] not in red.text
        assert pii.restore(red.text, red.mapping) == case.text


def test_stream_restorer_handles_a_split_placeholder() -> None:
    restorer = pii.StreamRestorer({"[EMAIL_1]": "a@example.com"})
    out = [restorer.feed(d) for d in ("Mail [EM", "AIL_1] now [", "not a placeholder")]
    out.append(restorer.flush())
    assert "".join(out) == "Mail a@example.com now [not a placeholder"
    assert out[0] == "Mail "


def test_labelled_set_meets_the_acceptance_bar() -> None:
    cases = pii_cases()
    assert len(cases) >= 300
    tally = score_pii(cases)
    assert tally.recall() >= 0.98, tally.misses
    assert tally.precision() >= 0.95, tally.misses
    holdout = score_pii([c for c in cases if c.split == "holdout"])
    assert holdout.recall() >= 0.95 and holdout.precision() >= 0.95, holdout.misses
