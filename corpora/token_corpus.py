"""A deterministic corpus of varied texts for checking tokenizers against each other.

Generated from a seed, so nothing large is committed: code in several languages,
prose in many scripts, emoji and ZWJ sequences, numbers, whitespace runs, long
repeats, special-token look-alikes, random Unicode and random bytes read as latin-1.
"""

from __future__ import annotations

import random
from collections.abc import Callable

_WORDS_TEXT = ("the quick brown fox jumps over lazy dog token count price budget request "
          "gateway stream reply model cache prompt system user assistant tool call "
          "I'm you're they've we'll she'd it's DON'T Won'T O'Neil naïve café résumé")
_WORDS = _WORDS_TEXT.split()

_SCRIPTS = {
    "zh": "我们今天讨论令牌计数的准确性以及网关的性能问题这是一个测试句子",
    "ja": "東京で会議がありますカタカナとひらがなを混ぜたテキストですトークン",
    "ko": "안녕하세요오늘은토큰계산에대해이야기하겠습니다한국어문장입니다",
    "ar": "مرحبا بكم في اختبار عد الرموز هذه جملة باللغة العربية للتجربة",
    "hi": "नमस्ते यह टोकन गिनती का परीक्षण है हिंदी में एक वाक्य",
    "ru": "Привет это проверка подсчёта токенов русский текст ЁЖИК ёжик",
    "el": "Καλημέρα αυτό είναι ένα τεστ μέτρησης ΑΒΓΔ",
    "he": "שלום זה מבחן של ספירת אסימונים בעברית",
    "th": "สวัสดีนี่คือการทดสอบการนับโทเค็นภาษาไทย",
    "vi": "Xin chào đây là bài kiểm tra đếm token tiếng Việt ưởẫ",
}

_EMOJI = ["😀", "🎉", "👍🏽", "🇫🇷", "🇯🇵", "❤️", "1️⃣", "👨‍👩‍👧‍👦", "🏳️‍🌈", "👩🏾‍💻",
          "🧑‍🤝‍🧑", "🐈‍⬛", "☕", "🤖", "\u200d", "\ufe0f", "🫠", "🦀"]

_SPACES = [" ", "  ", "\t", "\n", "\r\n", "\n\n", "   \n", "\u00a0", "\u3000", "\u2003",
           "\u200b", "\f", "\v", " \t \n"]

_SPECIAL_LOOKALIKES = ["<|endoftext|>", "<|endofprompt|>", "<|fim_prefix|>", "<|im_start|>",
                       "<|start|>assistant<|message|>"]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _ident(rng: random.Random) -> str:
    parts = [rng.choice(_WORDS).strip("'").lower() for _ in range(rng.randint(1, 3))]
    return rng.choice(["_", "", "-"]).join(parts) if rng.random() < 0.5 else (
        parts[0] + "".join(p.title() for p in parts[1:]))


def _code(rng: random.Random) -> str:
    a, b, n = _ident(rng), _ident(rng), rng.randint(0, 10**6)
    templates = [
        f"def {a}({b}: int = {n}) -> list[str]:\n    return [str(x) for x in range({b})]\n",
        f"const {a} = async ({b}) => {{\n\treturn await fetch(`/api/${{{b}}}`);\n}};\n",
        f"fn {a}(v: &[u8]) -> Result<usize, Error> {{\n    Ok(v.len() + {n})\n}}\n",
        f"func {a}(ctx context.Context) error {{\n\tif err := {b}(); err != nil {{\n"
        f"\t\treturn fmt.Errorf(\"{a}: %w\", err)\n\t}}\n\treturn nil\n}}\n",
        f"#include <stdio.h>\nint main(void) {{ printf(\"%d\\n\", {n}); return 0; }}\n",
        f"SELECT {a}, COUNT(*) FROM {b} WHERE id > {n} GROUP BY 1 ORDER BY 2 DESC;\n",
        f"<div class=\"{a}\"><span id='{b}'>{n}&nbsp;&lt;ok&gt;</span></div>\n",
        f'{{"{a}": [{n}, {n / 7:.5f}, null, true], "{b}": {{"k": "v\\u00e9"}}}}\n',
        f"#!/bin/sh\nfor f in *.{a}; do\n  grep -n '{b}' \"$f\" | wc -l\ndone\n",
        f"    {a} = {{{b!r}: {n}}}  # trailing comment   \n\n\n",
    ]
    return "".join(rng.choice(templates) for _ in range(rng.randint(1, 6)))


