"""A planted, labelled near-duplicate set, generated deterministically (no file to drift).

Base rows are support tickets from one narrow topic (orders, refunds, accounts), so unrelated rows
share much of their vocabulary and phrasing - the hard negatives. Short rows have 12-20 words, long
rows 90-160. Variants copy a base row and change one or two words (substitution, insertion or
deletion) in the user turn or the answer: the positives.
"""
from __future__ import annotations

import random

SUBJECTS = ["my order", "the parcel", "our last delivery", "the replacement", "my subscription", "the invoice",
            "my account", "the refund", "the package", "this shipment", "my second order", "the gift card"]
PROBLEMS = ["arrived damaged", "never arrived", "was charged twice", "shows the wrong address",
            "is still pending", "was cancelled without notice", "came with a missing part", "is stuck in customs",
            "was sent to my old flat", "has the wrong size", "cannot be tracked", "was refunded only partly"]
DETAILS = ["after three weeks", "since last monday", "even though I paid for express shipping",
           "and support has not replied", "for the second time this year", "although the app says delivered",
           "while I was travelling abroad", "right before the holidays", "despite two earlier complaints",
           "and the courier blames the warehouse", "with no email about it", "according to the tracking page"]
ASKS = ["please send a replacement", "can you refund me", "what should I do now", "please call me back",
        "I want to cancel it", "can you check what happened", "please update the address",
        "I need this fixed today", "can I get a discount", "please escalate this"]
ANSWERS = ["Sorry about that, a replacement is on its way.", "We have issued a full refund to your card.",
           "Please send us a photo of the damage.", "Your address has been updated for future orders.",
           "I have escalated this to our shipping team.", "The courier will contact you within two days.",
           "Your order has been cancelled and refunded.", "We added a voucher to your account for the trouble.",
           "Tracking shows it is at the local depot now.", "Could you confirm the order number for me?"]
FILLER = ["ticket", "support", "order", "refund", "parcel", "courier", "address", "account", "delivery", "tracking",
          "warehouse", "payment", "invoice", "customer", "agent", "manager", "week", "days", "email", "phone", "app",
          "label", "box", "item", "size", "colour"]


SHORT_ANSWERS = ["Done.", "Refunded.", "Escalated to shipping.", "Replacement sent.", "Address updated.",
                 "Cancelled for you.", "Voucher added.", "Checking now."]


def _slots(rng: random.Random, tiny: bool) -> tuple[int, ...]:
    lists = (SUBJECTS, PROBLEMS, ASKS) if tiny else (SUBJECTS, PROBLEMS, DETAILS, ASKS)
    return tuple(rng.randrange(len(xs)) for xs in lists)


def _ticket(rng: random.Random, slots: tuple[int, ...] | None = None) -> str:
    if slots is None:
        slots = _slots(rng, False)
    if len(slots) == 3:
        s, p, a = slots
        return f"{SUBJECTS[s].capitalize()} {PROBLEMS[p]}, {ASKS[a]}."
    s, p, d, a = slots
    return f"{SUBJECTS[s].capitalize()} #{rng.randint(1000, 99999)} {PROBLEMS[p]} {DETAILS[d]}, {ASKS[a]}."


def _long(rng: random.Random) -> str:
    parts = []
    while sum(len(p.split()) for p in parts) < rng.randint(80, 140):
        parts.append(_ticket(rng) if rng.random() < 0.6 else " ".join(rng.choices(FILLER, k=rng.randint(6, 12))) + ".")
    return " ".join(parts)


def _edit(rng: random.Random, text: str, edits: int) -> str:
    words = text.split()
    for _ in range(edits):
        op = rng.choice(("sub", "sub", "ins", "del"))
        k = rng.randrange(len(words))
        if op == "del" and len(words) > 3:
            del words[k]
        elif op == "ins":
            words.insert(k, rng.choice(FILLER))
        else:
            replacement = rng.choice(FILLER)
            while replacement == words[k]:
                replacement = rng.choice(FILLER)
            words[k] = replacement
    return " ".join(words)


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], "meta": {}}


def planted_set(seed: int = 13, n_tiny: int = 60, n_short: int = 240, n_long: int = 120, n_variants: int = 300):
    """(rows, groups, kinds): `groups[i]` names the base row that row i copies (itself for a base);
    `kinds[i]` is e.g. "short/1" for a one-word variant of a short row, "short" for a base.

    Tiny rows (13-17 words with the role prefixes) have three template slots, short ones (21-31 words)
    four plus an order number; two bases of a kind never share all but one slot, so every pair of
    bases differs in whole phrases - similar topic and wording, but not copies."""
    rng = random.Random(seed)
    rows, groups, kinds = [], [], []
    taken: dict[bool, list[tuple[int, ...]]] = {True: [], False: []}
    plan = ["tiny"] * n_tiny + ["short"] * n_short + ["long"] * n_long
    for kind in plan:
        if kind == "long":
            user, answer = _long(rng), rng.choice(ANSWERS)
        else:
            tiny = kind == "tiny"
            for _ in range(1000):
                slots = _slots(rng, tiny)
                if all(sum(a == b for a, b in zip(slots, other)) < len(slots) - 1 for other in taken[tiny]):
                    break
            else:
                raise RuntimeError(f"cannot draw {n_tiny if tiny else n_short} distinct {kind} tickets")
            taken[tiny].append(slots)
            user = _ticket(rng, slots)
            answer = rng.choice(SHORT_ANSWERS if tiny else ANSWERS)
        groups.append(len(rows))
        rows.append(chat(user, answer))
        kinds.append(kind)
    bases = len(rows)
    for v in range(n_variants):
        base = rng.randrange(bases)
        edits = 1 + v % 2
        user, answer = (m["content"] for m in rows[base]["messages"])
        if rng.random() < 0.8 or len(answer.split()) < 3:
            user = _edit(rng, user, edits)
        else:
            answer = _edit(rng, answer, edits)
        rows.append(chat(user, answer))
        groups.append(base)
        kinds.append(f"{kinds[base]}/{edits}")
    order = list(range(len(rows)))
    rng.shuffle(order)
    return [rows[i] for i in order], [groups[i] for i in order], [kinds[i] for i in order]


def pair_scores(clusters, groups, kinds):
    """Pairwise precision overall and recall per variant kind: a predicted pair is two rows in one
    cluster, a true pair two rows copying the same base."""
    predicted = {(a, b) for c in clusters for i, a in enumerate(c.members) for b in c.members[i + 1:]}
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    truth = {(a, b) for m in by_group.values() for i, a in enumerate(m) for b in m[i + 1:]}
    hit = predicted & truth
    recall: dict[str, list[int]] = {}
    for a, b in truth:
        kind = max(kinds[a], kinds[b], key=len)  # the variant's kind ("short/2" over "short")
        got = recall.setdefault(kind, [0, 0])
        got[0] += (a, b) in hit
        got[1] += 1
    return {"pairs_true": len(truth), "pairs_predicted": len(predicted),
            "precision": len(hit) / len(predicted) if predicted else 1.0,
            "recall": len(hit) / len(truth) if truth else 1.0,
            "recall_by_kind": {k: (h / n, n) for k, (h, n) in sorted(recall.items())}}
