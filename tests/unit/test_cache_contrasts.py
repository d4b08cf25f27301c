"""Verification's meaning rules (cache/contrasts.py, cache/verify.py) and the canonical
form (cache/normalize.py): every rule fires on a real difference, in both directions,
and stays quiet on a paraphrase or a near-repeat that keeps the meaning."""

from __future__ import annotations

import pytest

from tollway.cache import verify
from tollway.cache.normalize import canonical


def _both(a: str, b: str) -> tuple[str | None, str | None]:
    return verify.verify(a, b), verify.verify(b, a)


# (rule, the question, one that differs by the rule, one that keeps the meaning)
RULES = [
    ("affix", "Is it safe to take ibuprofen on an empty stomach?",
     "Is it unsafe to take ibuprofen on an empty stomach?",
     "Can I safely take ibuprofen on an empty stomach?"),
    ("affix", "How do I install the printer driver?", "How do I uninstall the printer driver?",
     "Installing the printer driver"),
    ("affix", "Is this pesticide harmful to bees?", "Is this pesticide harmless to bees?",
     "Is this pesticide harmful for bees?"),
    ("affix", "Are the tickets transferable?", "Are the tickets nontransferable?",
     "Can the tickets be transferred?"),
    ("negation", "Are economy tickets refundable?", "Are economy tickets non-refundable?",
     "Can I get a refund on an economy ticket?"),
    ("negation", "Why does my car start in the cold?", "Why won't my car start in the cold?",
     "Why does my car start when it is cold?"),
    ("opposite", "What foods should I eat during pregnancy?",
     "What foods should I avoid during pregnancy?", "What should I eat when pregnant?"),
    ("opposite", "How do I zoom in on a PDF?", "How do I zoom out on a PDF?",
     "How can I zoom in on a PDF file?"),
    ("opposite", "How do I freeze cooked rice?", "How do I thaw cooked rice?",
     "Can I freeze rice once it is cooked?"),
    ("opposite", "How do I accept a meeting invite?", "How do I decline a meeting invite?",
     "Accepting a meeting invitation"),
    ("comparison", "Flights to Paris under £50", "Flights to Paris over £50",
     "cheap flights to Paris for less than £50"),
    ("comparison", "Can I return an item within 30 days?",
     "Can I return an item after 30 days?", "Can I return an item within thirty days?"),
    ("comparison", "Are part-time staff entitled to sick pay?",
     "Are full-time staff entitled to sick pay?", "Do part time staff get sick pay?"),
    ("comparison", "Is it bad to sleep more than 9 hours?",
     "Is it bad to sleep less than 9 hours?", "Is sleeping over nine hours bad?"),
    ("comparison", "Which foods have the most protein?", "Which foods have the least protein?",
     "Which foods have the most protein in them?"),
    ("direction", "How do I convert Celsius to Fahrenheit?",
     "How do I convert Fahrenheit to Celsius?", "how to convert celsius into fahrenheit"),
    ("direction", "How to migrate from MySQL to PostgreSQL",
     "How to migrate from PostgreSQL to MySQL", "moving a database from MySQL to PostgreSQL"),
    ("direction", "Is a crocodile bigger than an alligator?",
     "Is an alligator bigger than a crocodile?", "Are crocodiles bigger than alligators?"),
    ("direction", "Why is Python slower than C?", "Why is C slower than Python?",
     "What makes Python slower than C?"),
    ("direction", "Shipping a parcel from the UK to the US",
     "Shipping a parcel from the US to the UK", "Shipping a parcel to the US from the UK"),
    ("time", "Is the pharmacy open at 7am?", "Is the pharmacy open at 7pm?",
     "Is the pharmacy open at 7 am?"),
    ("time", "Is there a bus at 11:15 pm?", "Is there a bus at 11:15 am?",
     "Is there a bus at 23:15?"),
    ("date", "Does the gym have classes on weekdays?", "Does the gym have classes on weekends?",
     "Are there gym classes on weekdays?"),
    ("date", "What time does the bank close on Saturdays?",
     "What time does the bank close on Sundays?", "When does the bank close on Saturday?"),
    ("unit", "How long does it take to walk 5 km?", "How long does it take to walk 5 miles?",
     "How long does it take to walk five kilometres?"),
    ("unit", "Is 38 degrees Celsius a fever?", "Is 38 degrees Fahrenheit a fever?",
     "Is 38°C a fever?"),
    ("unit", "How much is £50 in total?", "How much is $50 in total?",
     "How much is 50 GBP in total?"),
    ("unit", "Is 5 mg of melatonin too much?", "Is 5 g of melatonin too much?",
     "Is 5mg of melatonin too much?"),
    ("number", "How many calories are in 2 eggs?", "How many calories are in 3 eggs?",
     "Calories in two eggs?"),
    ("sibling", "Can dogs eat grapes?", "Can cats eat grapes?", "Are grapes safe for dogs?"),
    ("sibling", "Should I take vitamin D in the morning?",
     "Should I take vitamin D in the evening?", "Is morning the best time for vitamin D?"),
    ("sibling", "How do I make a pivot table in Excel?",
     "How do I make a pivot table in sheets?", "creating pivot tables in excel"),
    ("scope", "How do I close a tab in Chrome?", "How do I close all tabs in Chrome?",
     "closing a tab in chrome"),
    ("entity", "What is the capital of Austria?", "What is the capital of Australia?",
     "Austria's capital city?"),
]


