#!/usr/bin/env python3
"""Generate tuneforge's bundled quickstart dataset: "contact extraction".

Where the data comes from: it is SYNTHETIC, produced entirely by this script from the word lists and
sentence templates below (all names, companies and sentences were written for tuneforge; any resemblance
to real people or firms is coincidental). No external source is read. The output is deterministic: the
same script always writes the same bytes, and a unit test checks the shipped files against it.

Regenerate the shipped files (from the repository root):

    python3 scripts/make_quickstart_data.py

or write them elsewhere / check them without writing:

    python3 scripts/make_quickstart_data.py --out /tmp/quickstart
    python3 scripts/make_quickstart_data.py --check

Task: the user asks for the contact in a sentence as JSON with keys "name", "company", "city"; the
assistant answers with compact JSON in that key order. Some sentences mention a second city (a past
location, a trip) or a former employer, so copying the first capitalised words is not enough.

Honest held-out splits: validation and test use first names, last names, companies and cities from lists
disjoint from the training lists (and from each other); only the sentence templates are shared, so a
tuned model must learn the extraction, not memorise entities. Stdlib only, on purpose: it runs before
anything is installed.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

SEED = 20261122
SIZES = {"train": 320, "validation": 40, "test": 100}
INSTRUCTION = 'Extract the contact as JSON with keys "name", "company", "city".'
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "src" / "tuneforge" / "assets" / "quickstart"

# Every sentence names the person, their current company and current city exactly once; {old_city} and
# {old_company} are distractors that must not end up in the answer.
TEMPLATES = [
    "{name} works at {company} in {city}.",
    "Meet {name}, an engineer at {company} based in {city}.",
    "{name} moved from {old_city} to {city} last year and joined {company}.",
    "Our new contact at {company} is {name}, who is based in {city}.",
    "Based in {city}, {name} handles partnerships for {company}.",
    "After five years in {old_city}, {name} now leads sales at {company} from {city}.",
    "{company} hired {name}, who lives in {city}.",
    "Please add {name} ({company}, {city}) to the CRM.",
    "Spoke with {name} from {company} today; they live in {city} but grew up in {old_city}.",
    "{name}, formerly at {old_company}, is now with {company} in {city}.",
    "The {city} office of {company} is run by {name}.",
    "I met {name} at a conference in {old_city}; they work for {company} in {city}.",
    "{name} from {city} is the new account manager at {company}.",
    "Reach {name} at the {city} branch of {company}.",
    "Contact: {name}. Employer: {company}. Location: {city}.",
    "{company} ({city}) just promoted {name} to director.",
    "Sent the contract to {name} at {company}; they relocated to {city} from {old_city}.",
    "{name} left {old_company} and now consults for {company} out of {city}.",
    "Working from {city}, {name} is the main point of contact at {company}.",
    "Our {city} partner {company} introduced us to {name}.",
    "{name} will visit {old_city} next week but is normally at {company} in {city}.",
    "Invoice questions go to {name}, {company}, {city}.",
    "Call notes: {name} ({company}) says the {city} team is growing.",
    "{name} recently joined {company} and is settling into {city}.",
    "Yesterday {name} of {company} flew home to {city} after a trip to {old_city}.",
]

POOLS = {
    "train": {
        "first": ["Alice", "Marcus", "Priya", "Daniel", "Sofia", "Kenji", "Amara", "Lucas", "Elena", "Omar",
                  "Hannah", "Mateo", "Grace", "Tobias", "Leila", "Samuel", "Nadia", "Victor", "Chloe", "Ibrahim",
                  "Julia", "Ethan", "Mei", "Rafael", "Zoe", "Adrian", "Fatima", "Oscar", "Ingrid", "Felix",
                  "Aisha", "Henry", "Clara", "Diego", "Yuki", "Nathan", "Rosa", "Stefan", "Maya", "Patrick"],
        "last": ["Johnson", "Patel", "Nguyen", "Schmidt", "Rossi", "Tanaka", "Okafor", "Silva", "Kowalski",
                 "Haddad", "Andersson", "Moreau", "Fischer", "Reyes", "Kim", "Brennan", "Novak", "Castillo",
                 "Lindqvist", "Mensah", "O'Connor", "Dubois", "Yamamoto", "Horvat", "Costa", "Walsh", "Abadi",
                 "Petrov", "Jensen", "Alvarez", "Bauer", "Chen", "Murphy", "Sato", "Varga", "Hughes", "Mwangi",
                 "Larsen", "Fontaine", "Ortiz"],
        "company": ["Northwind Labs", "Bluefin Analytics", "Crestline Foods", "Harbor Robotics",
                    "Maplewood Insurance", "Quantix Systems", "Redstone Logistics", "Silverleaf Media",
                    "Brightpath Energy", "Copperfield Bank", "Evergreen Pharma", "Granite Works", "Lumen Optics",
                    "Meridian Travel", "Nimbus Cloud", "Orchard Health", "Pinecrest Capital", "Riverbend Studios",
                    "Summit Textiles", "Tidewater Shipping", "Vantage Motors", "Willow Software",
                    "Zephyr Airlines", "Atlas Biotech"],
        "city": ["Lisbon", "Toronto", "Nairobi", "Osaka", "Denver", "Lyon", "Melbourne", "Krakow", "Austin",
                 "Seville", "Hamburg", "Seoul", "Dublin", "Porto", "Calgary", "Bangalore", "Rotterdam",
                 "San Diego", "Buenos Aires", "Helsinki", "Marseille", "Auckland", "Chicago", "Cape Town"],
    },
    "validation": {
        "first": ["Beatrice", "Joaquin", "Anika", "Gregory", "Selin", "Tomas", "Imani", "Viktor", "Noor",
                  "Cedric", "Lena", "Arjun"],
        "last": ["Delgado", "Kaplan", "Osei", "Lindgren", "Marchetti", "Hoffmann", "Quinn", "Sharma", "Barros",
                 "Eriksen", "Takahashi", "Whitfield"],
        "company": ["Beacon Legal", "Cobalt Mining", "Driftwood Games", "Foxglove Labs", "Horizon Dairy",
                    "Ironbark Tools", "Juniper Finance", "Kestrel Aerospace"],
        "city": ["Bergen", "Valencia", "Kyoto", "Edinburgh", "Santiago", "Minneapolis", "Gdansk", "Accra"],
    },
    "test": {
        "first": ["Olivia", "Rohan", "Sienna", "Malik", "Freya", "Dmitri", "Keiko", "Gabriel", "Esther", "Hugo",
                  "Layla", "Bruno", "Camille", "Emeka", "Astrid", "Farid", "Jasmine", "Lorenzo", "Mira", "Theo"],
        "last": ["Fernandes", "Nakamura", "Adeyemi", "Kovacs", "Bianchi", "Gallagher", "Weber", "Singh",
                 "Morales", "Holm", "Park", "Lambert", "Novotny", "Achebe", "Rasmussen", "Ferreira", "Ito",
                 "Sullivan", "Vogel", "Mahmoud"],
        "company": ["Larkspur Ventures", "Moonstone Jewelry", "Nova Semiconductors", "Oakridge Realty",
                    "Polaris Freight", "Quarry Coffee", "Rosewood Hotels", "Sterling Chemicals", "Tundra Outdoor",
                    "Umbra Security", "Verdant Farms", "Wavelength Audio", "Yellowtail Fisheries", "Zenith Clinics"],
        "city": ["Montreal", "Lagos", "Vienna", "Perth", "Boston", "Bilbao", "Stockholm", "Hanoi", "New Orleans",
                 "Munich", "Oslo", "Sao Paulo", "Glasgow", "Taipei"],
    },
}


def make_split(split: str) -> list[dict]:
    # A string seed is hashed deterministically by `random` (unlike hash()), so output is stable across runs.
    rng = random.Random(f"{SEED}-{split}")
    pool = POOLS[split]
    rows: list[dict] = []
    seen: set[str] = set()
    order: list[str] = []
    while len(rows) < SIZES[split]:
        if not order:  # cycle through shuffled templates so every template is used about equally often
            order = TEMPLATES[:]
            rng.shuffle(order)
        template = order.pop()
        name = f"{rng.choice(pool['first'])} {rng.choice(pool['last'])}"
        company, old_company = rng.sample(pool["company"], 2)
        city, old_city = rng.sample(pool["city"], 2)
        sentence = template.format(name=name, company=company, city=city, old_city=old_city, old_company=old_company)
        if sentence in seen:
            order.append(template)
            continue
        seen.add(sentence)
        answer = json.dumps({"name": name, "company": company, "city": city}, ensure_ascii=False)
        rows.append({
            "id": f"{split}-{len(rows):04d}",
            "messages": [
                {"role": "user", "content": f"{INSTRUCTION}\n\n{sentence}"},
                {"role": "assistant", "content": answer},
            ],
        })
    return rows


def data_card() -> str:
    pools = "\n".join(
        f"| {split} | {SIZES[split]} | {len(p['first'])} | {len(p['last'])} | {len(p['company'])} | {len(p['city'])} |"
        for split, p in POOLS.items()
    )
    return f"""# Quickstart dataset: contact extraction

