"""Differences in meaning that an embedding hides: the word lists and rules verification
compares two questions' meaning-bearing parts by (cache/verify.py calls `contrast`).

Each rule fires only on a real difference, one side against the other:

- affix: a word negated by an affix on one side only: "safe"/"unsafe",
  "refundable"/"non-refundable", "install"/"uninstall", "harmful"/"harmless";
- opposite: a word on one side whose opposite is on the other only ("accept"/"decline",
  "freeze"/"thaw", "zoom in"/"zoom out");
- comparison: a range or comparison word against its opposite ("under"/"over",
  "within"/"after", "full-time"/"part-time", "most"/"least"), or a bound on a number
  that points the other way ("under £50" / "over £50", "more than 9" / "less than 9");
- direction: two words shared by both texts that trade places around a directional
  word (to, from, into, onto, than, towards): "convert A to B" / "convert B to A",
  "is A bigger than B" / "is B bigger than A". "from X to Y" / "to Y from X" keeps
  each word's own marker, so it is not a reversal. "vs", "and", "or" and "between"
  are symmetric ("Python vs Java" asks what "Java vs Python" asks): not markers. Also
  two words that trade places with nothing else moved ("what do Croats think of
  Turks" / "... Turks think of Croats"), unless a word like "and" or "between" is there;
- time: clock times that differ ("7am"/"7pm", "11:15 pm"/"11:15 am");
- unit: one number with different units ("5 km"/"5 miles", "£50"/"$50", "5 mg"/"5 g");
- sibling: two different members of one closed class, one on each side only ("dogs"/
  "cats", "morning"/"evening", "Excel"/"Sheets", "ibuprofen"/"paracetamol"): an
  embedding puts co-hyponyms close, but they are different questions.

The lists are general English, built by hand from antonym and category knowledge, not
from any evaluation set; tests/unit/test_cache_contrasts.py pins both directions of
every rule (it fires on the difference, stays quiet on the paraphrase).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tollway.cache.words import stem

# -- opposites -------------------------------------------------------------------------

# Pairs no affix rule finds. Either word of a pair on one text only and the other on the
# other text only is a reversal of meaning.
OPPOSITES = [
    ("accept", "reject"), ("accept", "decline"), ("enable", "disable"), ("allow", "block"),
    ("allow", "deny"), ("allow", "forbid"), ("allow", "prohibit"), ("allow", "ban"),
    ("include", "exclude"), ("include", "omit"), ("show", "hide"), ("add", "remove"),
    ("add", "delete"), ("add", "subtract"), ("multiply", "divide"), ("open", "close"),
    ("open", "shut"), ("increase", "decrease"), ("increase", "reduce"), ("raise", "lower"),
    ("raise", "reduce"), ("rise", "fall"), ("rise", "sink"), ("float", "sink"),
    ("buy", "sell"), ("import", "export"), ("upload", "download"), ("upgrade", "downgrade"),
    ("start", "stop"), ("start", "finish"), ("begin", "end"), ("start", "end"),
    ("win", "lose"), ("true", "false"), ("push", "pull"), ("encrypt", "decrypt"),
    ("pass", "fail"), ("success", "failure"), ("good", "bad"), ("best", "worst"),
    ("better", "worse"), ("safe", "dangerous"), ("cheap", "expensive"), ("fast", "slow"),
    ("faster", "slower"), ("speed", "slow"), ("easy", "hard"), ("easy", "difficult"),
    ("pro", "con"), ("gain", "lose"), ("gain", "loss"), ("profit", "loss"),
    ("credit", "debit"), ("deposit", "withdraw"), ("input", "output"), ("male", "female"),
    ("men", "women"), ("man", "woman"), ("boy", "girl"), ("old", "new"), ("first", "last"),
    ("early", "late"), ("earlier", "later"), ("arrive", "depart"), ("arrive", "leave"),
    ("arrival", "departure"), ("enter", "exit"), ("entrance", "exit"), ("lend", "borrow"),
    ("send", "receive"), ("give", "receive"), ("mount", "unmount"),
    ("join", "leave"), ("love", "hate"), ("rich", "poor"), ("positive", "negative"),
    ("wet", "dry"), ("hot", "cold"), ("warm", "cold"), ("warm", "cool"), ("heat", "cool"),
    ("light", "dark"), ("light", "heavy"), ("thick", "thin"), ("wide", "narrow"),
    ("fat", "thin"), ("full", "empty"), ("strong", "weak"), ("strengthen", "weaken"),
    ("tighten", "loosen"), ("right", "wrong"), ("inside", "outside"),
    ("internal", "external"), ("public", "private"), ("online", "offline"),
    # particles ("zoom in on" / "zoom out on"), marked so by verify.parse
    ("login", "logout"), ("in_", "out_"), ("on_", "off_"), ("up_", "down_"),
    ("top", "bottom"), ("front", "back"), ("left", "right"),
    ("north", "south"), ("east", "west"), ("take", "avoid"), ("eat", "avoid"),
    ("use", "avoid"), ("freeze", "thaw"), ("freeze", "defrost"),
    ("attach", "detach"), ("remember", "forget"), ("asleep", "awake"), ("sleep", "wake"),
    ("alive", "dead"), ("live", "die"), ("raw", "cooked"), ("sweet", "sour"),
    ("fresh", "stale"), ("hire", "fire"), ("employer", "employee"), ("buyer", "seller"),
    ("landlord", "tenant"), ("teacher", "student"), ("parent", "child"),
    ("domestic", "international"), ("urban", "rural"), ("native", "foreign"),
    ("optional", "mandatory"), ("optional", "required"), ("optional", "compulsory"),
    ("inhale", "exhale"), ("ascend", "descend"), ("sunrise", "sunset"), ("dawn", "dusk"),
    ("friend", "enemy"), ("healthy", "harmful"), ("benefit", "harm"),
    ("lock", "unlock"), ("plus", "minus"), ("wealthy", "poor"), ("happy", "sad"),
    ("clean", "dirty"), ("quiet", "loud"), ("soft", "hard"), ("smooth", "rough"),
]
# Comparison and range words against their opposites: reported as "comparison".
COMPARISONS = [
    ("under", "over"), ("below", "above"), ("within", "after"), ("before", "after"),
    ("less", "more"), ("fewer", "more"), ("least", "most"), ("min", "max"),
    ("minimum", "maximum"), ("largest", "smallest"), ("biggest", "smallest"),
    ("highest", "lowest"), ("high", "low"), ("higher", "lower"), ("longest", "shortest"),
    ("longer", "shorter"), ("long", "short"), ("older", "younger"), ("oldest", "youngest"),
    ("old", "young"), ("full", "part"), ("temporary", "permanent"), ("big", "small"),
    ("large", "small"), ("bigger", "smaller"), ("larger", "smaller"), ("upper", "lower"),
    ("cheapest", "dearest"), ("cheaper", "dearer"), ("heavier", "lighter"),
    ("heaviest", "lightest"), ("increase", "decrease"), ("inbound", "outbound"),
    ("most", "fewest"), ("more", "fewer"),
]
# Affixes that negate the word they join, and the shortest word left that counts
# ("in"+"form" is not a negation; "un"+"safe" is).
_NEG_PREFIXES = (("non", 3), ("un", 3), ("dis", 4), ("in", 5), ("im", 5), ("il", 5),
                 ("ir", 5), ("de", 5), ("anti", 4), ("mis", 4))
_NEG_SUFFIXES = (("less", "ful"),)  # harmless / harmful


def _table(pairs: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for x, y in pairs:
        out.setdefault(stem(x), set()).add(stem(y))
        out.setdefault(stem(y), set()).add(stem(x))
    return out


_OPPOSITE = _table(OPPOSITES)
_COMPARISON = _table(COMPARISONS)

# -- closed classes ----------------------------------------------------------------------

# Members of one class are different things an embedding places close together. A word
# after "=" is a synonym of the one before it (the same member).
CLASSES = {
    "colour": "red orange yellow green blue purple violet pink brown black white grey=gray",
    "season": "spring summer autumn winter",
    "meal": "breakfast brunch lunch dinner supper",
    "part of day": "morning afternoon evening night=overnight midnight noon=midday",
    "animal": "dog=dogs cat horse rabbit hamster parrot cow pig sheep goat chicken duck "
              "mouse rat snake lizard turtle tortoise bird fish ferret guinea",
    "fruit": "apple banana grape strawberry blueberry raspberry cherry mango pineapple "
             "peach pear plum lemon lime watermelon melon kiwi avocado coconut fig",
    "vegetable": "potato tomato carrot onion garlic broccoli spinach cabbage lettuce "
                 "cucumber pea bean corn mushroom celery kale cauliflower courgette=zucchini "
                 "aubergine=eggplant",
    "staple": "rice pasta bread quinoa couscous oat barley noodle wheat",
    "meat": "beef pork chicken lamb turkey salmon tuna shrimp=prawn bacon ham sausage",
    "drink": "coffee tea beer wine water milk juice soda vodka whisky=whiskey rum gin",
    "relative": "mother=mom=mum father=dad son daughter brother sister husband wife uncle "
                "aunt grandmother=grandma grandfather=grandpa cousin niece nephew "
                "boyfriend girlfriend",
    "body part": "head neck shoulder arm elbow wrist hand finger hip leg knee ankle foot=feet "
                 "toe chest stomach eye ear nose mouth tooth=teeth skin hair heart liver "
                 "kidney lung brain back",
    "planet": "mercury venus mars jupiter saturn uranus neptune pluto moon sun",
    "metal": "gold silver copper iron zinc aluminium=aluminum steel tin platinum titanium "
             "nickel lead",
    "programming language": "python java javascript=js typescript ruby php rust kotlin scala "
                            "perl haskell c++ c# golang lua dart elixir",
    "platform": "windows mac=macos=macbook=osx linux ubuntu debian fedora android "
                "ios=iphone ipad chromebook",
    "browser": "chrome firefox safari edge opera brave",
    "service": "netflix spotify amazon google apple microsoft facebook instagram twitter "
               "whatsapp telegram zoom skype slack paypal uber airbnb youtube tiktok "
               "linkedin",
    "office app": "excel word powerpoint outlook sheets docs gmail",
    "currency": "dollar=usd euro=eur pound=gbp yen=jpy rupee=inr yuan franc peso",
    "language": "english spanish french german italian portuguese chinese=mandarin japanese "
                "korean russian arabic hindi dutch greek polish turkish swedish",
    "sport": "football=soccer basketball tennis golf cricket rugby baseball hockey "
             "volleyball badminton",
    "instrument": "guitar piano violin drum flute saxophone trumpet cello",
    "vehicle": "car bus train plane=airplane=aeroplane bike=bicycle motorcycle boat ferry "
               "taxi truck van scooter tram",
    "medicine": "ibuprofen=advil paracetamol=acetaminophen=tylenol aspirin codeine naproxen "
                "antibiotic antihistamine melatonin",
    "database": "mysql postgresql=postgres sqlite mongodb redis oracle",
    "framework": "flask django react angular vue rails laravel",
    "cloud": "aws azure gcp heroku netlify vercel digitalocean",
    "room": "kitchen bathroom bedroom garage garden attic basement",
    "clothing": "shirt trousers=pants jeans dress skirt jacket coat shoe sock hat",
}


def _classes() -> dict[str, tuple[str, str]]:
    """stem -> (class, member): synonyms share a member."""
    out: dict[str, tuple[str, str]] = {}
    for cls, words in CLASSES.items():
        for group in words.split():
            forms = group.split("=")
            for f in forms:
                out[stem(f)] = (cls, stem(forms[0]))
    return out


_CLASS = _classes()

# -- numbers: units, bounds, clock times ---------------------------------------------------

UNITS = {
    "km": "km", "kms": "km", "kilometre": "km", "kilometer": "km", "mile": "mi", "mi": "mi",
    "m": "m", "metre": "m", "meter": "m", "cm": "cm", "centimetre": "cm", "centimeter": "cm",
    "mm": "mm", "millimetre": "mm", "millimeter": "mm", "ft": "ft", "foot": "ft",
    "feet": "ft", "inch": "in", "inche": "in", "yard": "yd", "kg": "kg", "kilo": "kg",
    "kilogram": "kg", "g": "g", "gram": "g", "gr": "g", "mg": "mg", "milligram": "mg",
    "lb": "lb", "lbs": "lb", "pound": "lb", "oz": "oz", "ounce": "oz", "st": "st",
    "stone": "st", "l": "l", "litre": "l", "liter": "l", "ml": "ml", "millilitre": "ml",
    "milliliter": "ml", "gallon": "gal", "pint": "pt", "cup": "cup", "tablespoon": "tbsp",
    "tbsp": "tbsp", "teaspoon": "tsp", "tsp": "tsp", "second": "s", "sec": "s",
    "minute": "min", "min": "min", "hour": "h", "hr": "h", "h": "h", "day": "day",
    "week": "week", "month": "month", "year": "year", "yr": "year", "percent": "%",
    "pct": "%", "kb": "kb", "mb": "mb", "gb": "gb", "tb": "tb", "kwh": "kwh", "kw": "kw",
    "w": "w", "watt": "w", "v": "v", "volt": "v", "mph": "mph", "kph": "kph", "kmh": "kph",
    "c": "c", "celsius": "c", "centigrade": "c", "f": "f", "fahrenheit": "f",
    "dollar": "usd", "usd": "usd", "buck": "usd", "euro": "eur", "eur": "eur",
    "gbp": "gbp", "quid": "gbp", "yen": "jpy", "jpy": "jpy", "rupee": "inr", "inr": "inr",
    "k": "k", "x": "x",
}
_UNIT_STEMS = {stem(k): v for k, v in UNITS.items() if len(k) > 3}  # "kilometres"
_DEGREE = ("degree", "degre")
# A bound before a number: "under 12" is below it, "over 12" above.
_BELOW = frozenset({"under", "below", "less", "fewer", "within", "before", "max", "maximum",
                    "most", "up", "cheaper", "lower", "younger", "shorter", "smaller",
                    "lighter", "beneath", "till", "until", "upto"})
_ABOVE = frozenset({"over", "above", "more", "least", "after", "beyond", "exceeding",
                    "min", "minimum", "greater", "higher", "older", "longer", "bigger",
                    "larger", "heavier", "plus", "since", "past"})
_BOUND_GLUE = frozenset({"than", "to", "of", "at", "a", "the", "about", "around", "or",
                         "and", "just", "only"})
_DIRECTIONAL = frozenset({"to", "from", "into", "onto", "than", "towards", "toward"})

_CLOCK = re.compile(
    r"\b(\d{1,2})(?:[:.](\d{2}))?\s*([ap])\.?\s?m\b\.?|\b([01]?\d|2[0-3]):(\d{2})\b"
    r"|\b(noon|midday|midnight)\b", re.IGNORECASE)


def clock_times(text: str) -> tuple[str, frozenset[str]]:
    """The text with its clock times taken out, and those times as "HH:MM" (24-hour):
    "7am" -> 07:00, "7:30 pm" -> 19:30, "17:30" -> 17:30, "noon" -> 12:00."""
    times: set[str] = set()

    def take(m: re.Match[str]) -> str:
        if m.group(6):
            times.add("00:00" if m.group(6).lower() == "midnight" else "12:00")
        elif m.group(3):
            h = int(m.group(1)) % 12 + (12 if m.group(3).lower() == "p" else 0)
            times.add(f"{h:02d}:{m.group(2) or '00'}")
        else:
            times.add(f"{int(m.group(4)):02d}:{m.group(5)}")
        return " "

    return _CLOCK.sub(take, text), frozenset(times)


def unit_after(words: tuple[str, ...], i: int, suffix: str) -> str:
    """The unit of the number at words[i] ("" if none): its own suffix ("5km") or the
    next word ("5 km", "38 degrees Celsius")."""
    if suffix:
        return UNITS.get(suffix, "")
    if i + 1 >= len(words):
        return ""
    nxt = stem(words[i + 1])
    if nxt in _DEGREE or words[i + 1] in _DEGREE:
        after = words[i + 2] if i + 2 < len(words) else ""
        return UNITS.get(after, "") or _UNIT_STEMS.get(stem(after), "deg")
    return UNITS.get(words[i + 1], "") or _UNIT_STEMS.get(nxt, "")


def is_unit(word: str) -> bool:
    """A unit's name ("Celsius", "kilometres")."""
    return word in UNITS or stem(word) in _UNIT_STEMS


