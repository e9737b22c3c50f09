import json
import os
import re
import subprocess
import sys
from functools import lru_cache

import pytest

from zerosearch.data.world import KINDS, MIN_ENTITIES, World, build_world, write_world
from zerosearch.engines.base import Document, SearchRequest
from zerosearch.engines.bm25 import BM25Engine
from zerosearch.io import read_jsonl

YEAR_ATTRS = ("founding_year", "birth_year", "year")


@lru_cache(maxsize=None)
def world(seed: int = 0, n: int = 300) -> World:
    return build_world(seed=seed, n_entities=n)


def questions(w: World):
    return w.train + w.test


def text_of(w: World, doc_id: str) -> str:
    return Document.from_contents(doc_id, w.corpus[int(doc_id)]["contents"]).text


def resolve(w: World, subject: str, relation: str) -> str:
    """Follow a relation path ("org.founder.birth_year") through the entity attributes."""
    by_name = w.by_name()
    entity = by_name[subject]
    assert relation.split(".")[0] == entity.kind
    value = None
    for attr in relation.split(".")[1:]:
        value = entity.attrs[attr]
        entity = by_name.get(value) if isinstance(value, str) else None
    return str(value)


def test_counts_per_kind():
    w = world(7)
    counts = {k: sum(e.kind == k for e in w.entities) for k in KINDS}
    assert counts == {"city": 45, "person": 135, "org": 75, "invention": 45}
    small = build_world(3, MIN_ENTITIES)
    assert len(small.entities) == MIN_ENTITIES
    assert all(sum(e.kind == k for e in small.entities) >= 3 for k in KINDS)


def test_names_and_ids_unique():
    for seed, n in ((0, 300), (7, 60), (5, 1000)):
        w = build_world(seed, n) if n == 1000 else world(seed, n)
        names = [e.name.lower() for e in w.entities]
        assert len(set(names)) == len(names)
        assert len({e.id for e in w.entities}) == len(w.entities)
        assert [r["id"] for r in w.corpus] == [str(i) for i in range(len(w.corpus))]
        assert [e.doc_id for e in w.entities] == [r["id"] for r in w.corpus]
        for e, row in zip(w.entities, w.corpus):
            assert row["contents"].startswith(f'"{e.name}"\n')
            assert all(re.fullmatch(r"[A-Z][a-z]+", part) for part in e.name.split()[:2 if e.kind == "person" else 1])
        ids = [q.id for q in questions(w)]
        assert len(set(ids)) == len(ids)
        assert [q.id for q in w.train] == [f"train-{i}" for i in range(len(w.train))]
        assert [q.id for q in w.test] == [f"test-{i}" for i in range(len(w.test))]


def test_people_include_namesakes_and_near_identical_names():
    people = [e for e in world(0).entities if e.kind == "person"]
    pairs = [(a, b) for i, a in enumerate(people) for b in people[i + 1:]]
    shared_surname = [p for p in pairs if p[0].attrs["last"] == p[1].attrs["last"]]
    stem = lambda word: word.rstrip("bcdfghjklmnpqrstvwxz")  # noqa: E731
    near = [(a, b) for a, b in pairs if a.attrs["first"] == b.attrs["first"]
            and a.attrs["last"] != b.attrs["last"] and stem(a.attrs["last"]) == stem(b.attrs["last"])]
    assert len(shared_surname) >= 10 and len(near) >= 5


def test_articles_are_short_and_name_related_entities():
    w = world(0)
    for e in w.entities:
        text = text_of(w, e.doc_id)
        assert 15 <= len(text.split()) <= 50, text
        for attr in ("founder", "headquarters", "inventor", "birth_city", "country"):
            if attr in e.attrs:
                assert e.attrs[attr] in text


def test_articles_state_only_true_years_and_countries():
    # Each sentence's years must belong to the entities it names (the article's subject when it says "It" or
    # names none), and a country may only appear next to a city that lies in it.
    for w in (world(0), world(7, 60)):
        by_name = w.by_name()
        names = sorted(by_name, key=len, reverse=True)
        countries = {e.attrs["country"] for e in w.entities if e.kind == "city"}
        for e in w.entities:
            for sentence in re.split(r"(?<=\.) ", text_of(w, e.doc_id)):
                named = [by_name[n] for n in names if re.search(rf"\b{re.escape(n)}\b", sentence)]
                if not named or sentence.startswith("It "):
                    named.append(e)
                allowed = {str(x.attrs[a]) for x in named for a in YEAR_ATTRS if a in x.attrs}
                assert set(re.findall(r"\b\d{4}\b", sentence)) <= allowed, sentence
                for country in countries:
                    if re.search(rf"\b{country}\b", sentence):
                        assert any(x.attrs.get("country") == country for x in named), sentence


