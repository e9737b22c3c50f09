import json
import re

import pytest

from zerosearch.engines.base import NOISY, USEFUL
from zerosearch.engines.bm25 import BM25Engine
from zerosearch.engines.simulated import SimulatedEngine, parse_documents
from zerosearch.llm.base import Generation, TextGenerator
from zerosearch.simtune.check import check_simulator, report_markdown
from zerosearch.simtune.collect import collect
from zerosearch.simtune.label import label_samples, sft_record
from zerosearch.simtune.samples import SearchSample, read_samples, split_by_question


def _sample(i, docs, nxt, correct=True, needed=None, golds=("Paris",)):
    d = lambda texts: [{"id": str(n), "title": f"T{n}", "text": t, "contains_answer": False} for n, t in enumerate(texts)]  # noqa: E731
    return SearchSample(id=f"q{i}-s0", question_id=f"q{i}", question=f"Question {i}?", golden_answers=list(golds),
                        query=f"query {i}", hop=0, needed=list(needed or golds), documents=d(docs),
                        next_documents=d(nxt), trajectory_correct=correct)


HAND_MADE = [
    _sample(0, ["Paris is big", "x", "y"], ["a", "b", "c"], correct=True),
    _sample(1, ["nothing", "here", "z"], ["Paris again", "b", "c"], correct=False),
    _sample(2, ["the bridge Ann", "x", "y"], ["a", "b", "c"], correct=True, needed=["Ann"]),
]


def test_labelling_rules_on_hand_made_searches():
    labels = lambda rule: [(x.sample_id, x.origin, x.label) for x in label_samples(HAND_MADE, rule, k=3, balance=False)[0]]  # noqa: E731
    assert labels("contains") == [
        ("q0-s0", "top", USEFUL), ("q0-s0", "next", NOISY), ("q1-s0", "top", NOISY), ("q1-s0", "next", USEFUL),
        ("q2-s0", "top", NOISY), ("q2-s0", "next", NOISY)]
    assert labels("trajectory") == [
        ("q0-s0", "top", USEFUL), ("q0-s0", "next", NOISY), ("q1-s0", "top", NOISY), ("q1-s0", "next", NOISY),
        ("q2-s0", "top", USEFUL), ("q2-s0", "next", NOISY)]
    # the hop rule asks for what the search was after: the bridge "Ann" for q2
    assert [lab for _, _, lab in labels("hop")] == [USEFUL, NOISY, NOISY, USEFUL, USEFUL, NOISY]
    balanced, counts = label_samples(HAND_MADE, "contains", k=3)
    assert counts["useful"] == 2 and counts["noisy"] == 4 and counts["kept_useful"] == counts["kept_noisy"] == 2
    with pytest.raises(ValueError, match="judge"):
        label_samples(HAND_MADE, "judge", k=3)
    with pytest.raises(ValueError, match="unknown"):
        label_samples(HAND_MADE, "vibes", k=3)


def test_judge_rule_asks_the_judge_per_set():
    class Judge(TextGenerator):
        def _generate(self, prompts, options):
            return [Generation("Yes." if "Paris" in p[-1]["content"] else "No") for p in prompts]

    out, counts = label_samples(HAND_MADE, "judge", k=3, judge=Judge(), balance=False)
    assert [x.label for x in out][:4] == [USEFUL, NOISY, NOISY, USEFUL]


def test_sft_record_is_chat_messages_with_k_documents():
    x = label_samples(HAND_MADE, "contains", k=3, balance=False)[0][0]
    rec = sft_record(x, words=30)
    user, assistant = rec["messages"]
    assert user["role"] == "user" and assistant["role"] == "assistant"
    assert 'answer the question: "Question 0?" whose answer is Paris' in user["content"]
    assert user["content"].endswith("Query: query 0\nUseful Output:\n")  # the official text ends with a newline
    assert assistant["content"].splitlines()[0] == "Doc 1: (Title: T0) Paris is big"
    docs, repaired = parse_documents(assistant["content"], 3)
    assert repaired == 0 and docs[0] == ("T0", "Paris is big")
    json.dumps(rec)


def test_collect_with_the_plan_is_resumable(world, tmp_path):
    engine = BM25Engine(world.corpus)
    path = tmp_path / "s.jsonl"
    first = collect(world.train[:10], engine, path, topk=3)
    again = collect(world.train[:20], engine, path, topk=3)
    assert again["skipped_done"] == 10 and again["questions"] == 10
    rows = read_samples(path)
    assert len({r.question_id for r in rows}) == 20
    assert first["searches"] + again["searches"] == len(rows)
    two_hop = [r for r in rows if r.hop == 1]
    assert two_hop and all(1 <= len(r.documents) <= 3 and len(r.next_documents) <= 3 for r in rows)
    # a two-hop first search is after the bridge, not the answer
    first_hops = [r for r in rows if r.hop == 0 and any(x.hop == 1 and x.question_id == r.question_id for x in rows)]
    assert all(r.needed != r.golden_answers for r in first_hops)
    train, held = split_by_question(rows, 0.25)
    assert not {r.question_id for r in train} & {r.question_id for r in held}
    with pytest.raises(ValueError, match="real engine"):
        collect(world.train[:2], SimulatedEngine(TemplateGenerator()), tmp_path / "x.jsonl")