def bound_before(words: tuple[str, ...], i: int) -> str:
    """"<" when a word just before the number at words[i] bounds it from above ("under
    12", "less than 12", "up to 12", "at most 12"), ">" from below, else ""."""
    j = i - 1
    while j >= 0 and i - j <= 3:
        w = words[j]
        if w in _BELOW:
            return "<"
        if w in _ABOVE:
            return ">"
        if w not in _BOUND_GLUE:
            return ""
        j -= 1
    return ""


# -- the rules -----------------------------------------------------------------------------


def _affix_negated(x: str, y: frozenset[str]) -> bool:
    """x (a stem one side only) is a word of y negated by an affix, or the reverse."""
    for p, shortest in _NEG_PREFIXES:
        if x.startswith(p) and len(x) - len(p) >= shortest and x[len(p):] in y:
            return True
    return any(x.endswith(neg) and x[:-len(neg)] + pos in y for neg, pos in _NEG_SUFFIXES)


def _reversed(x: frozenset[str], y: frozenset[str], table: dict[str, set[str]]) -> bool:
    return any(table.get(w, _NONE) & y for w in x)


_NONE: set[str] = set()


def _siblings(x: frozenset[str], y: frozenset[str]) -> bool:
    cx = {_CLASS[w] for w in x if w in _CLASS}
    cy = {_CLASS[w] for w in y if w in _CLASS}
    # Different members of one class, neither member on both sides.
    return any(cls == c2 and m != m2 for cls, m in cx for c2, m2 in cy) and not (
        {m for _, m in cx} & {m for _, m in cy})