def _multilingual(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(1, 8)):
        s = _SCRIPTS[rng.choice(list(_SCRIPTS))]
        i = rng.randrange(len(s))
        out.append(s[i:i + rng.randint(1, 40)])
        out.append(rng.choice([" ", "", ", ", "。", "\n", " " + _words(rng, 2) + " "]))
    return "".join(out)


def _emoji(rng: random.Random) -> str:
    return "".join(rng.choice([*_EMOJI, " ", "a", "!", _words(rng, 1)])
                   for _ in range(rng.randint(1, 30)))


def _numbers(rng: random.Random) -> str:
    forms: list[Callable[[], str]] = [
        lambda: str(rng.randint(0, 10**rng.randint(1, 30))),
        lambda: f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 9)}f}",
        lambda: f"{rng.uniform(0, 1):e}",
        lambda: f"{rng.randint(0, 10**9):,}",
        lambda: f"+1 ({rng.randint(100, 999)}) {rng.randint(100, 999)}-{rng.randint(0, 9999):04}",
        lambda: "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 200))),
        lambda: f"{rng.randint(1, 31)}/{rng.randint(1, 12)}/20{rng.randint(0, 99):02}",
        lambda: "٣٤٥٦ १२३ \uff15\uff16\uff17 Ⅻ ½ ²",  # fullwidth digits
    ]
    return rng.choice([" ", ", ", "\n", "x", ""]).join(rng.choice(forms)()
                                                     for _ in range(rng.randint(1, 12)))


def _whitespace(rng: random.Random) -> str:
    return "".join(rng.choice([*_SPACES, _words(rng, 1), "."]) * rng.randint(1, 20)
                   for _ in range(rng.randint(1, 20)))


def _repeats(rng: random.Random) -> str:
    unit = rng.choice(["a", "ab", " ", "\n", "=", "-", "😀", "的", "abc ", "0", ".", "'s",
                       "\t", "ﷺ", "A"])
    return unit * rng.randint(50, 3000)


def _random_unicode(rng: random.Random) -> str:
    def char() -> str:
        while True:
            cp = rng.choice([rng.randrange(0x20, 0x80), rng.randrange(0x80, 0x800),
                             rng.randrange(0x800, 0x10000), rng.randrange(0x10000, 0x110000)])
            if not 0xD800 <= cp <= 0xDFFF:  # lone surrogates cannot travel in UTF-8 JSON
                return chr(cp)
    return "".join(char() for _ in range(rng.randint(1, 80)))


def _latin1_bytes(rng: random.Random) -> str:
    return bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))).decode("latin-1")


def _prose(rng: random.Random) -> str:
    text = _words(rng, rng.randint(1, 120))
    if rng.random() < 0.3:
        text += " " + rng.choice(_SPECIAL_LOOKALIKES) + " " + _words(rng, 3)
    return text.upper() if rng.random() < 0.1 else text


def _mixed(rng: random.Random) -> str:
    return "".join(rng.choice(_KINDS[:-1])(rng) for _ in range(rng.randint(2, 4)))


_KINDS: list[Callable[[random.Random], str]] = [
    _code, _multilingual, _emoji, _numbers, _whitespace, _repeats, _random_unicode,
    _latin1_bytes, _prose, _mixed,
]


def corpus(n: int = 2400, seed: int = 20261122) -> list[str]:
    """`n` documents, every kind in turn, the same for the same seed."""
    rng = random.Random(seed)
    return [_KINDS[i % len(_KINDS)](rng) for i in range(n)]


def random_text(rng: random.Random, max_kinds: int = 2) -> str:
    """A short varied text for conversations (no long repeats)."""
    kinds = [_multilingual, _emoji, _prose, _numbers, _code, _random_unicode]
    return "".join(rng.choice(kinds)(rng) for _ in range(rng.randint(1, max_kinds)))


def corpus_kinds(n: int = 2400) -> list[str]:
    """The kind of each document of `corpus(n)` ("code", "prose", ...)."""
    return [_KINDS[i % len(_KINDS)].__name__.lstrip("_") for i in range(n)]