@pytest.mark.parametrize(("rule", "a", "differs", "same"), RULES,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(RULES)])
def test_each_rule_fires_on_a_difference_only(rule: str, a: str, differs: str,
                                              same: str) -> None:
    assert _both(a, differs) == (rule, rule)
    assert _both(a, same) == (None, None)


def test_a_unit_name_or_a_common_capitalised_word_is_no_entity() -> None:
    assert _both("Is 38 degrees Celsius a fever?", "Is 38°C a fever?") == (None, None)
    assert _both("What is the tallest mountain in the world?",
                 "What is the highest mountain on Earth?") == (None, None)


def test_from_to_in_either_order_is_the_same_trip() -> None:
    assert _both("Flights from London to Paris", "Flights to Paris from London") == (
        None, None)


def test_symmetric_comparisons_are_not_directions() -> None:
    # "vs", "and", "between": asking about A vs B asks about B vs A.
    assert _both("Python vs Java for beginners", "Java vs Python for beginners") == (
        None, None)
    assert _both("difference between tea and coffee",
                 "difference between coffee and tea") == (None, None)


def test_a_weekday_is_not_a_weekend() -> None:
    assert verify.parse("on weekdays").dates != verify.parse("on weekends").dates
    assert verify.parse("on Mondays").dates == verify.parse("on monday").dates


@pytest.mark.parametrize("variant", [
    "what is the tallest mountain in the world", "Tell me the tallest mountain in the world",
    "WHAT IS THE TALLEST MOUNTAIN IN THE WORLD?", "  What is   the tallest mountain in the "
    "world?!", "Can you please tell me: what's the tallest mountain in the world??",
    "hi! what is the tallest mountain in the world, thanks", "Please, what is the tallest "
    "mountain in the world?",
])
def test_near_repeats_share_a_canonical_form(variant: str) -> None:
    anchor = "What is the tallest mountain in the world?"
    assert canonical(variant) == canonical(anchor) == "the tallest mountain in the world"
    assert verify.near_repeat(anchor, variant) and verify.near_repeat(variant, anchor)
    assert verify.accept(anchor, variant, 0.0)  # no model needed


@pytest.mark.parametrize(("a", "b"), [
    ("Why is my code compiling?", "Why isn't my code compiling?"),  # contraction: a word
    ("Is the pharmacy open at 7am?", "is the pharmacy open at 7pm"),
    ("How to convert C++ to C#", "how to convert c# to c++"),
    ("What is 15% of 80?", "what is 15% of 90"),
    ("Tell me a joke", "Tell me a joke about cats"),
])
def test_canonical_keeps_what_differs(a: str, b: str) -> None:
    assert canonical(a) != canonical(b)
    assert not verify.near_repeat(a, b)


def test_contractions_are_written_out() -> None:
    assert canonical("Why won't it start? I can't tell") == "why will not it start i cannot tell"
    assert canonical("What's the way") == canonical("what is the way")


def test_two_words_trading_places_is_a_direction() -> None:
    assert _both("What do Croats think of Turks?", "What do Turks think of Croats?") == (
        "direction", "direction")
    assert _both("Did Brazil beat Germany?", "Did Germany beat Brazil?") == (
        "direction", "direction")
    # order moot: "and", "between", "difference"
    assert _both("Is Brazil and Germany in the final?",
                 "Is Germany and Brazil in the final?") == (None, None)


def test_letters_folding_would_lose_still_differ() -> None:
    assert _both('What does "无语" mean?', 'What does "装逼" mean?') == ("entity", "entity")
    assert _both("Qu'est-ce que ça veut dire?", "Qu'est-ce que ca veut dire?") == (None, None)


def test_neighbours_trading_places_are_a_compound_not_a_reversal() -> None:
    assert _both("What is the function of a plant ovary?",
                 "What is the function of an ovary in a plant?") == (None, None)
    assert _both("How can I earn money fast online?", "How can I earn money online fast?") == (
        None, None)


def test_a_fraction_of_a_measure_is_no_date() -> None:
    assert not verify.is_temporal("How many tablespoons are in 1/4 cup?")
    assert verify.is_temporal("train on 5/3 to Prague")


def test_a_name_in_another_form_is_the_same_name() -> None:
    assert _both("What do Pakistanis think of China?",
                 "What do people of Pakistan think of China?") == (None, None)
    assert _both("What do Russian citizens think of Putin?",
                 "What do Russians think of Putin?") == (None, None)
    assert _both("What is the capital of Austria?", "What is the capital of Australia?") == (
        "entity", "entity")