_FAMILY = {"to": "to", "into": "to", "onto": "to", "towards": "to", "toward": "to",
           "from": "from", "than": "than"}
# "compared to", "similar to", "married to": the relation is symmetric.
_SYMMETRIC = frozenset({"compare", "compared", "comparing", "similar", "equal", "equivalent",
                        "identical", "related", "married", "close", "near", "next",
                        "connected", "linked", "relative", "same", "different"})


def _arrows(words: tuple[str, ...], ordered: frozenset[str]
            ) -> list[tuple[frozenset[str], str, str]]:
    """(the words said once in the stretch before a directional word, its family, the
    first word said once after it): "convert celsius to fahrenheit" gives
    ({convert, celsius}, "to", fahrenheit)."""
    stems = [stem(w) if stem(w) in ordered else "" for w in words]
    once = {s for s in stems if s and stems.count(s) == 1}
    cuts = [i for i, w in enumerate(words) if w in _FAMILY]
    out = []
    for k, i in enumerate(cuts):
        if i > 0 and words[i - 1] in _SYMMETRIC:
            continue
        start = cuts[k - 1] + 1 if k else 0
        end = cuts[k + 1] if k + 1 < len(cuts) else len(words)
        after = next((s for s in stems[i + 1:end] if s), "")
        if after in once:
            out.append((frozenset(s for s in stems[start:i] if s in once), _FAMILY[words[i]],
                        after))
    return out


