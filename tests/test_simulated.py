from collections import Counter

import pytest

from zerosearch.engines.base import NOISY, USEFUL, SearchRequest
from zerosearch.engines.simulated import SimulatedEngine, parse_documents, sft_prompt, sft_target
from zerosearch.llm.base import Generation, TextGenerator


class EchoGenerator(TextGenerator):
    """Writes documents that quote the prompt it got, so a test can see which question reached it."""

    name = "echo"

    def __init__(self, reply=None) -> None:
        super().__init__()
        self.prompts = []
        self.reply = reply

    def _generate(self, prompts, options):
        self.prompts.extend(p[-1]["content"] for p in prompts)
        self.banned = options.banned
        if self.reply is not None:
            return [Generation(self.reply) if self.reply != "FAIL" else Generation("", error="server down") for _ in prompts]
        out = []
        for p in prompts:
            q = p[-1]["content"].split('question: "')[1].split('"')[0] if 'question: "' in p[-1]["content"] else "none"
            out.append(Generation("Doc 1: (Title: A) about " + q + "\nDoc 2: (Title: B) more\nDoc 3: (Title: C) last"))
        return out


def test_parse_at_most_k_clean_documents_and_count_repairs():
    docs, rep = parse_documents("Doc 1: (Title: X) one.\nDoc 2: two words. More.\nDoc 3: three.\nDoc 4: four.", 3)
    # untitled documents get a title from their first words, never `Title: ""`; each such repair counts
    assert docs == [("X", "one."), ("two words", "two words. More."), ("three", "three.")] and rep == 2
    # fewer documents than asked: fewer come back, no padding presented as a document; the missing ones count
    docs, rep = parse_documents("Doc 1: (Title: Only) only one", 3)
    assert docs == [("Only", "only one")] and rep == 2
    docs, rep = parse_documents("Doc 1: (Title: Bare)\nDoc 2: (Title: Ok) fine", 2)
    assert docs == [("Ok", "fine")] and rep == 1
    docs, rep = parse_documents("No markers. Just sentences. Three of them. And four.", 2)
    assert len(docs) == 2 and rep == 2 and all(t for t, _ in docs)
    assert parse_documents("", 3) == ([], 3)


def test_reply_is_cut_at_the_next_document_as_the_original():
    text = "Doc 1: (Title: A) a.\n\nDoc 2: (Title: B) b.\n\nDoc 3: (Title: C) c.\nDoc 4: (Title: D) d."
    docs, rep = parse_documents(text, 2)
    assert docs == [("A", "a."), ("B", "b.")] and rep == 0


# The prompt the original trainer sends a fine-tuned simulator (PAPER §1.3, `search_simulate_sft`), byte for
# byte: five documents whatever top-k is, and a newline after the last line.
OFFICIAL_USEFUL = (
    "You are the Google search engine.\n"
    "Given a query, you need to generate five useful documents for the query.\n"
    "\n"
    'The user is trying to answer the question: "who wrote hamlet" whose answer is William Shakespeare.\n'
    "Each document should contain about 30 words, and these documents should contain useful information.\n"
    "\n"
    "Query: hamlet author\n"
    "Useful Output:\n"
)


def test_sft_prompt_is_the_official_text_byte_for_byte():
    for k in (1, 3, 5):
        assert sft_prompt("hamlet author", "useful", "who wrote hamlet", "William Shakespeare", k, 30) == OFFICIAL_USEFUL
    official_noisy = OFFICIAL_USEFUL.replace("useful", "noisy").replace("Useful Output", "Noisy Output")
    assert sft_prompt("hamlet author", "noisy", "who wrote hamlet", "William Shakespeare", 3, 30) == official_noisy
    assert "generate eight useful documents" in sft_prompt("q", "useful", "Who?", "Ann", 8, 30)
    assert sft_target([("T", "x"), ("", "y")]) == "Doc 1: (Title: T) x\nDoc 2: y"


def test_engine_sends_the_official_prompt_and_stops_at_the_next_document():
    gen = EchoGenerator()
    calls = []
    real_generate = gen.generate
    gen.generate = lambda prompts, **kw: calls.append(kw) or real_generate(prompts, **kw)
    sim = SimulatedEngine(gen, style="sft", topk=2, query_guard=False)
    sim.search([SearchRequest("hamlet author", "who wrote hamlet", ["William Shakespeare"], USEFUL)])
    assert gen.prompts == [OFFICIAL_USEFUL]
    assert calls[0]["stop"] == ["Doc 3"]


