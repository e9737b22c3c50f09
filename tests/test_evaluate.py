import pytest

import json

from zerosearch.settings import RolloutConfig
from zerosearch.data.qa import QAExample
from zerosearch.evaluate import run_eval, write_report

from .conftest import RecordingEngine
from .scripted import ScriptedLM


def test_every_question_is_scored_with_per_dataset_counts(tiny_tokenizer, tmp_path):
    # 37 questions in batches of 8: the last batch is partial and must not be dropped (bug B5)
    exs = [QAExample(f"{i}", f"question item{i}z", [f"a{i}"], source="nq" if i < 30 else "bamboogle") for i in range(37)]
    scripts = {f"item{i}z": ["<search> s </search>", f"<answer> a{i if i % 2 else 'x'} </answer>"] for i in range(37)}
    model = ScriptedLM(tiny_tokenizer, scripts)
    report, rows = run_eval("agent", model, tiny_tokenizer, exs, RecordingEngine(),
                            RolloutConfig(max_turns=2, max_new_tokens=16, batch_size=8), price_per_1000=10.0)
    assert report.n == len(rows) == 37
    assert report.per_dataset["nq"]["n"] == 30 and report.per_dataset["bamboogle"]["n"] == 7
    assert report.strict_em == pytest.approx(100 * 18 / 37)
    assert report.searches_per_question == 1.0 and report.real_searches == 37
    paths = write_report(report, rows, tmp_path, title="t")
    assert json.loads(paths["json"].read_text())["n"] == 37
    assert "| bamboogle | 7 |" in paths["markdown"].read_text()
    # the cost ledger: 37 real searches at $10 per 1,000
    cost = json.loads(paths["json"].read_text())["search_cost"]
    assert cost["real_searches"] == 37 and cost["simulated_searches"] == 0 and cost["real_cost_usd"] == pytest.approx(0.37)
    assert "search cost: 37 real searches ($0.37 at $10.00 / 1,000); 0 simulated" in paths["markdown"].read_text()
    assert len(paths["rows"].read_text().splitlines()) == 37


def test_baselines_answer_inside_an_opened_tag(tiny_tokenizer):
    exs = [QAExample("0", "question 0", ["paris"]), QAExample("1", "question 1", ["rome"])]
    # The prompt ends with "<answer>", so the model only writes the answer and closes the tag.
    scripts = {"question 0": [" paris </answer>"], "question 1": [" london"]}
    engine = RecordingEngine()
    for method in ("direct", "rag"):
        report, rows = run_eval(method, ScriptedLM(tiny_tokenizer, scripts), tiny_tokenizer, exs, engine,
                                RolloutConfig(max_new_tokens=8))
        assert [r["answer"] for r in rows] == ["paris", "london"]
        assert report.strict_em == 50.0
    assert report.searches_per_question == 1.0  # rag: one retrieval per question
    assert [r.query for r in engine.requests] == ["question 0?", "question 1?"]