def _swapped(words_a: tuple[str, ...], words_b: tuple[str, ...],
             ordered_a: frozenset[str], ordered_b: frozenset[str]) -> bool:
    """"A to B" on one side, "B to A" on the other (the same kind of directional word).
    "from X to Y" / "to Y from X" keeps X after "from": no reversal."""
    arrows_b = _arrows(words_b, ordered_b)
    for before_a, fam_a, y in _arrows(words_a, ordered_a):
        for before_b, fam_b, x in arrows_b:
            if fam_a == fam_b and x != y and x in before_a and y in before_b:
                return True
    return False


# Words that make an order of two things not matter: "A and B", "A vs B", "between".
_UNORDERED = frozenset({"and", "or", "vs", "versus", "between", "both", "either", "compare",
                        "compared", "comparison", "difference", "different", "differ",
                        "similar", "same", "like", "with"})


def _transposed(words_a: tuple[str, ...], words_b: tuple[str, ...],
                ordered_a: frozenset[str], ordered_b: frozenset[str]) -> bool:
    """The same words with two of them trading places and nothing else moved: "what do
    Croats think of Turks" / "what do Turks think of Croats", "did Brazil beat Germany"
    / "did Germany beat Brazil". Not when a word of either text makes order moot, nor
    around directional words (`_swapped` reads those: "to Paris from London")."""
    said = set(words_a) | set(words_b)
    if _UNORDERED & said or said & _FAMILY.keys() or ordered_a != ordered_b:
        return False
    seq_a = [stem(w) for w in words_a if stem(w) in ordered_a]
    seq_b = [stem(w) for w in words_b if stem(w) in ordered_b]
    if len(seq_a) != len(seq_b) or len(set(seq_a)) != len(seq_a):
        return False
    moved = [i for i, (x, y) in enumerate(zip(seq_a, seq_b, strict=True)) if x != y]
    # Neighbours trading places are a compound said the other way round ("plant ovary" /
    # "ovary in a plant", "money fast online" / "money online fast"): a word must stay
    # between them, as "think" in "Croats think of Turks".
    return len(moved) == 2 and moved[1] - moved[0] >= 2 and (
        seq_a[moved[0]] == seq_b[moved[1]] and seq_a[moved[1]] == seq_b[moved[0]])


def contrast(words_a: tuple[str, ...], words_b: tuple[str, ...],
             stems_a: frozenset[str], stems_b: frozenset[str],
             ordered_a: frozenset[str], ordered_b: frozenset[str]) -> str | None:
    """What differs in meaning between two texts (lower-case words, every word's stem,
    the stems whose order counts), by the rules above; None when nothing does."""
    only_a, only_b = stems_a - stems_b, stems_b - stems_a
    if any(_affix_negated(w, only_b) for w in only_a) or any(
            _affix_negated(w, only_a) for w in only_b):
        return "affix"
    if _reversed(only_a, only_b, _COMPARISON):
        return "comparison"
    if _reversed(only_a, only_b, _OPPOSITE):
        return "opposite"
    if _swapped(words_a, words_b, ordered_a, ordered_b) or _transposed(
            words_a, words_b, ordered_a, ordered_b):
        return "direction"
    if _siblings(only_a, only_b):
        return "sibling"
    return None