def test_every_request_gets_its_own_question_and_forced_kind():
    gen = EchoGenerator()
    sim = SimulatedEngine(gen, style="sft", topk=3)
    reqs = [SearchRequest(f"query {i}", question=f"question {i}", golden_answers=[f"ans {i}"],
                        noise=USEFUL if i % 2 else NOISY) for i in range(5)]
    results = sim.search(reqs)
    for i, (r, prompt) in enumerate(zip(results, gen.prompts)):
        assert f'"question {i}" whose answer is ans {i}' in prompt
        assert r.kind == (USEFUL if i % 2 else NOISY)
        assert f"{r.kind} documents" in prompt
        assert r.engine == "simulated" and r.real is False and len(r.documents) == 3
        assert r.documents[0].text == f"about question {i}"


def test_noise_probability_is_drawn_per_call():
    sim = SimulatedEngine(EchoGenerator(), topk=3, seed=1)
    kinds = Counter(r.kind for r in sim.search([SearchRequest("q", "Q", ["a"], noise=0.25) for _ in range(400)]))
    assert 70 <= kinds[NOISY] <= 130
    assert {r.kind for r in sim.search([SearchRequest("q", "Q", ["a"], noise=0.0)] * 20)} == {USEFUL}


def test_reseeding_restarts_the_noise_draws():
    """An RL arm with a seed of its own (the pipeline's demo.extra_seeds) draws as a new engine of that seed."""
    def kinds(engine):
        return [r.kind for r in engine.search([SearchRequest("q", "Q", ["a"], noise=0.5) for _ in range(40)])]

    used = SimulatedEngine(EchoGenerator(), topk=1, seed=0)
    first = kinds(used)
    used.reseed(1)
    assert kinds(used) == kinds(SimulatedEngine(EchoGenerator(), topk=1, seed=1)) != first


def test_prompt_style_noisy_prompt_omits_the_answer_and_failures_are_reported():
    gen = EchoGenerator()
    sim = SimulatedEngine(gen, style="prompt", topk=2)
    sim.search([SearchRequest("q", "Who?", ["Ann"], noise=NOISY), SearchRequest("q", "Who?", ["Ann"], noise=USEFUL)])
    assert "Ann" not in gen.prompts[0] and "Ann" in gen.prompts[1]
    broken = SimulatedEngine(EchoGenerator(reply="FAIL"), topk=2)
    (r,) = broken.search([SearchRequest("q", "Who?", ["Ann"])])
    assert r.error == "server down" and r.documents == []


@pytest.mark.parametrize("kw", [{"style": "fancy"}, {"noise": "maybe"}, {"noise": 1.5}, {"noise": True}])
def test_bad_settings_raise(kw):
    with pytest.raises(ValueError):
        SimulatedEngine(EchoGenerator(), **kw)


def test_answer_guard_bans_the_gold_answers_from_noisy_documents_only():
    gen = EchoGenerator()
    gen.enforces_bans = True
    sim = SimulatedEngine(gen, topk=3)
    reqs = [SearchRequest("q0", "question 0", ["Ada", "Ada Quill"], noise=NOISY),
            SearchRequest("q1", "question 1", ["1859"], noise=USEFUL)]
    res = sim.search(reqs)
    assert gen.banned == [["Ada", "Ada Quill"], []]
    assert [r.meta["answer_guard"] for r in res] == [True, False]
    sim.search([reqs[1]])
    assert gen.banned is None  # nothing noisy: nothing to ban
    SimulatedEngine(gen, topk=3, answer_guard=False).search(reqs)
    assert gen.banned is None


def test_the_local_backend_never_writes_a_banned_string(tiny_model, tiny_tokenizer):
    import re

    from zerosearch.llm.local import TransformersGenerator

    gen = TransformersGenerator(tiny_model, tiny_tokenizer)
    prompts = [[{"role": "user", "content": f"Query: the city founded in year {i}"}] for i in range(6)]
    free = gen.generate(prompts, max_new_tokens=24, temperature=1.0, seed=0)
    # ban the longest word each row wrote freely; with the same seed it would come back
    bans = [[max(re.findall(r"[A-Za-z]+", g.text), key=len)] for g in free]
    guarded = gen.generate(prompts, max_new_tokens=24, temperature=1.0, seed=0, banned=bans)
    for g, (word,) in zip(guarded, bans):
        assert word.lower() not in re.findall(r"[a-z]+", g.text.lower())
    again = gen.generate(prompts, max_new_tokens=24, temperature=1.0, seed=0, banned=[[]] * 6)
    assert [g.text for g in again] == [g.text for g in free]  # an empty ban changes nothing