def test_questions_are_answerable_from_their_gold_articles():
    for w in (world(0), world(7), world(0, 60)):
        for q in questions(w):
            m = q.metadata
            gold = m["gold_doc_ids"]
            assert q.source == "world"
            assert len(gold) == m["hops"] and m["hops"] in (1, 2)
            assert q.golden_answers == [resolve(w, m["subject"], m["relation"])]
            assert m["subject"] in q.question
            assert w.corpus[int(gold[0])]["contents"].startswith(f'"{m["subject"]}"')
            assert q.golden_answers[0] in text_of(w, gold[-1]), (q, text_of(w, gold[-1]))
            if m["hops"] == 2:
                assert m["bridge"] and m["bridge"] in text_of(w, gold[0])
                assert w.corpus[int(gold[1])]["contents"].startswith(f'"{m["bridge"]}"')
            else:
                assert m["bridge"] is None


def test_hops_ratio_and_relations():
    for seed, n in ((0, 300), (7, 300), (1, MIN_ENTITIES), (2, 60), (3, 1000)):
        w = world(seed, n)
        qs = questions(w)
        ratio = sum(q.metadata["hops"] == 2 for q in qs) / len(qs)
        assert 0.35 <= ratio <= 0.45, (seed, n, ratio)
    relations = {q.metadata["relation"] for q in questions(world(0))}
    assert len(relations) == 14
    assert {q.metadata["relation"] for q in world(0).test} == relations


def test_split_keeps_facts_apart():
    for tf in (0.2, 0.5, 0.05):
        w = build_world(4, 100, test_fraction=tf)
        key = lambda q: (q.metadata["subject"], q.metadata["relation"])  # noqa: E731
        assert not {key(q) for q in w.train} & {key(q) for q in w.test}
        total = len(w.train) + len(w.test)
        assert abs(len(w.test) / total - tf) < 0.03


@pytest.mark.parametrize("seed,n", [(0, 300), (7, 300), (42, 300), (0, 60), (7, 60), (42, 60)])
def test_bm25_finds_the_subject_of_single_hop_questions(seed, n):
    w = world(seed, n)
    engine = BM25Engine(w.corpus)
    qs = [q for q in w.test if q.metadata["hops"] == 1]
    results = engine.search([SearchRequest(q.question) for q in qs], topk=3)
    hits = sum(q.metadata["gold_doc_ids"][0] in [d.id for d in r.documents] for q, r in zip(qs, results))
    rate = hits / len(qs)
    print(f"seed={seed} n_entities={n}: subject article in BM25 top 3 for {hits}/{len(qs)} = {rate:.3f}")
    assert rate >= 0.9


def read_all(paths) -> dict[str, bytes]:
    return {name: paths[name].read_bytes() for name in sorted(paths)}


def test_write_world_files(tmp_path):
    w = world(0, 60)
    paths = write_world(w, tmp_path / "out")
    assert sorted(paths) == ["corpus", "test", "train", "world"]
    assert read_jsonl(paths["corpus"]) == w.corpus
    assert [r["id"] for r in read_jsonl(paths["test"])] == [q.id for q in w.test]
    assert read_jsonl(paths["train"])[0]["metadata"] == w.train[0].metadata
    meta = json.loads(paths["world"].read_text())
    assert meta["seed"] == 0
    assert meta["kinds"] == {k: sum(e.kind == k for e in w.entities) for k in KINDS}
    assert sum(meta["hops"].values()) == len(w.train) + len(w.test)


def test_same_seed_same_bytes_across_processes(tmp_path):
    here = read_all(write_world(build_world(11, 80), tmp_path / "here"))
    code = (
        "import sys; from zerosearch.data.world import build_world, write_world; "
        "write_world(build_world(11, 80), sys.argv[1])"
    )
    for hash_seed in ("1", "987"):
        out = tmp_path / f"sub{hash_seed}"
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env)
        there = {name: (out / (f"{name}.jsonl" if name != "world" else "world.json")).read_bytes() for name in here}
        assert there == here


def test_different_seed_different_world():
    a, b = world(0), world(7)
    assert [e.name for e in a.entities] != [e.name for e in b.entities]
    assert a.corpus != b.corpus
    assert [q.question for q in a.test] != [q.question for q in b.test]


@pytest.mark.parametrize("kwargs,message", [
    ({"n_entities": 5}, "n_entities must be an integer between"),
    ({"n_entities": MIN_ENTITIES - 1}, "n_entities must be an integer between"),
    ({"n_entities": 10**6}, "n_entities must be an integer between"),
    ({"n_entities": 300.0}, "n_entities must be an integer"),
    ({"test_fraction": 0}, "test_fraction must be a number strictly between 0 and 1"),
    ({"test_fraction": 1.0}, "test_fraction must be a number strictly between 0 and 1"),
    ({"test_fraction": -0.1}, "test_fraction"),
    ({"test_fraction": 1.5}, "test_fraction"),
    ({"seed": "0"}, "seed must be an integer"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_world(**kwargs)
