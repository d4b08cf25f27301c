"""Find personal data and secrets in text, replace them with typed placeholders, and put
the originals back in a reply.

Speed: a request's text is scanned by a handful of cheap regexes that only *propose*
candidates (each gated by a substring test, so text with no `@` never runs the email
pattern); the validators — Luhn, the IBAN and SSN rules (python-stdnum), phone metadata
(phonenumbers, Google's libphonenumber) and `ipaddress` — run on the few candidates.
Precision comes from those checks and from the shape of a match (what touches it, the
words just before it), not from lists of known values. The common non-candidates —
dates, versions, prices — are dismissed by their shape (digits read as 0), decided once
per shape. `find_all` runs the gates and the number scan once over all of a request's
texts.

Decided behaviour worth knowing:
- Phones: a number written with `+` or `00` counts when its country code exists and it
  has 8-15 digits (E.164); a national one must be a valid number for the US (NANP) or,
  written with its trunk `0`, for one of `NATIONAL_REGIONS`. A bare run of digits (no
  separators, no `+`) only counts right after a word like "call" or "phone".
- Loopback and unspecified addresses (127.0.0.1, ::1, 0.0.0.0) and netmasks are not
  flagged: they identify nobody and appear in every code question.
- Stripe publishable keys (`pk_`) are public by design and not flagged.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Final, Literal

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.us import ssn as stdnum_ssn

Kind = Literal["email", "phone", "credit_card", "us_ssn", "iban", "ip_address", "secret"]
KINDS: Final[tuple[Kind, ...]] = (
    "email", "phone", "credit_card", "us_ssn", "iban", "ip_address", "secret")

# Regions whose national format (with the trunk 0) is recognised without a `+`.
NATIONAL_REGIONS: Final = ("GB", "DE", "FR", "IN", "IT", "NL", "AU", "JP")

# When two candidates overlap the more specific kind wins (a key inside a URL is a
# secret, not an email; a 16-digit card is not a phone).
_PRIORITY: Final[dict[Kind, int]] = {
    "secret": 0, "iban": 1, "credit_card": 2, "us_ssn": 3, "email": 4, "ip_address": 5,
    "phone": 6}


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    start: int
    end: int
    detail: str = ""  # secrets: which kind of key (aws_access_key, openai_key, ...)


# -- candidates --------------------------------------------------------------------------

# Secrets: distinctive prefixes and lengths. Each pattern opens with a literal (so the
# regex engine skips straight to it) and runs only when one of its gate substrings
# occurs. A key glued to a preceding letter or digit is the tail of something else
# (checked in code: a leading \b would cost the literal-prefix fast path).
@dataclass(frozen=True, slots=True)
class _Secret:
    name: str
    gates: tuple[str, ...]
    pattern: re.Pattern[str]
    # Every match holds a run of `_TOKEN_MIN` or more key characters (below), so text
    # without such a run need not look for this key's gates. All but a PEM block do.
    token: bool


def _secret(name: str, gates: tuple[str, ...], pattern: str, flags: int = 0, *,
            token: bool = True) -> _Secret:
    return _Secret(name, gates, re.compile(pattern, flags), token)


_SECRETS: Final = (
    _secret("private_key", ("-----BEGIN",),
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END (?:[A-Z0-9]+ )*"
            r"PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s]*)", re.S, token=False),
    _secret("aws_access_key", ("AKIA", "ASIA"), r"(?:AKIA|ASIA)[A-Z2-7]{16}(?![A-Za-z0-9])"),
    # The 40-character secret has no prefix: only next to its variable name.
    _secret("aws_secret_key", ("aws", "AWS"),
            r"(?i:aws_?secret_?(?:access_?)?key)[\"']?\s*[:=]\s*[\"']?"
            r"(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"),
    _secret("anthropic_key", ("sk-ant-",), r"sk-ant-[a-z]{3,5}\d{2}-[A-Za-z0-9_-]{20,}"),
    _secret("openai_key", ("sk-",), r"sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    _secret("github_token", ("gh", "github_pat_"),
            r"g(?:h[pousr]_[A-Za-z0-9]{36,}|ithub_pat_[A-Za-z0-9_]{40,})"),
    _secret("stripe_key", ("k_",), r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"),
    _secret("slack_token", ("xox",), r"xox[abposr]-(?:\d+-)+[A-Za-z0-9]{8,}"),
    _secret("slack_webhook", ("hooks.slack.com",),
            r"https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+"),
    _secret("google_api_key", ("AIza",), r"AIza[0-9A-Za-z_-]{35}"),
    _secret("jwt", ("eyJ",), r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"),
    _secret("huggingface_token", ("hf_",), r"hf_[A-Za-z0-9]{30,}"),
    _secret("gitlab_token", ("glpat-",), r"glpat-[A-Za-z0-9_-]{20,}"),
    _secret("sendgrid_key", ("SG.",), r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}"),
    _secret("npm_token", ("npm_",), r"npm_[A-Za-z0-9]{36}"),
)
# The gates as flat (gate, key name) lists: one loop, not a generator per key.
_TEXT_GATES: Final = tuple((g, s.name) for s in _SECRETS if not s.token for g in s.gates)
_ALL_GATES: Final = _TEXT_GATES + tuple((g, s.name) for s in _SECRETS if s.token for g in s.gates)
_TOKEN_MIN: Final = 15  # xoxb-1-abcdefgh, the shortest
# Key characters ([A-Za-z0-9_+/-]: base64 too, for the AWS secret) to "a" and the rest
# to " ", byte by byte: a run of `_TOKEN_MIN` of them is then one substring test, where
# the token keys' gates are 17 (prose and most code have no such run).
_KEY_CHARS: Final = bytes(
    ord("a") if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "_+/-") else ord(" ")
    for b in range(256))
_TOKEN_RUN: Final = b"a" * _TOKEN_MIN

# Emails are found around each "@" (a scan for "@" is a memchr); the local part is
# matched backwards from it with a reversed pattern, the domain forwards.
_LOCAL_REV: Final = re.compile(r"[A-Za-z0-9_+'.-]{1,64}")
_DOMAIN: Final = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*\.(?P<tld>[A-Za-z]{2,24})(?![A-Za-z0-9-])")
# Asset names like icon@2x.png look like addresses.
_FILE_TLDS: Final = frozenset({"png", "jpg", "jpeg", "gif", "webp", "svg", "ico", "bmp", "avif",
                               "css", "js", "ts", "py", "json", "md", "txt", "pdf"})

# One scan proposes every numeric candidate (cards, SSNs, phones, IPv4, and IBANs by
# their check digits): a run of digits joined by single separators or parentheses
# ("+44 (0) 20", "(415) 555"). It needs 4 digits so the many short numbers of ordinary
# text never reach Python; a leading + or "(" is picked up in code. ASCII text is
# scanned as bytes whose digits all read "0" (bytes.translate, a table lookup per
# byte): the pattern then opens with a literal, which the engine finds with a fast
# scan instead of testing a character class at every position, and the lookahead
# turns a short number away before the repeat starts (8.9 KB: 72 -> 23 µs).
_RUN: Final = r"D(?=[ .\-()]{0,2}D[ .\-()]{0,2}D[ .\-()]{0,2}D)(?:[ .\-]?\(?D|\)[ .\-]?D){3,}"
_RUN_OF_ZEROS: Final = re.compile(_RUN.replace("D", "0").encode())
_NUMBER: Final = re.compile(_RUN.replace("D", "[0-9]"))  # non-ASCII text: char offsets
_ZEROS: Final = bytes.maketrans(b"123456789", b"000000000")
_IBAN: Final = re.compile(
    r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
_IBAN_START: Final = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}")
_IPV6: Final = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{1,4}(?![\w:])")

_SSN_SHAPE: Final = re.compile(r"\d{3}([- ])\d{2}\1\d{4}")
_IPV4_SHAPE: Final = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_CARD_SHAPE: Final = re.compile(
    r"\d{13,19}|\d{4}(?:([ -])\d{4}){2}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{4,5}")
_NANP_SHAPE: Final = re.compile(r"(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}")
_DATE_SHAPE: Final = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
# Card brands by leading digits (IIN ranges): a Luhn-valid 16-digit order number starting
# with 1, 7, 8, 9 or 0 is not a card.
_CARD_IIN: Final = re.compile(r"4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|3(?:0[0-5]|[689])|"
                              r"6(?:011|4[4-9]|5|2)|35(?:2[89]|[3-8])|5[06-8]|6[0-9]")

# The words just before a number that say what it is.
_NOT_PERSONAL_BEFORE: Final = re.compile(
    r"(?i)(?:order|invoice|ticket|tracking|parcel|shipment|ref(?:erence)?|case|sku|part|"
    r"serial|isbn|issn|gtin|ean|upc|lot|batch|model|transaction|txn|confirmation|booking|"
    r"po box|zip|postcode|version|build|release|firmware|chapter|section|step|figure|table|"
    r"page|clause|id|no\.?|#)\W{0,3}(?:(?:number|no\.?|id|code|#)\W{0,3})?$")
_VERSION_BEFORE: Final = re.compile(r"(?i)(?:\bv|==|@|version\s*|ver\.?\s*)$")
_PHONE_BEFORE: Final = re.compile(
    r"(?i)\b(?:call|phone|tel|telephone|mobile|cell|fax|whatsapp|sms|text|dial|ring|reach|"
    r"contact|number|hotline)\b\W{0,12}(?:\w+\W{1,3}){0,2}$")


def find(text: str) -> list[Finding]:
    """Every personal value and secret in `text`, by position, without overlaps."""
    return find_all([text])[0]


def find_all(texts: list[str]) -> list[list[Finding]]:
    """`find` for each of `texts`. The gates and the number scan run once over the texts
    joined by newlines, which no pattern crosses (a request's many short messages would
    otherwise pay for each call per message); what a gate lets through is then looked
    for in each text on its own."""
    joined = "\n".join(texts)
    found: list[list[Finding]] = [[] for _ in texts]
    if _secret_gates(joined):
        for i, text in enumerate(texts):
            found[i] += _secrets(text)
    if "@" in joined:
        for i, text in enumerate(texts):
            if "@" in text:
                found[i] += _emails(text)
    starts = list(accumulate((len(t) + 1 for t in texts[:-1]), initial=0))
    for start, end in _runs(joined):
        i = bisect_right(starts, start) - 1
        number = _number(texts[i], start - starts[i], end - starts[i])
        if number is not None:
            found[i].append(number)
    if _IPV6_HINT.search(joined):
        for i, text in enumerate(texts):
            if _IPV6_HINT.search(text):
                found[i] += _ipv6(text)
    return [_resolve(f) for f in found]


def _resolve(found: list[Finding]) -> list[Finding]:
    if len(found) < 2:
        return found
    kept: list[Finding] = []
    for f in sorted(found, key=lambda f: (_PRIORITY[f.kind], f.start)):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    kept.sort(key=lambda f: f.start)
    return kept


def _secret_gates(text: str) -> set[str]:
    """The keys whose gates occur in `text`."""
    has_token = _TOKEN_RUN in text.encode("utf-8", "surrogatepass").translate(_KEY_CHARS)
    return {name for gate, name in (_ALL_GATES if has_token else _TEXT_GATES) if gate in text}


def _secrets(text: str) -> Iterator[Finding]:
    hit = _secret_gates(text)
    for sec in _SECRETS:
        if sec.name not in hit:
            continue
        for m in sec.pattern.finditer(text):
            start, end = m.span("value") if "value" in sec.pattern.groupindex else m.span()
            if "value" not in sec.pattern.groupindex and start and text[start - 1].isalnum():
                continue  # the tail of a longer token
            value = text[start:end]
            if sec.name == "private_key":
                end = start + len(value.rstrip())
            elif sec.name == "openai_key" and not _looks_random(value[3:]):
                continue  # "sk-XXXXXXXXXXXXXXXXXXXX", "sk-your-key-goes-here-please"
            yield Finding("secret", start, end, sec.name)


def _looks_random(s: str) -> bool:
    """A key mixes upper, lower and digits; a placeholder or a slug does not."""
    return (len(s) >= 32 and any(c.isdigit() for c in s) and any(c.isupper() for c in s)
            and any(c.islower() for c in s))


def _emails(text: str) -> Iterator[Finding]:
    at = text.find("@")
    while at != -1:
        lo = max(0, at - 64)
        m = _LOCAL_REV.match(text[lo:at][::-1])
        if m:
            local_start = at - m.end()
            while local_start < at and text[local_start] in ".'-":
                local_start += 1  # a quote or dash before the address is not part of it
            d = _DOMAIN.match(text, at + 1)
            if (d and local_start < at and text[at - 1] != "."
                    and d.group("tld").lower() not in _FILE_TLDS):
                yield Finding("email", local_start, d.end())
        at = text.find("@", at + 1)


def _runs(text: str) -> Iterator[tuple[int, int]]:
    """The spans of the numeric candidates."""
    if text.isascii():
        return (m.span() for m in _RUN_OF_ZEROS.finditer(text.encode().translate(_ZEROS)))
    return (m.span() for m in _NUMBER.finditer(text))


def _number(text: str, start: int, end: int) -> Finding | None:
    """What the run of digits text[start:end] is, if anything."""
    before = text[start - 1] if start else " "
    # An IBAN may start further back: DE89 3704..., GB29 NWBK 6016...,
    # NL91ABNA0417164300. The run then follows a capital or a space and a capital (a
    # digit there would have joined the run).
    if "A" <= before <= "Z" or (before == " " and start > 1 and "A" <= text[start - 2] <= "Z"):
        iban = _iban_before(text, start)
        if iban is not None and iban.end >= end:
            return iban
    if before.isalnum() or end - start < 7:
        return None  # glued to a word; or 2024, 10:30 (1.1.1.1 is the shortest candidate)
    run = text[start:end]
    if start and text[start - 1] == "(" and ")" in run[:5]:
        start -= 1  # (415) 555-2671
    elif start and text[start - 1] == "+":
        start -= 1
        if start and text[start - 1] == "(":
            start -= 1  # (+44) 20 ...
    run = text[start:end]
    if not _plausible(run.encode().translate(_ZEROS).decode()):
        return None  # a date, a version, a price
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    if _IPV4_SHAPE.fullmatch(run):
        # Addresses sit in URLs and logs: a slash, colon or port may touch them.
        if not (before.isalnum() or before in "._-" or after.isalnum() or after in "_"
                or (after == "." and text[end + 1:end + 2].isdigit())
                or _version_context(text[max(0, start - 24):start])) and _public_ipv4(run):
            return Finding("ip_address", start, end)
        return None
    # Part of a word, an identifier or a longer dotted/dashed token: not a value.
    if (before.isalnum() or before in "_-./:@#" or after.isalnum() or after in "_@"
            or (after in "-./:" and text[end + 1:end + 2].isalnum())):
        return None
    digits = [c for c in run if c.isdigit()]
    if len(digits) < 7:
        return None
    kind = _classify_number(text, start, run, "".join(digits))
    return None if kind is None else Finding(kind, start, end)


_SHAPES: dict[str, bool] = {}  # filled up to 4,096 shapes, then computed each time


def _plausible(shape: str) -> bool:
    """Whether a run of this shape (its digits read "0") can be anything at all: an
    IPv4 address, or 7 digits or more not shaped as a date (an SSN or a card never is).
    The checks `_number` and `_classify_number` would make first, once per shape."""
    known = _SHAPES.get(shape)
    if known is None:
        known = bool(_IPV4_SHAPE.fullmatch(shape)) or (
            shape.count("0") >= 7 and not _DATE_SHAPE.fullmatch(shape))
        if len(_SHAPES) < 4096 and len(shape) <= 64:
            _SHAPES[shape] = known
    return known


def _classify_number(text: str, start: int, run: str, digits: str) -> Kind | None:
    head = text[max(0, start - 24):start]
    if _SSN_SHAPE.fullmatch(run):
        if stdnum_ssn.is_valid(digits) and not _NOT_PERSONAL_BEFORE.search(head):
            return "us_ssn"
        return None
    if (13 <= len(digits) <= 19 and _CARD_SHAPE.fullmatch(run) and _CARD_IIN.match(digits)
            and luhn.is_valid(digits)):
        return "credit_card"
    if _is_phone(run, digits, head):
        return "phone"
    return None


def _version_context(head: str) -> bool:
    return bool(_VERSION_BEFORE.search(head) or _NOT_PERSONAL_BEFORE.search(head))


def _public_ipv4(run: str) -> bool:
    if any(len(p) > 1 and p[0] == "0" for p in run.split(".")):
        return False  # 01.02.2024 is a date
    try:
        ip = ipaddress.IPv4Address(run)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_unspecified or run.startswith("255."))


def _is_phone(run: str, digits: str, head: str) -> bool:
    if _DATE_SHAPE.fullmatch(run) or _NOT_PERSONAL_BEFORE.search(head):
        return False
    separated = any(c in run for c in " .-()")
    if run[0] == "+" or digits.startswith("00"):
        # International: the country code must exist; E.164 allows at most 15 digits.
        intl = digits[2:] if run[0] != "+" else digits
        return 8 <= len(intl) <= 15 and any(
            int(intl[:k]) in COUNTRY_CODE_TO_REGION_CODE for k in (1, 2, 3))
    if not separated and not _PHONE_BEFORE.search(head):
        return False  # a bare run of digits is an id until the text says it is a phone
    if _NANP_SHAPE.fullmatch(run):
        # Written as a US number: the area code and exchange cannot start with 0 or 1.
        local = digits[-10:]
        return local[0] not in "01" and local[3] not in "01"
    regions = ("US", *NATIONAL_REGIONS) if digits[0] == "0" else ("US",)
    for region in regions:
        try:
            num = phonenumbers.parse(run, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(num):
            return True
    return False


def _iban_before(text: str, start: int) -> Finding | None:
    m = _IBAN_START.search(text, max(0, start - 14), start + 2)
    return _iban_at(text, m.start()) if m else None


def _iban_at(text: str, pos: int) -> Finding | None:
    m = _IBAN.match(text, pos)
    if m is None or (pos and text[pos - 1].isalnum()):
        return None
    # The pattern may run on into a following code: take the longest valid prefix that
    # ends at a group boundary (any length when written without spaces).
    value = m.group()
    spaced = " " in value
    for e in range(len(value), 14, -1):
        if (not spaced or e == len(value) or value[e] == " ") and stdnum_iban.is_valid(value[:e]):
            return Finding("iban", pos, pos + e)
    return None


_HEX_COLON: Final = frozenset("0123456789abcdefABCDEF:")
# Every address has two colons at most 4 hex digits apart; prose and most code do not
# (the pattern opens with a literal: a scan of the text's colons).
_IPV6_HINT: Final = re.compile(r":[0-9A-Fa-f]{0,4}:")


def _ipv6(text: str) -> Iterator[Finding]:
    """The pattern only runs on runs of hex digits and colons holding two colons or
    more: run over the whole text it tries every position (~60 µs a KB of code)."""
    n, pos = len(text), text.find(":")
    while pos != -1:
        lo = pos
        while lo > 0 and pos - lo < 40 and text[lo - 1] in _HEX_COLON:
            lo -= 1
        hi = pos
        while hi < n and hi - lo < 46 and text[hi] in _HEX_COLON:
            hi += 1
        if text.count(":", lo, hi) >= 2:
            # pos/endpos, not a slice: the lookbehind still sees the character before.
            yield from _ipv6_in(text, lo, min(n, hi + 1))
        pos = text.find(":", max(hi, pos + 1))


def _ipv6_in(text: str, lo: int, hi: int) -> Iterator[Finding]:
    for m in _IPV6.finditer(text, lo, hi):
        try:
            ip = ipaddress.IPv6Address(m.group())
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_unspecified) and any(c.isdigit() for c in m.group()):
            yield Finding("ip_address", m.start(), m.end())


# -- redaction -------------------------------------------------------------------------

_LABEL: Final[dict[Kind, str]] = {
    "email": "EMAIL", "phone": "PHONE", "credit_card": "CREDIT_CARD", "us_ssn": "US_SSN",
    "iban": "IBAN", "ip_address": "IP_ADDRESS", "secret": "SECRET"}
_PLACEHOLDER: Final = re.compile(
    r"\[(?:EMAIL|PHONE|CREDIT_CARD|US_SSN|IBAN|IP_ADDRESS|SECRET)_\d+\]")
PLACEHOLDER_MAX_LEN: Final = len("[IP_ADDRESS_99999]")


@dataclass
class Placeholders:
    """One request's placeholders: the same value gets the same placeholder in every
    message of the request, so the model still sees that two mentions are one person."""

    originals: dict[str, str] = field(default_factory=dict)  # placeholder -> value
    _by_value: dict[tuple[Kind, str], str] = field(default_factory=dict)
    _counts: dict[Kind, int] = field(default_factory=dict)

    def for_value(self, kind: Kind, value: str, text: str) -> str:
        key = (kind, _normalise(kind, value))
        ph = self._by_value.get(key)
        if ph is None:
            n = self._counts.get(kind, 0)
            while True:  # never reuse a placeholder the caller typed themselves
                n += 1
                ph = f"[{_LABEL[kind]}_{n}]"
                if ph not in text:
                    break
            self._counts[kind] = n
            self._by_value[key] = ph
            self.originals[ph] = value
        return ph


def _normalise(kind: Kind, value: str) -> str:
    if kind == "email":
        return value.lower()
    if kind in ("phone", "credit_card", "us_ssn", "iban"):
        return "".join(c for c in value if c.isalnum()).upper()
    return value


@dataclass(frozen=True, slots=True)
class Redacted:
    text: str
    placeholders: Placeholders

    @property
    def mapping(self) -> dict[str, str]:
        return self.placeholders.originals


def redact(text: str, findings: list[Finding], placeholders: Placeholders | None = None
           ) -> Redacted:
    """`text` with each finding replaced by its placeholder. Pass the `Placeholders` of
    the request's earlier messages to keep numbering and reuse consistent."""
    ph = placeholders if placeholders is not None else Placeholders()
    if not findings:
        return Redacted(text, ph)
    parts: list[str] = []
    pos = 0
    for f in findings:
        parts += (text[pos:f.start], ph.for_value(f.kind, text[f.start:f.end], text))
        pos = f.end
    parts.append(text[pos:])
    return Redacted("".join(parts), ph)


def restore(text: str, mapping: dict[str, str]) -> str:
    """Put the originals back for the caller; placeholders not in `mapping` stay."""
    if not mapping or "[" not in text:
        return text
    return _PLACEHOLDER.sub(lambda m: mapping.get(m.group(), m.group()), text)


@dataclass
class StreamRestorer:
    """`restore` over a stream of text deltas: a placeholder split across two chunks is
    held back until it is complete (at most `PLACEHOLDER_MAX_LEN` characters)."""

    mapping: dict[str, str]
    _held: str = ""

    def feed(self, delta: str) -> str:
        text = self._held + delta
        cut = text.rfind("[")
        if cut != -1 and "]" not in text[cut:] and len(text) - cut < PLACEHOLDER_MAX_LEN:
            self._held, text = text[cut:], text[:cut]
        else:
            self._held = ""
        return restore(text, self.mapping)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return restore(text, self.mapping)
