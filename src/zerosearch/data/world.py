"""A seeded fictional encyclopedia: entities, a FlashRAG corpus with one article each, and QA pairs.

Every name is invented from syllables and every year is drawn at random, so a question can only be
answered by searching this corpus. Articles state true facts only; their distractor sentences state true
facts about a similar entity (a namesake, a rival, a competitor), so sloppy retrieval finds wrong answers.
Only `random.Random(seed)` is used and nothing iterates over a set, so a seed gives the same bytes in any
process.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..io import atomic_write_text, write_jsonl
from .qa import QAExample

MIN_ENTITIES = 20
MAX_ENTITIES = 5000
KINDS = ("city", "person", "org", "invention")

# Starts end in a consonant and endings begin with a vowel, so every join is pronounceable.
_STARTS = (
    "Quor Brel Tess Vask Drel Kord Morv Zanth Thal Orv Fenn Hask Jorv Lusk Nevr Pell Rhun Sarv Tov Ulv "
    "Esk Grav Kell Lorn Mald Ost Prav Rusk Tarn Vel Zor Brann Cresk Fald Gorm Ird Jask Kov Wyst "
    "Harr Noth Syv Trev Varr Yorm Zell Bosk Corv Dravn Gesk Hald Quel Rimm Skorv Teld Vord Wend Yrr"
).split()
_MIDS = "ar el in ov ul er ith".split()
_ENDS = {
    "city": "ath ora esk ovin ane eth ulm ira osk enne und ival".split(),
    "country": "esh ethia onne uria avel ist orra ethe".split(),
    "surname": "ek orn oss uk ett yth ask ur iss ov".split(),
    "org": "ari ax il uro ov eth ix ond".split(),
    "invention": "ary ell ine ory ic ex al".split(),
}
_GIVEN_STARTS = (
    "Ovr Bryn Cael Daer Ysm Fyr Gwil Zeph Isk Jes Kael Lir Myr Nim Ors Pyr Quen Ryl Sef Tam Ulm Vyr Wen Yel"
).split()
_GIVEN_ENDS = "en is ion eth ine el ys ith wyn".split()
# Real words and names that the syllables above happen to spell.
_REAL = frozenset("orval morval orvil kaelen caelen rylen".split())
_CODAS = "k n r s t sk st ss th rn nd".split()

_OCCUPATIONS = (
    "clockmaker cartographer chemist shipwright astronomer printer engineer physician glassblower "
    "botanist surveyor weaver metallurgist"
).split()
_FIELDS = {
    "optics": ("Works", "Institute", "Company"),
    "shipbuilding": ("Yards", "Works", "Company"),
    "textiles": ("Mills", "Company", "Works"),
    "medicine": ("Institute", "Society", "Infirmary"),
    "printing": ("Press", "Company"),
    "astronomy": ("Observatory", "Society", "Institute"),
    "metallurgy": ("Foundry", "Works"),
    "chemistry": ("Laboratories", "Institute", "Works"),
    "cartography": ("Society", "Company"),
    "banking": ("Bank", "Trust", "Company"),
}
_DEVICES = {
    "loom": "It wove patterned cloth far faster than the looms before it.",
    "lamp": "It burned longer and brighter than the oil lamps of its day.",
    "engine": "It drove pumps and mills with a steady, quiet stroke.",
    "pump": "It lifted water from deep mines with little effort.",
    "compass": "It held its bearing even on a rolling deck.",
    "lathe": "It turned metal parts to a fine and even finish.",
    "kiln": "It fired bricks and pottery with far less fuel.",
    "barometer": "It gave sailors early warning of coming storms.",
    "sextant": "It let navigators fix their position at night.",
    "telegraph": "It carried coded messages between distant towns.",
    "valve": "It made boilers much safer to run.",
    "chronometer": "It kept time at sea to within seconds a day.",
}
_CITY_FILLER = (
    "{name} is known for its covered markets and stone bridges.",
    "The old town of {name} is built around a busy harbour.",
    "{name} grew up around a river crossing and a wool market.",
    "{name} is known for its bell towers and narrow canals.",
    "The workshops and fairs of {name} drew traders from far away.",
)

# relation -> (hops, question templates); {s} is the subject's name. A relation is a path of attribute
# names from the subject, e.g. org.founder.birth_year = attrs["founder"] -> that person's "birth_year".
_QUESTIONS: dict[str, tuple[int, tuple[str, ...]]] = {
    "person.birth_city": (1, ("Where was {s} born?", "In which city was {s} born?", "What is the birthplace of {s}?")),
    "person.birth_year": (1, ("In what year was {s} born?", "When was {s} born?", "What is the birth year of {s}?")),
    "org.founder": (1, ("Who founded the {s}?", "Who was the founder of the {s}?")),
    "org.founding_year": (1, ("In what year was the {s} founded?", "When was the {s} founded?")),
    "org.headquarters": (1, ("Where is the {s} headquartered?", "In which city are the headquarters of the {s}?")),
    "city.country": (1, ("In which country is {s}?", "{s} is a city in which country?")),
    "invention.inventor": (1, ("Who invented the {s}?", "Who was the inventor of the {s}?")),
    "invention.year": (1, ("In what year was the {s} invented?", "When was the {s} invented?")),
    "person.birth_city.country": (2, ("In which country was {s} born?", "{s} was born in a city of which country?")),
    "org.founder.birth_city": (
        2, ("Where was the founder of the {s} born?", "In which city was the founder of the {s} born?")),
    "org.founder.birth_year": (
        2, ("In what year was the founder of the {s} born?", "When was the founder of the {s} born?")),
    "org.headquarters.country": (
        2, ("In which country is the {s} headquartered?", "The headquarters of the {s} are in which country?")),
    "invention.inventor.birth_city": (
        2, ("Where was the inventor of the {s} born?", "In which city was the inventor of the {s} born?")),
    "invention.inventor.birth_year": (
        2, ("In what year was the inventor of the {s} born?", "When was the inventor of the {s} born?")),
}


@dataclass
class Entity:
    id: str  # "<kind>-<n>"
    kind: str  # one of KINDS
    name: str
    attrs: dict[str, Any]  # related entities are referred to by name (names are unique)
    doc_id: str


@dataclass
class World:
    seed: int
    entities: list[Entity]
    corpus: list[dict]
    train: list[QAExample]
    test: list[QAExample]

    def by_name(self) -> dict[str, Entity]:
        return {e.name: e for e in self.entities}


def _stem(word: str) -> str:
    return word.rstrip("bcdfghjklmnpqrstvwxz")


class _Names:
    """Invents words; every word is used once across the world (except names shared within people)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()  # membership only, never iterated

    def take(self, word: str) -> bool:
        if word.lower() in self.used or word.lower() in _REAL:
            return False
        self.used.add(word.lower())
        return True

    def new(self, starts: list[str], ends: list[str], p_mid: float = 0.3) -> str:
        for _ in range(10_000):
            mid = self.rng.choice(_MIDS) if self.rng.random() < p_mid else ""
            start, end = self.rng.choice(starts), self.rng.choice(ends)
            if start.lower().endswith(end) or mid == end:  # "Kovov", "Tovovov"
                continue
            word = start + mid + end
            if self.take(word):
                return word
        raise ValueError("ran out of invented names; use fewer entities")

    def word(self, style: str) -> str:
        return self.new(_STARTS, _ENDS[style])

    def given(self) -> str:
        return self.new(_GIVEN_STARTS, _GIVEN_ENDS, p_mid=0.0)

    def variant(self, word: str) -> str | None:
        """A new word differing from `word` only in its final consonants ("Vaskosk" for "Vaskoss")."""
        stem = _stem(word)
        codas = [c for c in _CODAS if stem + c != word]
        self.rng.shuffle(codas)
        for coda in codas:
            if self.take(stem + coda):
                return stem + coda
        return None