Bundled with tuneforge so `python3 dev.py quickstart` can fine-tune SmolLM2-135M-Instruct on CPU in
minutes and show, with numbers, that the tuned model beats the base model.

## Origin
Synthetic. Every row was generated by `scripts/make_quickstart_data.py` (stdlib only, seed {SEED}) from
hand-written word lists and {len(TEMPLATES)} sentence templates. No external data, no personal data:
names, companies and their combinations are invented. Regenerate with

    python3 scripts/make_quickstart_data.py          # rewrites this folder
    python3 scripts/make_quickstart_data.py --check  # verifies it is up to date

## Task
The user message is `{INSTRUCTION}` followed by a blank line and one sentence
mentioning a person's full name, their company and their city in varying order. Some sentences add a
distractor (a former employer, a past or visited city) that must not be extracted. The assistant answer
is compact JSON with the keys in the order name, company, city, e.g.
`{{"name": "Alice Johnson", "company": "Northwind Labs", "city": "Lisbon"}}`. There is no system message
(SmolLM2's template then inserts its default one, as it would for a user of the model).

## Files
`train.jsonl`, `validation.jsonl`, `test.jsonl`: one chat row per line,
`{{"id": ..., "messages": [{{"role": "user", ...}}, {{"role": "assistant", ...}}]}}`.

| split | rows | first names | last names | companies | cities |
|---|---|---|---|---|---|
{pools}

Splits are entity-disjoint: the first names, last names, companies and cities of each split come from
lists that share no entry with the other splits. Only the sentence templates are shared, so the test
measures whether the model learned the extraction rather than memorised names.

## Scoring
Answers are scored exactly as generated (greedy, up to 48 new tokens, stopping at `<|im_end|>`): whole-answer exact
match, and the share of the three fields whose values equal the reference in the answer parsed as a JSON object. An
answer that is not a bare JSON object (prose around it, a code fence, or text after it) parses as nothing and scores
0 on both. The untuned SmolLM2-135M-Instruct usually writes pretty-printed JSON and then keeps talking, so this
task measures both the extraction and the format.

## Intended use and limits
A smoke-test-sized benchmark for the tuneforge pipeline (exact match and per-field JSON accuracy).
Templates are few and English only; scores on it say nothing about real-world extraction quality.
License: same as tuneforge (Apache-2.0).
"""


def render_files() -> dict[str, bytes]:
    files = {
        f"{split}.jsonl": "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in make_split(split)).encode()
        for split in SIZES
    }
    files["README.md"] = data_card().encode()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    args = parser.parse_args(argv)
    files = render_files()
    if args.check:
        stale = [n for n, data in files.items() if not (args.out / n).is_file() or (args.out / n).read_bytes() != data]
        for name in stale:
            print(f"out of date: {args.out / name}", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (args.out / name).write_bytes(data)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
