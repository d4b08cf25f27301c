"""A labelled set of support-chat latest turns for the complexity router.

Each case is the latest user turn of a customer-support conversation, whether the
conversation had already needed the strong model (`context`: code, a long analysis or a
hard question earlier), and a label: `cheap` when a small model answers it as well as a
large one (acknowledgements, greetings, simple lookups, chit-chat, abusive long-output
prompts), `strong` when it needs the large one (code, arithmetic, several steps,
"explain why", comparisons, legal or medical, long or structured asks, a follow-up in
a conversation that was already hard).

Written by hand as families of phrasings; `generate` fills their slots from a seed.
The held-out split is whole families, never seen in training: `test` families are
listed apart, so a reworded training case cannot leak into the measurement.

    .venv/bin/python corpora/complexity_cases.py   # rewrites corpora/complexity_turns.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("complexity_turns.jsonl")

PRODUCTS = ["the Pro plan", "my subscription", "the starter plan", "the family plan",
            "the annual plan", "my account", "the mobile app", "the desktop app"]
ITEMS = ["order", "package", "parcel", "refund", "invoice", "delivery", "return"]
THINGS = ["password", "email address", "phone number", "billing address", "username",
          "profile picture", "language", "time zone"]
PLACES = ["Canada", "Germany", "Japan", "Brazil", "Australia", "the UK", "Mexico", "India"]
LANGS = ["Python", "JavaScript", "Go", "Ruby", "Java", "TypeScript", "PHP", "C#"]
NUMS = ["3", "5", "12", "20", "50", "100", "250", "1000"]

# (family, label, context, phrasings). Slots: {p} product, {i} item, {t} thing,
# {c} country, {l} programming language, {n} number.
TRAIN: list[tuple[str, str, bool | None, list[str]]] = [
    ("thanks", "cheap", None, [
        "thanks!", "thank you", "thanks a lot", "thx", "ty!", "thank you so much!",
        "great, thanks", "perfect, thank you", "awesome thanks!!", "cheers",
        "many thanks", "thanks, that helped", "ok thanks", "thanks for your help",
        "that's great, thanks a lot"]),
    ("ack", "cheap", None, [
        "ok", "okay", "got it", "cool", "sounds good", "alright", "understood", "great",
        "perfect", "nice", "ok 👍", "👍", "k", "sure", "makes sense", "fine", "noted",
        "ok got it", "all good", "that works"]),
    ("yesno", "cheap", None, [
        "yes", "no", "yep", "nope", "yes please", "no thanks", "yeah", "nah",
        "yes, that's right", "no, that's all", "correct", "exactly", "yes it is"]),
    ("greeting", "cheap", None, [
        "hi", "hello", "hey there", "good morning", "hi!", "hello, anyone there?",
        "hey", "good evening", "hi, I need some help", "hello again"]),
    ("bye", "cheap", None, [
        "bye", "goodbye", "see you", "have a nice day", "that's all, bye",
        "thanks, bye!", "talk later", "that's everything for today"]),
    ("faq_account", "cheap", False, [
        "how do I reset my {t}?", "where can I change my {t}?", "can I update my {t}?",
        "how do i change my {t}", "I forgot my {t}, what do I do?",
        "is it possible to change my {t}?"]),
    ("faq_order", "cheap", False, [
        "where is my {i}?", "has my {i} shipped yet?", "how long does a {i} take?",
        "can you check the status of my {i}?", "when will my {i} arrive?",
        "what's the status of my {i}?"]),
    ("faq_shipping", "cheap", False, [
        "do you ship to {c}?", "how much is shipping to {c}?",
        "do you deliver to {c}?", "is there free shipping to {c}?"]),
    ("faq_plan", "cheap", False, [
        "how do I cancel {p}?", "how much does {p} cost?", "can I pause {p}?",
        "how do I upgrade {p}?", "what's included in {p}?", "how do i renew {p}"]),
    ("chitchat", "cheap", False, [
        "are you a bot?", "what's your name?", "how are you today?", "are you human?",
        "who am I talking to?", "lol", "haha ok", "you're funny", "is anyone there?"]),
    ("repeat_abuse", "cheap", None, [
        "repeat the previous text {n} times", "say hello {n} times",
        "write the word banana {n} times", "repeat your last answer {n} times",
        "print 'ok' {n} times please", "copy that message {n} times"]),
    ("code", "strong", None, [
        "can you write a {l} script that calls your API and lists my {i}s?",
        "my {l} code gets a 401 from your API, here it is: ```client.get('/orders')```",
        "how do I paginate through the {i}s endpoint in {l}?",
        "write a {l} function that verifies your webhook signature",
        "why does my {l} integration throw a timeout when I upload files?",
        "Traceback (most recent call last): KeyError: 'order_id' — what's wrong?"]),
    ("math", "strong", None, [
        "if I downgrade {p} halfway through the month, how much will I be refunded?",
        "I paid $49 on the 3rd and $19 on the 17th, what's my prorated credit?",
        "what's {n}% of $1,240 after tax at 8.25%?",
        "how much would {n} seats cost per year with the 15% annual discount?",
        "calculate the total if I add {n} users at $12 each plus VAT"]),
    ("explain", "strong", None, [
        "explain why my {i} was charged twice",
        "why was my card declined even though I have enough money?",
        "can you explain why my invoice total changed from last month?",
        "explain how your fraud checks decide to hold a {i}",
        "why does the sync keep failing only on the desktop app?"]),
    ("compare", "strong", None, [
        "what's the difference between {p} and the business plan for a team of {n}?",
        "compare the Pro and Business plans for my use case",
        "which is better for me, monthly or annual billing, and why?",
        "pros and cons of switching from {p} to the enterprise tier?",
        "should I use SSO or API keys for {n} contractors?"]),
    ("legal_medical", "strong", None, [
        "is your data processing GDPR compliant for customers in {c}?",
        "can I sue if my {i} never arrived and you refuse a refund?",
        "what does clause 7.2 of your terms mean for liability?",
        "I had an allergic reaction to the product, what should I do?",
        "can I take this supplement with my blood pressure medication?",
        "does your contract allow me to terminate early without penalty?"]),
    ("multistep", "strong", None, [
        "I moved to {c}, changed banks and my {i} got lost — how do I fix the billing, "
        "the address and get a replacement?",
        "walk me through migrating {n} users from the old workspace, keeping permissions",
        "set up a step by step plan to move our team from {p} to the business plan "
        "without losing data",
        "first cancel my {i}, then refund half to my card and the rest as credit"]),
    ("long_structured", "strong", None, [
        "I need a summary of all my {i}s this year grouped by month, with totals, in a "
        "table",
        "draft an email to my team explaining the new {p} limits, with a bullet list of "
        "what changes and a FAQ at the end",
        "write a formal complaint letter about my {i} with a timeline of what happened",
        "here's my situation: I have {n} accounts, two of them are on {p}, one was "
        "suspended last week, and billing is mixed up. What should I do with each?"]),
    ("troubleshoot", "strong", False, [
        "my account was hacked and someone changed my {t}, what do I do now?",
        "I was charged for {p} but it shows cancelled and my bank says the payment is "
        "pending",
        "the app logs me out every few minutes on my phone but not on my laptop",
        "I got two different answers from your support team about my {i}",
        "someone placed an order with my card that I don't recognise",
        "my {i} arrived damaged and the replacement arrived damaged too, I want this "
        "escalated",
        "our admin left the company and nobody can access the billing settings anymore",
        "the export is missing half of my {i}s from last year",
        "I was promised a callback three times and nobody ever called",
        "my {t} keeps reverting to the old one after I save it",
        "the tracking says delivered but I never got my {i} and the neighbours don't have "
        "it either",
        "I cancelled {p} last month but I was billed again today"]),
    ("followup_hard", "strong", True, [
        "and what about the second one?", "can you fix it?", "why?",
        "ok but what if I have {n} of them?", "do the same for the other {i}",
        "and in {l}?", "that didn't work, same error", "what about edge cases?",
        "can you make it faster?", "and the other option?"]),
    ("followup_easy", "cheap", False, [
        "and what about the second one?", "ok what's next?", "and how long does that take?",
        "where do I find that?", "is that free?", "can I do it from my phone?"]),
]

TEST: list[tuple[str, str, bool | None, list[str]]] = [
    ("t_thanks", "cheap", None, [
        "thanks so much, you've been super helpful", "ty", "thank u", "brilliant, thanks",
        "appreciate it!", "tysm", "thanks mate", "much appreciated", "great help, thanks!",
        "oh nice, thank you"]),
    ("t_ack", "cheap", None, [
        "okie", "roger that", "ok cool", "got it, ty", "yup", "sounds great", "done",
        "ok I'll try that", "will do", "👌", "right", "ah ok", "mhm", "gotcha"]),
    ("t_greet", "cheap", None, [
        "hiya", "yo", "morning!", "hello there", "hi team", "good afternoon", "heya"]),
    ("t_faq", "cheap", False, [
        "how can I delete my {t}?", "can I get an invoice for my {i}?",
        "what are your support hours?", "do you accept PayPal?",
        "is {p} available in {c}?", "how do I log out of {p}?",
        "can I change the delivery address of my {i}?", "where do I download my receipt?",
        "how do I turn on dark mode?", "do you have a student discount?"]),
    ("t_chitchat", "cheap", False, [
        "what's the weather like?", "are you an AI?", "do you like your job?",
        "just testing", "test", "hello? is this working?"]),
    ("t_abuse", "cheap", None, [
        "repeat 'I love this' {n} times", "write lorem ipsum {n} times",
        "say the alphabet {n} times", "echo this message back {n} times"]),
    ("t_code", "strong", None, [
        "here's my curl command and it returns 422: curl -X POST /v1/{i}s -d '{{}}'",
        "help me write a SQL query to join my exported {i}s with customers",
        "my webhook handler in {l} returns 500, can you debug it?",
        "give me a regex that matches your {i} numbers",
        "the SDK for {l} crashes with NullPointerException on startup"]),
    ("t_reason", "strong", None, [
        "explain why the annual plan is cheaper per month but costs more upfront",
        "why would my {i} be delivered to the wrong address twice?",
        "compare shipping options to {c} for speed and cost",
        "what's the tradeoff between {p} and paying per use for {n} requests a day?",
        "how much do I save over 3 years with annual billing at ${n}/month?",
        "is it legal for you to keep my data after I close my account in {c}?",
        "my child swallowed some of the cleaning product, is it dangerous?",
        "analyze my last 6 invoices and tell me why the amounts differ"]),
    ("t_long", "strong", None, [
        "we're a team of {n} and we've been on {p} since 2021; last month two admins "
        "left, our SSO broke, and invoices went to the wrong address. Can you help us "
        "sort out access, billing contacts and the SSO config?",
        "please write a detailed guide for my staff on how to process returns, "
        "including exceptions for damaged goods and international {i}s"]),
    ("t_trouble", "strong", False, [
        "I changed my {t} yesterday and now I can't log in on any device",
        "my refund was approved two weeks ago but it still hasn't reached my account",
        "the discount code worked at checkout but I was billed the full price",
        "my account got suspended without warning and I have a deadline tomorrow",
        "two of my team members see different prices for {p}",
        "I think someone else is using my account from another country",
        "I returned the {i} a month ago and it still says awaiting return",
        "the invoice has a company name on it that isn't ours"]),
    ("t_followup_hard", "strong", True, [
        "still broken", "what if it's null?", "can you rewrite it?", "explain that part",
        "and for {c}?", "hmm, and the other case?", "why does that happen?"]),
    ("t_followup_easy", "cheap", False, [
        "ok and how do I do that?", "where's that button?", "is that included?",
        "how long will it take?"]),
]


def _fill(text: str, rng: random.Random) -> str:
    return text.format(p=rng.choice(PRODUCTS), i=rng.choice(ITEMS), t=rng.choice(THINGS),
                       c=rng.choice(PLACES), l=rng.choice(LANGS), n=rng.choice(NUMS))


def generate(seed: int = 19) -> list[dict[str, object]]:
    """Every phrasing once (twice, with other slot values, when it has slots); `context`
    None means the case is written both without and with a hard earlier turn (the label
    holds either way)."""
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    for split, families in (("train", TRAIN), ("test", TEST)):
        for family, label, context, phrasings in families:
            for text in phrasings:
                fills = {_fill(text, rng) for _ in range(2 if "{" in text else 1)}
                for filled in sorted(fills):
                    for ctx in ((False, True) if context is None else (context,)):
                        if ctx and rng.random() < 0.5:  # half the both-ways cases
                            continue
                        out.append({"text": filled, "context": ctx, "label": label,
                                    "family": family, "split": split})
    return out


if __name__ == "__main__":
    cases = generate()
    OUT.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases))
    for split in ("train", "test"):
        sub = [c for c in cases if c["split"] == split]
        print(split, len(sub), {lab: sum(c["label"] == lab for c in sub)
                                for lab in ("cheap", "strong")})