def _counts(n: int) -> dict[str, int]:
    cities = max(3, round(0.15 * n))
    orgs = max(3, round(0.25 * n))
    inventions = max(3, round(0.15 * n))
    return {"city": cities, "person": n - cities - orgs - inventions, "org": orgs, "invention": inventions}


def _check_args(seed: int, n_entities: int, test_fraction: float) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, not {seed!r}")
    bad_n = isinstance(n_entities, bool) or not isinstance(n_entities, int)
    if bad_n or not MIN_ENTITIES <= n_entities <= MAX_ENTITIES:
        raise ValueError(
            f"n_entities must be an integer between {MIN_ENTITIES} and {MAX_ENTITIES}, not {n_entities!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1, not {test_fraction!r}")


def build_world(seed: int = 0, n_entities: int = 300, test_fraction: float = 0.2) -> World:
    _check_args(seed, n_entities, test_fraction)
    rng = random.Random(seed)
    names = _Names(rng)
    counts = _counts(n_entities)
    entities: list[Entity] = []
    per_kind: Counter[str] = Counter()

    def add(kind: str, name: str, attrs: dict[str, Any]) -> Entity:
        e = Entity(f"{kind}-{per_kind[kind]}", kind, name, attrs, str(len(entities)))
        per_kind[kind] += 1
        entities.append(e)
        return e

    n_countries = min(8, max(2, counts["city"] // 2))
    countries = [names.word("country") for _ in range(n_countries)]
    cities = []
    for i in range(counts["city"]):
        country = countries[i] if i < n_countries else rng.choice(countries)
        cities.append(add("city", names.word("city"), {"country": country, "founding_year": rng.randint(850, 1650)}))

    people = _make_people(rng, names, counts["person"], cities, add)
    # Organisations ("Faldix Works") and inventions ("Haldory barometer"), each made by one of the people
    _make_works(rng, names, counts["org"], people, add, "org", maker="founder", year="founding_year",
                ages=(21, 60), topic="field", topics=list(_FIELDS), suffix=lambda field: rng.choice(_FIELDS[field]),
                extra=lambda: {"headquarters": rng.choice(cities).name})
    _make_works(rng, names, counts["invention"], people, add, "invention", maker="inventor", year="year",
                ages=(21, 55), topic="device", topics=list(_DEVICES), suffix=lambda device: device)

    by_kind = {k: [e for e in entities if e.kind == k] for k in KINDS}
    corpus = [{"id": e.doc_id, "contents": f'"{e.name}"\n{_article(rng, e, by_kind[e.kind])}'} for e in entities]
    questions = _questions(rng, entities)
    train, test = _split(rng, questions, test_fraction)
    return World(seed, entities, corpus, train, test)


def _make_people(rng: random.Random, names: _Names, n: int, cities: list[Entity], add) -> list[Entity]:
    # Few first names and surnames, so namesakes are common; the last few people copy someone's first name
    # and change the end of their surname ("Arlen Voss" / "Arlen Vosk"), so a careless query finds the wrong one.
    given = [names.given() for _ in range(min(150, max(3, n // 3)))]
    surnames = [names.word("surname") for _ in range(max(3, (n * 11) // 20))]
    n_twins = max(1, round(0.12 * n))
    people: list[Entity] = []
    taken: set[str] = set()
    for i in range(n):
        first = last = None
        if people and i >= n - n_twins:
            base = rng.choice(people)
            first, last = base.attrs["first"], names.variant(base.attrs["last"])
        while last is None or f"{first} {last}" in taken:
            first, last = rng.choice(given), rng.choice(surnames)
        taken.add(f"{first} {last}")
        attrs = {
            "first": first,
            "last": last,
            "birth_year": rng.randint(1760, 1940),
            "birth_city": rng.choice(cities).name,
            "occupation": rng.choice(_OCCUPATIONS),
        }
        people.append(add("person", f"{first} {last}", attrs))
    return people


def _make_works(rng: random.Random, names: _Names, n: int, people: list[Entity], add, kind: str, *, maker: str,
                year: str, ages: tuple[int, int], topic: str, topics: list[str], suffix: Callable[[str], str],
                extra: Callable[[], dict[str, Any]] = dict) -> None:
    """`n` entities of `kind`, each made by a random person (attribute `maker`) when aged within `ages`
    (attribute `year`), about one of `topics` (attribute `topic`) and named by an invented word and
    `suffix(topic)`. `extra()` gives any further attributes; it draws after the year and its attributes come
    before the topic's (the order of the draws and of the attributes makes the world)."""
    for _ in range(n):
        person = rng.choice(people)
        subject = rng.choice(topics)
        name = f"{names.word(kind)} {suffix(subject)}"
        made = person.attrs["birth_year"] + rng.randint(*ages)
        add(kind, name, {maker: person.name, year: made, **extra(), topic: subject})


def _similarity(a: Entity, b: Entity) -> int:
    """How easily two people are confused: near-identical name > shared surname > shared first name."""
    fa, la, fb, lb = a.attrs["first"], a.attrs["last"], b.attrs["first"], b.attrs["last"]
    if fa == fb and _stem(la) == _stem(lb):
        return 3
    return 2 if la == lb else 1 if fa == fb else 0


def _pick(rng: random.Random, candidates: list[Entity], fallback: list[Entity], exclude: Entity) -> Entity:
    pool = [e for e in candidates if e is not exclude] or [e for e in fallback if e is not exclude]
    return rng.choice(pool)


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _article(rng: random.Random, e: Entity, same_kind: list[Entity]) -> str:
    a = e.attrs
    if e.kind == "city":
        main = rng.choice((
            f"{e.name} is a city in the country of {a['country']}. It was founded in {a['founding_year']}.",
            f"Founded in {a['founding_year']}, {e.name} is a city in the country of {a['country']}.",
            f"The city of {e.name} lies in the country of {a['country']} and was founded in "
            f"{a['founding_year']}.",
        ))
        o = _pick(rng, [x for x in same_kind if x.attrs["country"] == a["country"]], same_kind, e)
        if o.attrs["country"] == a["country"]:
            other = rng.choice((
                f"{o.name}, also in {a['country']}, was founded in {o.attrs['founding_year']}.",
                f"{o.name}, elsewhere in {a['country']}, dates from {o.attrs['founding_year']}.",
            ))
        else:
            other = f"{o.name}, in {o.attrs['country']}, was founded in {o.attrs['founding_year']}."
        return " ".join((main, rng.choice(_CITY_FILLER).format(name=e.name), other))

    if e.kind == "person":
        job = _a(a["occupation"])
        main = rng.choice((
            f"{e.name} was {job} born in {a['birth_city']} in {a['birth_year']}.",
            f"Born in {a['birth_year']} in the city of {a['birth_city']}, {e.name} worked as {job}.",
            f"{e.name}, born in {a['birth_city']} in {a['birth_year']}, was {job}.",
        ))
        best = max(_similarity(e, x) for x in same_kind if x is not e)
        namesakes = [x for x in same_kind if x is not e and _similarity(e, x) == best] if best else []
        same_job = [x for x in same_kind if x.attrs["occupation"] == a["occupation"]]
        o = _pick(rng, namesakes or same_job, same_kind, e)
        oa = o.attrs
        if namesakes:
            other = rng.choice((
                f"{e.name} is not to be confused with {o.name}, {_a(oa['occupation'])} born in "
                f"{oa['birth_city']} in {oa['birth_year']}.",
                f"A namesake, {o.name}, was born in {oa['birth_city']} in {oa['birth_year']}.",
            ))
        else:
            other = f"Another {oa['occupation']}, {o.name}, was born in {oa['birth_city']} in {oa['birth_year']}."
        return " ".join((main, other))

    if e.kind == "org":
        main = rng.choice((
            f"The {e.name}, an organisation working in {a['field']}, was founded in {a['founding_year']} by "
            f"{a['founder']}. Its headquarters are in {a['headquarters']}.",
            f"{a['founder']} founded the {e.name} in {a['founding_year']}. Working in {a['field']}, it has its "
            f"headquarters in the city of {a['headquarters']}.",
            f"Headquartered in {a['headquarters']}, the {e.name} works in {a['field']}. It was founded by "
            f"{a['founder']} in {a['founding_year']}.",
        ))
        o = _pick(rng, [x for x in same_kind if x.attrs["field"] == a["field"]], same_kind, e)
        other = rng.choice((
            f"Its competitor, the {o.name}, was founded in {o.attrs['founding_year']}.",
            f"Its rival, the {o.name}, is headquartered in {o.attrs['headquarters']}.",
        ))
        return " ".join((main, other))

    main = rng.choice((
        f"The {e.name} was invented by {a['inventor']} in {a['year']}.",
        f"{a['inventor']} invented the {e.name} in {a['year']}.",
        f"First built in {a['year']}, the {e.name} was invented by {a['inventor']}.",
    ))
    o = _pick(rng, [x for x in same_kind if x.attrs["device"] == a["device"]], same_kind, e)
    other = f"A rival design, the {o.name}, was invented by {o.attrs['inventor']} in {o.attrs['year']}."
    return " ".join((main, _DEVICES[a["device"]], other))


def _questions(rng: random.Random, entities: list[Entity]) -> list[tuple[str, str, list[str], dict[str, Any]]]:
    """(relation, question, answers, metadata) for every fact the corpus can answer."""
    by_name = {e.name: e for e in entities}
    out = []

    def ask(relation: str, e: Entity, answer: Any, bridge: Entity | None = None) -> None:
        hops, templates = _QUESTIONS[relation]
        gold = [e.doc_id] + ([bridge.doc_id] if bridge else [])
        meta = {"hops": hops, "relation": relation, "subject": e.name,
                "bridge": bridge.name if bridge else None, "gold_doc_ids": gold}
        out.append((relation, rng.choice(templates).format(s=e.name), [str(answer)], meta))

    for e in entities:
        a = e.attrs
        if e.kind == "city":
            ask("city.country", e, a["country"])
        elif e.kind == "person":
            city = by_name[a["birth_city"]]
            ask("person.birth_city", e, city.name)
            ask("person.birth_year", e, a["birth_year"])
            ask("person.birth_city.country", e, city.attrs["country"], city)
        elif e.kind == "org":
            founder, hq = by_name[a["founder"]], by_name[a["headquarters"]]
            ask("org.founder", e, founder.name)
            ask("org.founding_year", e, a["founding_year"])
            ask("org.headquarters", e, hq.name)
            ask("org.founder.birth_city", e, founder.attrs["birth_city"], founder)
            ask("org.founder.birth_year", e, founder.attrs["birth_year"], founder)
            ask("org.headquarters.country", e, hq.attrs["country"], hq)
        else:
            inventor = by_name[a["inventor"]]
            ask("invention.inventor", e, inventor.name)
            ask("invention.year", e, a["year"])
            ask("invention.inventor.birth_city", e, inventor.attrs["birth_city"], inventor)
            ask("invention.inventor.birth_year", e, inventor.attrs["birth_year"], inventor)
    return out


def _split(rng: random.Random, questions: list, test_fraction: float) -> tuple[list[QAExample], list[QAExample]]:
    """Split by (subject, relation), stratified by relation, so no fact is asked in both splits."""
    groups: dict[tuple[str, str], list] = {}
    for q in questions:
        groups.setdefault((q[3]["subject"], q[0]), []).append(q)
    by_relation: dict[str, list[tuple[str, str]]] = {}
    for key in groups:
        by_relation.setdefault(key[1], []).append(key)
    train_q, test_q = [], []
    for relation in sorted(by_relation):
        keys = by_relation[relation]
        rng.shuffle(keys)
        n_test = min(len(keys) - 1, max(1, round(test_fraction * len(keys)))) if len(keys) > 1 else 0
        for i, key in enumerate(keys):
            (test_q if i < n_test else train_q).extend(groups[key])
    rng.shuffle(train_q)
    rng.shuffle(test_q)

    def examples(split: str, qs: list) -> list[QAExample]:
        return [QAExample(f"{split}-{i}", q, answers, source="world", metadata=meta)
                for i, (_, q, answers, meta) in enumerate(qs)]

    return examples("train", train_q), examples("test", test_q)


def world_stats(world: World) -> dict[str, Any]:
    questions = world.train + world.test
    return {
        "seed": world.seed,
        "entities": len(world.entities),
        "documents": len(world.corpus),
        "kinds": {k: sum(e.kind == k for e in world.entities) for k in KINDS},
        "hops": {str(h): n for h, n in sorted(Counter(q.metadata["hops"] for q in questions).items())},
        "questions": {"train": len(world.train), "test": len(world.test)},
        "relations": dict(sorted(Counter(q.metadata["relation"] for q in questions).items())),
    }


def write_world(world: World, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {name: out / f"{name}.jsonl" for name in ("corpus", "train", "test")}
    paths["world"] = out / "world.json"
    write_jsonl(paths["corpus"], world.corpus)
    write_jsonl(paths["train"], world.train)
    write_jsonl(paths["test"], world.test)
    atomic_write_text(paths["world"], json.dumps(world_stats(world), indent=2) + "\n")
    return paths
