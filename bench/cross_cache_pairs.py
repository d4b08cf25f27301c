"""Write tests/data/cross_cache_pairs.jsonl: labelled conversation pairs for the
cross-conversation cache (bench/cross_cache.py). Seeded: the same file every run.

    .venv/bin/python bench/cross_cache_pairs.py

Each line is `{"a": [messages], "b": [messages], "label", "kind"}`; both conversations
end with a user turn, the same words or reworded. `context-free`: the same answer is
right in both (an FAQ, asked at any turn after unrelated talk). `context-dependent`:
the right answer depends on the earlier turns, which differ: a follow-up pointing back
("how do I change it?"), an answer to the assistant's question ("the premium one"), or
a question about the situation the user described ("can I get a refund?" after a
damaged parcel vs a change of mind; "how long will delivery take?" after "I live in
Canada" vs "in Germany").
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "cross_cache_pairs.jsonl"
SEED = 19

# FAQs: wordings of one question (any of them gets the same right answer), and a topic.
FAQS: list[tuple[str, list[str]]] = [
    ("password", ["How do I reset my password?", "How can I reset my password?",
                  "What's the way to reset my password?"]),
    ("hours", ["What are your opening hours?", "When are you open?",
               "What are your business hours?"]),
    ("payment", ["Which payment methods do you accept?", "What payment methods do you take?",
                 "What forms of payment do you accept?"]),
    ("shipping", ["Do you ship internationally?", "Do you offer international shipping?",
                  "Can you ship orders abroad?"]),
    ("returns", ["What is your return policy?", "What's your returns policy?",
                 "How does your return policy work?"]),
    ("account", ["How do I delete my account?", "How can I delete my account?",
                 "What are the steps to delete my account?"]),
    ("email", ["How do I change the email address on my account?",
               "How can I update the email address on my account?"]),
    ("invoice", ["Where can I download my invoices?", "Where do I find my invoices?",
                 "How can I download my invoices?"]),
    ("support", ["How do I contact customer support?", "How can I reach customer support?",
                 "What is the best way to contact support?"]),
    ("discount", ["Is there a student discount?", "Do you offer a student discount?"]),
    ("trial", ["Is there a free trial?", "Do you offer a free trial?",
               "Can I try the service for free?"]),
    ("giftcard", ["Do you sell gift cards?", "Can I buy a gift card?"]),
    ("2fa", ["How do I enable two-factor authentication?",
             "How can I turn on two-factor authentication?"]),
    ("app", ["Do you have a mobile app?", "Is there a mobile app?"]),
    ("paypal", ["Is it possible to pay with PayPal?", "Can I pay with PayPal?",
                "Do you accept PayPal?"]),
    ("tracking", ["How do I track a parcel?", "How can I track a parcel?"]),
    ("refundtime", ["How long does it take to get a refund?",
                    "How long do refunds take to process?"]),
    ("cancel", ["How do I cancel a subscription?", "How can I cancel a subscription?"]),
    ("language", ["Which languages does the app support?",
                  "What languages is the app available in?"]),
    ("privacy", ["Where can I read your privacy policy?", "Where is your privacy policy?"]),
    ("newsletter", ["How do I unsubscribe from the newsletter?",
                    "How can I stop getting the newsletter?"]),
    ("address", ["Where is your head office located?", "What is the address of your head office?"]),
    ("warranty", ["How long is the warranty on your products?",
                  "What warranty do your products come with?"]),
    ("plans", ["What is the difference between the basic and premium plans?",
               "How do the basic and premium plans differ?"]),
    ("data", ["How do I export all of my data?", "How can I export all my data?"]),
]
# Talk before a turn: (topic, [(user, assistant), ...]).
FILLERS: list[tuple[str, list[tuple[str, str]]]] = [
    ("shipping", [("My parcel hasn't arrived yet.", "Sorry about that. Could you share "
                   "the order number?"), ("It's 58213.", "Thanks, it is in transit and "
                   "should arrive on Thursday.")]),
    ("billing", [("I was charged twice this month.", "I'm sorry. I've flagged the "
                  "duplicate charge; it will be reversed within 5 days.")]),
    ("login", [("The app keeps logging me out.", "Please update the app to the latest "
                "version and sign in again."), ("Okay, that fixed it.", "Great!")]),
    ("greeting", [("Hi there!", "Hello! How can I help you today?")]),
    ("product", [("Is the blue jacket waterproof?", "Yes, it has a waterproof membrane."),
                 ("Nice, thanks!", "You're welcome!")]),
    ("order", [("I'd like to change the size on order 7731.", "Done: order 7731 is now "
                "size M.")]),
    ("feedback", [("Your website is really slow today.", "Sorry about that, we are "
                   "looking into it.")]),
    ("stock", [("When will the red sneakers be back in stock?", "They should be back "
                "next week.")]),
]
# Follow-ups whose meaning comes from the antecedent: (text, [antecedent exchanges]).
FOLLOW_UPS: list[tuple[list[str], list[tuple[str, str]]]] = [
    (["How do I change it?", "How can I change it?", "And how do I change it?"],
     [("What is my username?", "Your username is shown under Settings > Profile."),
      ("Where do I see my email address?", "Your email address is under Settings > Account."),
      ("I don't like my password.", "You can choose a new one at any time.")]),
    (["How much does it cost?", "What does it cost?", "And how much is that?"],
     [("Tell me about the premium plan.", "Premium adds priority support and 1 TB."),
      ("Do you have express shipping?", "Yes, express shipping arrives next day."),
      ("Do you sell gift wrapping?", "Yes, we offer gift wrapping at checkout.")]),
    (["Is that free?", "Is it free?", "Does that cost anything?"],
     [("Can I get a replacement card?", "Yes, you can order a replacement card in the app."),
      ("Do you offer installation?", "Yes, our technicians can install it at your home.")]),
    (["What about Canada?", "And for Canada?", "Same for Canada?"],
     [("Do you ship to the US?", "Yes, US shipping takes 3-5 days."),
      ("Is the service available in France?", "Yes, it is available in France."),
      ("What's the VAT rate you charge in Germany?", "We charge 19% VAT in Germany.")]),
    (["Why?", "Why is that?", "Why not?"],
     [("Can I pay in cash?", "No, we only accept card payments."),
      ("Can I return opened software?", "No, opened software can't be returned.")]),
    (["Tell me more.", "Can you tell me more about it?", "More details please."],
     [("What is the loyalty programme?", "You earn points on every purchase."),
      ("What does the warranty cover?", "It covers manufacturing defects.")]),
    (["Which one is cheaper?", "Which of them is cheaper?", "Which one costs less?"],
     [("What plans do you have?", "We have Basic and Premium."),
      ("What shipping options are there?", "Standard and express.")]),
    (["Can you explain the second step?", "What do you mean by step 2?",
      "I don't understand the second step."],
     [("How do I set up the router?", "1. Plug it in. 2. Hold reset for 10 s. 3. Connect."),
      ("How do I enable 2FA?", "1. Open Settings. 2. Scan the QR code. 3. Enter the code.")]),
    (["Does that work on mobile too?", "Does it work on mobile as well?"],
     [("How do I export my data?", "Use Settings > Export on the website."),
      ("How do I change the theme?", "Click the moon icon in the top bar.")]),
    (["How long will that take?", "How long does that take?"],
     [("I want to transfer my number to you.", "We can port your number for you."),
      ("Please close my account.", "I've started closing your account.")]),
    (["Where do I find it?", "Where can I find it?"],
     [("I need my tax certificate.", "You can download your tax certificate."),
      ("I lost my recovery code.", "You can generate a new recovery code.")]),
    (["Do they ship internationally?", "Do they deliver abroad?"],
     [("Who makes the Alpine tent?", "The Alpine tent is made by NorthPeak."),
      ("Which courier do you use?", "We use ParcelGo for all orders.")]),
    (["Can I cancel it later?", "Can I cancel it afterwards?"],
     [("I want to sign up for the yearly plan.", "Great, the yearly plan is $99."),
      ("I'd like to book the installation.", "Installation is booked for Monday.")]),
    (["How do I turn it off?", "How can I switch it off?"],
     [("What is dark mode?", "Dark mode shows light text on a dark background."),
      ("Why do I get so many notifications?", "Push notifications are on by default.")]),
]
# The user answers the assistant's question: the same words answer different ones.
ANSWERS: list[tuple[list[str], list[tuple[str, str]]]] = [
    (["The premium plan.", "Premium, please.", "I'm on the premium plan"],
     [("I want to upgrade.", "Sure. Which plan would you like to move to?"),
      ("How much is my renewal?", "Which plan are you currently on?"),
      ("I want to downgrade.", "Which plan would you like to cancel?")]),
    (["On my Android phone", "I use an Android phone", "Android phone"],
     [("The app crashes.", "Sorry! Which device are you using?"),
      ("I can't get notifications.", "Where do you use the app?")]),
    (["Yes please do that", "Yes, please go ahead", "Sure, go ahead"],
     [("My order is late.", "Shall I refund the shipping fee?"),
      ("I can't log in.", "Shall I send a password reset link?")]),
    (["Monthly billing is fine", "I prefer monthly billing", "Monthly billing please"],
     [("I'd like to subscribe.", "Do you want monthly or yearly billing?"),
      ("Can I change how I pay?", "Would you like monthly or yearly billing?")]),
]
# The question is about the situation the user described before it.
SITUATIONS: list[tuple[list[str], list[tuple[str, str]]]] = [
    (["Can I get a refund?", "Am I eligible for a refund?", "Can I have my money back?"],
     [("My parcel arrived damaged.", "I'm sorry to hear that."),
      ("I changed my mind about the purchase, it's been 40 days.", "I see."),
      ("I was charged twice for one order.", "I'm sorry about that.")]),
    (["Where is my order?", "What's the status of my order?", "Where's my order now?"],
     [("My order number is 44120.", "Thanks."), ("I ordered on the website, number 55231.",
                                                  "Thank you.")]),
    (["How much will I be charged?", "How much will I pay?", "What will I be charged?"],
     [("I'm on the basic plan and want premium.", "Okay."),
      ("I want to add two more users to my team.", "Okay.")]),
    (["Is my card supported?", "Do you accept my card?", "Will my card work?"],
     [("I have an American Express card.", "Okay."), ("I have a Visa debit card.", "Okay.")]),
    (["How long will delivery take?", "How long does delivery take?",
      "When will it be delivered?"],
     [("I live in Canada.", "Thanks."), ("I live in Germany.", "Thanks."),
      ("I chose express shipping.", "Noted.")]),
    (["What should I do now?", "What do I do now?", "What should I do next?"],
     [("My card was stolen.", "I'm sorry."), ("I forgot my password.", "No problem."),
      ("The app shows error 502.", "Let me check.")]),
    (["Is that covered by the warranty?", "Does the warranty cover this?",
      "Is this covered under warranty?"],
     [("I dropped my phone in water.", "Oh no."), ("The battery stopped charging.", "Hm.")]),
    (["How do I fix this?", "How can I fix this?", "What's the fix?"],
     [("The app shows error 502.", "Let me check."), ("My screen is flickering.", "Hm.")]),
]

# Held out: written after the rules were revised on the banks above, and not used to
# revise them (their hits are reported on their own).
HELD_OUT_DEPENDENT: list[tuple[list[str], list[tuple[str, str]]]] = [
    (["How do I get a replacement?", "How can I get a replacement?"],
     [("My charger stopped working.", "Sorry to hear that."),
      ("I lost my membership card.", "Sorry to hear that."),
      ("The lid of my blender cracked.", "That shouldn't happen.")]),
    (["Is there a faster option?", "Is there a quicker option?"],
     [("How long does standard shipping take?", "Standard shipping takes 5-7 days."),
      ("How long do bank transfer refunds take?", "Bank transfer refunds take 10 days.")]),
    (["Is there a store near me?", "Is there a shop near me?"],
     [("I'm in Boston this week.", "Welcome!"), ("I'm staying in Lyon.", "Bonjour!")]),
    (["Do you deliver on weekends?", "Do you deliver on Saturdays and Sundays?"],
     [("I live in rural Canada.", "Thanks."), ("I live in central Berlin.", "Thanks.")]),
    (["How much is the upgrade?", "What does the upgrade cost?"],
     [("I'm on the 50 GB plan.", "Okay."), ("I have the 200 GB plan.", "Okay.")]),
    (["What are the requirements?", "What do I need to qualify?"],
     [("I want to open a business account.", "Happy to help."),
      ("I'd like to become a reseller.", "Happy to help.")]),
    (["Store credit would be great", "I'd prefer store credit", "Store credit, please"],
     [("My order never came.", "Do you want a refund to your card or store credit?"),
      ("I returned the shoes.", "Should we refund your card or issue store credit?")]),
    (["Do you have it in a larger size?", "Is this available in a larger size?"],
     [("I like the green parka.", "It's one of our best sellers."),
      ("I'm looking at the running shorts.", "They're on sale.")]),
]
# A second held-out bank, written after the first one was measured (with the kinds of
# turns it missed in mind); the rules were not revised after either.
HELD_OUT_2: list[tuple[list[str], list[tuple[str, str]]]] = [
    (["Do you have a cheaper alternative?", "Is there a cheaper alternative?"],
     [("How much are the Studio Pro headphones?", "They are $349."),
      ("How much is express shipping?", "Express shipping is $25.")]),
    (["What's the return window?", "How long is the return window?"],
     [("I bought a laptop from you last month.", "Thanks for your purchase."),
      ("I bought fresh groceries from you.", "Thanks for your purchase.")]),
    (["Which size should I order?", "What size should I get?"],
     [("I'm 180 cm tall and slim.", "Good to know."),
      ("I'm 160 cm and usually wear petite sizes.", "Good to know.")]),
    (["How long is the battery life?", "What is the battery life like?"],
     [("Tell me about the Pixel 8.", "The Pixel 8 is our compact Android phone."),
      ("Tell me about the Aero X1 laptop.", "The Aero X1 is our lightest laptop.")]),
    (["What colours are available?", "Which colours does it come in?"],
     [("I like your Nordic sofa.", "It's a customer favourite."),
      ("Do you sell the Trail parka?", "Yes, we do.")]),
    (["How many can I order at once?", "What is the maximum I can order at once?"],
     [("Do you sell the red coffee mugs?", "Yes, they are $12 each."),
      ("Do you sell gift cards?", "Yes, from $10 to $500.")]),
    (["What is the price?", "How much is it?", "What does it cost?"],
     [("Do you repair cracked screens?", "Yes, we repair cracked screens."),
      ("Do you offer extended warranty?", "Yes, we offer a 3-year extension.")]),
    (["Can you recommend something similar?", "What would you recommend instead?"],
     [("The Alpine tent is sold out.", "Sorry about that."),
      ("I didn't like the jasmine tea.", "Sorry to hear that.")]),
]
HELD_OUT_FREE: list[tuple[str, list[str]]] = [
    ("sunday", ["What time do you close on Sundays?", "When do you close on Sundays?"]),
    ("giftwrap", ["Do you offer gift wrapping?", "Can you gift wrap my order?"]),
    ("pickup", ["Can I pick up my order in store?", "Is in-store pickup available?"]),
    ("username", ["How do I change my username?", "How can I change my username?"]),
    ("currency", ["Which currencies do you accept?", "What currencies can I pay in?"]),
]

# A third held-out bank (issue 19, second part): written before the semantic check
# (cache/continuity.py) was built or tuned, which was tuned on every bank above; its
# own seed, so the pairs above are unchanged.
SEED_3 = 1903
HELD_OUT_3: list[tuple[list[str], list[tuple[str, str]]]] = [
    (["Where can I get a spare part?", "Where do I find spare parts?"],
     [("The brush roll of my vacuum snapped.", "I'm sorry to hear that."),
      ("The handle of my suitcase broke off.", "That's annoying, sorry.")]),
    (["How long is the warranty?", "What's the warranty period?"],
     [("I'm thinking of buying the Zen espresso machine.", "Great choice."),
      ("I'm interested in the Volt e-bike.", "It's very popular.")]),
    (["Is there a lighter model?", "Do you have a lighter model?"],
     [("The Trek backpack weighs 2 kg.", "Yes, it's built for heavy loads."),
      ("How heavy is the Summit tent?", "It weighs 3.5 kg.")]),
    (["Are there any discounts available?", "Do you offer any discounts?"],
     [("I'm a teacher.", "Thanks for letting us know."),
      ("I'm buying 50 units for my company.", "Great.")]),
    (["What documents do I need?", "Which documents should I bring?"],
     [("I'm opening an account as a non-resident.", "Happy to help."),
      ("I want to return an item bought with a gift card.", "Sure.")]),
    (["How much is shipping?", "What does shipping cost?"],
     [("I'm ordering from Australia.", "Welcome!"),
      ("I'm ordering a 40 kg treadmill.", "Okay.")]),
    (["Which model do you recommend?", "What model would you suggest?"],
     [("I need a laptop for video editing.", "Sure."),
      ("I want a phone for my grandmother.", "Sure.")]),
    (["When does the sale end?", "How long does the sale last?"],
     [("I saw the winter sale on boots.", "Yes, it's on now."),
      ("Is the Black Friday sale live?", "Yes, it started today.")]),
    (["Email works best for me", "By email please"],
     [("Let me know when the mixer is back.", "Would you like email or SMS?"),
      ("Can you send me the receipt?", "Shall we send it by email or by post?")]),
]
HELD_OUT_3_FREE: list[tuple[str, list[str]]] = [
    ("recycle", ["Do you recycle old electronics?", "Can I recycle old electronics with you?"]),
    ("jobs", ["Are you hiring?", "Do you have any job openings?"]),
    ("referral", ["How does the referral programme work?", "How do referrals work?"]),
    ("phone", ["What is your customer service phone number?",
               "What number do I call for customer service?"]),
    ("wishlist", ["How do I create a wishlist?", "How can I make a wishlist?"]),
]

SYSTEM = "You are the support assistant of Acme Store."


def convo(history: list[tuple[str, str]], text: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for u, a in history:
        out += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return [*out, {"role": "user", "content": text}]


def filler(rng: random.Random, topic: str, at_least: int) -> list[tuple[str, str]]:
    """Unrelated talk of 0.. exchanges (at least `at_least`)."""
    n = rng.randint(at_least, 3)
    picks = rng.sample([f for f in FILLERS if f[0] != topic], n)
    return [x for _, ex in picks for x in ex]


def pairs() -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    out: list[dict[str, Any]] = []
    for topic, wordings in FAQS:  # 25 FAQs x 8 = 200 context-free pairs
        for i in range(8):
            a, b = rng.choice(wordings), wordings[i % len(wordings)]
            out.append({"a": convo(filler(rng, topic, 0), a),
                        "b": convo(filler(rng, topic, 1), b),
                        "label": "context-free", "kind": "faq"})
    for kind, bank, n in (("follow-up", FOLLOW_UPS, 10), ("answer", ANSWERS, 10),
                          ("situation", SITUATIONS, 12)):
        for texts, antecedents in bank:
            for _ in range(n):
                x, y = rng.sample(range(len(antecedents)), 2)
                pre_a = filler(rng, "", 0) if rng.random() < 0.3 else []
                out.append({"a": convo([*pre_a, antecedents[x]], rng.choice(texts)),
                            "b": convo([antecedents[y]], rng.choice(texts)),
                            "label": "context-dependent", "kind": kind})
    for topic, wordings in HELD_OUT_FREE:  # 5 x 6 = 30
        for i in range(6):
            a, b = rng.choice(wordings), wordings[i % len(wordings)]
            out.append({"a": convo(filler(rng, topic, 0), a),
                        "b": convo(filler(rng, topic, 1), b),
                        "label": "context-free", "kind": "held-out faq"})
    for texts, antecedents in HELD_OUT_DEPENDENT:  # 8 x 6 = 48
        for _ in range(6):
            x, y = rng.sample(range(len(antecedents)), 2)
            out.append({"a": convo([antecedents[x]], rng.choice(texts)),
                        "b": convo([antecedents[y]], rng.choice(texts)),
                        "label": "context-dependent", "kind": "held-out"})
    for texts, antecedents in HELD_OUT_2:  # 8 x 6 = 48
        for _ in range(6):
            x, y = rng.sample(range(len(antecedents)), 2)
            out.append({"a": convo([antecedents[x]], rng.choice(texts)),
                        "b": convo([antecedents[y]], rng.choice(texts)),
                        "label": "context-dependent", "kind": "held-out 2"})
    rng = random.Random(SEED_3)
    for topic, wordings in HELD_OUT_3_FREE:  # 5 x 6 = 30
        for i in range(6):
            a, b = rng.choice(wordings), wordings[i % len(wordings)]
            out.append({"a": convo(filler(rng, topic, 0), a),
                        "b": convo(filler(rng, topic, 1), b),
                        "label": "context-free", "kind": "held-out 3 faq"})
    for texts, antecedents in HELD_OUT_3:  # 9 x 6 = 54
        for _ in range(6):
            x, y = rng.sample(range(len(antecedents)), 2)
            pre_a = filler(rng, "", 0) if rng.random() < 0.3 else []
            out.append({"a": convo([*pre_a, antecedents[x]], rng.choice(texts)),
                        "b": convo([antecedents[y]], rng.choice(texts)),
                        "label": "context-dependent", "kind": "held-out 3"})
    return out


def main() -> None:
    rows = pairs()
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    n = sum(r["label"] == "context-dependent" for r in rows)
    print(f"wrote {OUT}: {len(rows)} pairs, {n} context-dependent, {len(rows) - n} "
          "context-free")


if __name__ == "__main__":
    main()