class TemplateGenerator(TextGenerator):
    """A rule-based 'simulator': useful documents state the answer, noisy ones never do."""

    name = "template"

    def _generate(self, prompts, options):
        out = []
        for p in prompts:
            text = p[-1]["content"]
            told = re.search(r"whose answer is (.*)\.\n", text)  # not told: it knows nothing
            query = text.split("Query: ")[1].split("\n")[0]
            if "Useful Output" in text and told:
                answer = told.group(1)
                docs = [f"Doc {i}: (Title: {query}) The record shows {answer} for {query} in the archive." for i in (1, 2, 3)]
            else:
                docs = [f"Doc {i}: (Title: {query}) Some related story about {query} without the fact." for i in (1, 2, 3)]
            out.append(Generation("\n".join(docs), n_tokens=30))
        return out


def test_check_on_a_template_simulator_gives_the_expected_rates(world, tmp_path):
    engine = BM25Engine(world.corpus)
    collect(world.train[:12], engine, tmp_path / "s.jsonl", topk=3)
    rows = [r for r in read_samples(tmp_path / "s.jsonl") if r.needed == r.golden_answers]
    # the template writes the answer whenever it is told it; the query guard is tested on its own
    result = check_simulator(SimulatedEngine(TemplateGenerator(), style="sft", topk=3, query_guard=False), rows, k=3)
    rep = result["report"]
    assert rep["format_valid"] == 100.0
    assert rep["useful_contains_answer"]["contains_target"] == 100.0
    assert rep["noisy_contains_answer"]["contains_target"] == 0.0
    assert rep["useful_contains_answer"]["n"] == len(rows)
    assert 0.0 <= rep["fidelity_text_f1"] <= 100.0 and rep["tokens_per_query"] == 30
    assert "| format valid (%) | 100.0 |" in report_markdown({"template": rep})
    # told the answer for any query, it also answers the content-free probe: the gap the query guard closes
    assert rep["content_free_query_answer"] == {"n": len(rows), "contains_target": 100.0}
    guarded = check_simulator(SimulatedEngine(TemplateGenerator(), style="sft", topk=3), rows, k=3)["report"]
    assert guarded["content_free_query_answer"]["contains_target"] == 0.0
    first_hops = [r for r in read_samples(tmp_path / "s.jsonl") if r.needed != r.golden_answers]
    both = check_simulator(SimulatedEngine(TemplateGenerator(), style="sft", topk=3, query_guard=False),
                           rows + first_hops, k=3)["report"]
    assert both["useful_contains_bridge"]["n"] == len(first_hops) > 0


def test_a_tiny_simulator_tuned_for_a_few_steps_lowers_its_loss(world, tmp_path):
    from zerosearch.llm.tiny import build_tiny_model, build_tiny_tokenizer
    from zerosearch.simtune.tune import tune_simulator
    from zerosearch.train.sft import SFTConfig

    engine = BM25Engine(world.corpus)
    collect(world.train[:16], engine, tmp_path / "s.jsonl", topk=2)
    labelled, _ = label_samples(read_samples(tmp_path / "s.jsonl"), "contains", k=2)
    records = [sft_record(x, words=20) for x in labelled]
    tok = build_tiny_tokenizer([r["contents"] for r in world.corpus])
    model = build_tiny_model(tok)
    summary = tune_simulator("tiny", records, tmp_path / "sim", sft=SFTConfig(steps=12, batch_size=4, learning_rate=3e-3,
                             warmup_ratio=0.0), model=model, tokenizer=tok)
    losses = [x["loss"] for x in summary["losses"]]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    assert (tmp_path / "sim" / "model" / "config.json").exists()


def test_pretraining_examples_are_whole_articles_in_the_simulators_document_form(world, tiny_tokenizer):
    from zerosearch.simtune.pretrain import article_text, corpus_examples

    assert article_text('"Tessosk"\nThe city of Tessosk lies in Orvorra.') == "(Title: Tessosk) The city of Tessosk lies in Orvorra."
    corpus = world.corpus[:5]
    ex = corpus_examples(tiny_tokenizer, corpus, steps=3, batch_size=4, seed=0)
    assert len(ex) == 12  # 2.4 epochs of 5 articles
    assert all(sum(e.loss_mask) == len(e.input_ids) and e.input_ids[-1] == tiny_tokenizer.eos_token_id for e in ex)
    first_epoch = {tuple(e.input_ids) for e in ex[:5]}
    assert len(first_epoch) == 5  # every article once per epoch
    assert [e.input_ids for e in corpus_examples(tiny_tokenizer, corpus, steps=3, batch_size=4, seed=0)] == \
        [e.input_ids for e in ex]
    with pytest.raises(ValueError, match="contents"):
        corpus_examples(tiny_tokenizer, [{"id": "1", "text": "x"}], steps=1, batch_size=1)


def test_pretraining_a_tiny_simulator_on_the_corpus_lowers_its_loss(world, tmp_path):
    from zerosearch.llm.tiny import build_tiny_model, build_tiny_tokenizer
    from zerosearch.simtune.pretrain import pretrain_simulator
    from zerosearch.train.sft import SFTConfig

    tok = build_tiny_tokenizer([r["contents"] for r in world.corpus])
    summary = pretrain_simulator("tiny", world.corpus[:16], tmp_path, model=build_tiny_model(tok), tokenizer=tok,
                                 sft=SFTConfig(steps=12, batch_size=4, learning_rate=3e-3, warmup_ratio=0.0))
    losses = [x["loss"] for x in summary["losses"]]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    assert summary["epochs"] == 3.0 and (tmp_path / "model" / "config.json").exists()
    assert json.loads((tmp_path / "pretrain.json").read_text())["articles"] == 16