def test_query_guard_tells_the_simulator_the_answer_only_for_a_query_about_the_question():
    from zerosearch.engines.simulated import query_names_the_subject

    q = "Where was Nimion Corviss born?"
    assert query_names_the_subject("Nimion Corviss birthplace", q) and query_names_the_subject("corviss", q)
    assert not query_names_the_subject("birthplace", q) and not query_names_the_subject("search", q)
    assert query_names_the_subject("hello song", "who sang the song hello")  # no names: any content word
    assert not query_names_the_subject("the who", "who sang the song hello")
    assert query_names_the_subject("anything", "Who?")  # names nothing: nothing to guard
    gen = EchoGenerator()
    SimulatedEngine(gen, topk=2).search([SearchRequest("birthplace", q, ["Kelleth"], noise=USEFUL),
                                         SearchRequest("Nimion Corviss", q, ["Kelleth"], noise=USEFUL)])
    assert "Kelleth" not in gen.prompts[0] and "Kelleth" in gen.prompts[1]
    gen = EchoGenerator()
    SimulatedEngine(gen, topk=2, query_guard=False).search([SearchRequest("birthplace", q, ["Kelleth"], noise=USEFUL)])
    assert "Kelleth" in gen.prompts[0]  # ZeroSearch's behaviour


class CountingGenerator(EchoGenerator):
    """EchoGenerator whose rows differ (a counter in each reply) and report their tokens."""

    enforces_bans = True

    def _generate(self, prompts, options):
        start = len(self.prompts)
        gens = super()._generate(prompts, options)
        return [Generation(f"{g.text} #{start + i}", n_tokens=7) for i, g in enumerate(gens)]


def test_shared_duplicates_are_generated_once_and_get_the_same_documents():
    from zerosearch.engines.ledger import SearchCost

    q = "Where was Nimion Corviss born?"
    reqs = [SearchRequest("Nimion Corviss", q, ["Kelleth"], noise=USEFUL),
            SearchRequest("Nimion Corviss", q, ["Kelleth"], noise=USEFUL),  # the same search: shared
            SearchRequest("Nimion Corviss", q, ["Kelleth"], noise=NOISY),  # another kind: its own
            SearchRequest("Nimion Corviss", "Who is Nimion Corviss?", ["a weaver"], noise=USEFUL),  # another question
            # the same prompt (no context: the query names no subject) but other answers to ban: its own
            SearchRequest("birthplace", q, ["Kelleth"], noise=NOISY),
            SearchRequest("birthplace", "Where was Ada Quill born?", ["Morrow"], noise=NOISY),
            SearchRequest("Nimion Corviss", q, ["Kelleth"], noise=USEFUL)]  # shared, not adjacent
    gen = CountingGenerator()
    res = SimulatedEngine(gen, topk=2, share_duplicates=True).search(reqs)
    assert len(gen.prompts) == 5 and gen.banned == [[], ["Kelleth"], [], ["Kelleth"], ["Morrow"]]
    assert [r.meta["shared"] for r in res] == [False, True, False, False, False, False, True]
    assert res[0].documents == res[1].documents == res[6].documents
    assert len({r.meta["raw"] for r in res}) == 5 and all(r.documents for r in res)
    assert [r.kind for r in res] == [USEFUL, USEFUL, NOISY, USEFUL, NOISY, NOISY, USEFUL]
    ledger = SearchCost().record(res)
    assert ledger.simulated_searches == 7 and ledger.simulated_tokens == 5 * 7  # each token counted once
    # off (the default): every search is its own sample, as in ZeroSearch
    gen = CountingGenerator()
    res = SimulatedEngine(gen, topk=2).search(reqs)
    assert len(gen.prompts) == 7 and res[0].documents != res[1].documents
    assert not any(r.meta["shared"] for r in res)


def test_a_failed_generation_fails_every_search_that_shares_it():
    sim = SimulatedEngine(EchoGenerator(reply="FAIL"), topk=2, share_duplicates=True)
    res = sim.search([SearchRequest("q", "Who?", ["Ann"], noise=USEFUL)] * 3)
    assert [r.error for r in res] == ["server down"] * 3
