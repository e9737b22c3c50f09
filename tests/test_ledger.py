import pytest

from zerosearch.engines import EngineConfig
from zerosearch.engines.base import NOISY, USEFUL, SearchRequest, SearchResult
from zerosearch.engines.ledger import SERPAPI_PRICE_PER_1000, MeteredEngine, SearchCost
from zerosearch.engines.simulated import SimulatedEngine
from zerosearch.llm.base import Generation, TextGenerator
from zerosearch.train.grpo import cost_of_rows

from .conftest import RecordingEngine


def _real(n):
    return [SearchResult(f"q{i}", [], "serp", True) for i in range(n)]


def _simulated(n, tokens=75, seconds=0.5, kind=USEFUL, error=None):
    meta = {} if tokens is None else {"tokens": tokens}
    return [SearchResult(f"q{i}", [], "simulated", False, kind=kind, error=error, seconds=seconds, meta=dict(meta))
            for i in range(n)]


def test_the_default_price_is_the_papers_serpapi_figure():
    assert SERPAPI_PRICE_PER_1000 == pytest.approx(9.1671875)  # $586.7 for 64,000 searches
    assert SearchCost().record(_real(64_000)).real_cost_usd == pytest.approx(586.7)
    assert EngineConfig().price_per_1000 == SERPAPI_PRICE_PER_1000


def test_real_simulated_failed_and_cached_searches_are_counted_apart():
    cost = SearchCost(price_per_1000=10.0)
    cost.record(_real(12))
    cost.record(_simulated(400, kind=USEFUL) + _simulated(80, kind=NOISY))
    cost.record(_simulated(3, tokens=None, seconds=2.0))  # a remote simulator's results carry no token count
    cost.record(_simulated(2, tokens=10, seconds=1.0, error="server down"))  # failed, but it took time
    cost.record([SearchResult("q", [], "serp", False, meta={"cached": True})])  # a cache hit costs nothing
    cost.record([SearchResult("q", [], "remote", False, error="timeout")])
    assert (cost.real_searches, cost.simulated_searches, cost.failed_searches, cost.cached_searches) == (12, 483, 3, 1)
    assert cost.simulated_tokens == 480 * 75 + 2 * 10
    assert cost.simulated_seconds == pytest.approx(480 * 0.5 + 3 * 2.0 + 2 * 1.0)
    assert cost.real_cost_usd == pytest.approx(0.12)
    d = cost.to_dict()
    assert d["real_cost_usd"] == pytest.approx(0.12) and d["price_per_1000"] == 10.0
    assert d["summary"] == cost.summary() == (
        "12 real searches ($0.12 at $10.00 / 1,000); 483 simulated (36,020 tokens, 248 s); 1 cached; 3 failed")


def test_summary_line_reads_like_the_papers_case():
    cost = SearchCost().record(_real(12) + _simulated(480, tokens=75, seconds=95 / 480))
    assert cost.summary() == "12 real searches ($0.11 at $9.17 / 1,000); 480 simulated (36,000 tokens, 95 s)"
    assert cost.brief() == "$0.11 (12 real); 480 simulated (36,000 tokens, 95 s)"
    assert SearchCost().record(_real(1)).summary() == "1 real search ($0.01 at $9.17 / 1,000); 0 simulated"


def test_ledgers_add_subtract_and_reprice():
    a = SearchCost(price_per_1000=2.0).record(_real(500) + _simulated(10, tokens=5, seconds=1.0))
    b = SearchCost(price_per_1000=2.0).record(_real(1500) + _simulated(30, tokens=5, seconds=1.0, error="x"))
    total = a + b
    assert (total.real_searches, total.simulated_searches, total.failed_searches) == (2000, 10, 30)
    assert total.simulated_tokens == 200 and total.simulated_seconds == pytest.approx(40.0)
    assert total.real_cost_usd == pytest.approx(4.0)
    assert (total - a).to_dict() == b.to_dict()  # one step's share of a running ledger
    again = SearchCost.from_dict(total.to_dict())
    assert again == total and again is not total
    assert SearchCost.from_dict(total.to_dict(), price_per_1000=9.0).real_cost_usd == pytest.approx(18.0)
    assert SearchCost.from_dict({"real_searches": 3.0}).real_searches == 3  # counts summed from JSON floats
    with pytest.raises(ValueError, match="negative"):
        SearchCost(price_per_1000=-1.0)


def test_a_resumed_run_adds_up_the_cost_of_the_steps_it_keeps():
    rows = [{"step": 1, "real_searches": 4.0, "search_errors": 1.0, "simulated_searches": 0, "simulated_tokens": 0},
            {"step": 2, "real_searches": 0.0, "search_errors": 0.0, "simulated_searches": 6, "simulated_tokens": 90,
             "simulated_seconds": 1.5}]
    cost = cost_of_rows(rows, 1000.0)
    assert (cost.real_searches, cost.failed_searches, cost.simulated_searches, cost.simulated_tokens) == (4, 1, 6, 90)
    assert cost.simulated_seconds == pytest.approx(1.5) and cost.real_cost_usd == pytest.approx(4.0)


class _CountingGenerator(TextGenerator):
    name = "counting"

    def _generate(self, prompts, options):
        text = "Doc 1: (Title: A) one two three\nDoc 2: (Title: B) four five"
        return [Generation(text, n_tokens=17) for _ in prompts]


def test_a_metered_engine_records_every_result_and_is_otherwise_the_engine():
    gen = _CountingGenerator()
    sim = SimulatedEngine(gen, topk=2)
    meter = MeteredEngine(sim, SearchCost(price_per_1000=1.0))
    assert (meter.name, meter.real, meter.default_topk, meter.max_topk) == ("simulated", False, 2, sim.max_topk)
    assert meter.thread_safe == sim.thread_safe and meter.generator is gen and meter.style == "sft"
    assert meter.describe() == sim.describe()
    results = meter.search([SearchRequest(f"q{i}", question="who?", golden_answers=["x"]) for i in range(3)])
    assert len(results) == 3 and all(r.kind for r in results)
    assert meter.ledger.simulated_searches == 3 and meter.ledger.simulated_tokens == 51
    assert meter.ledger.simulated_seconds == pytest.approx(sum(r.seconds for r in results))
    assert meter.ledger.real_searches == 0
    real = MeteredEngine(RecordingEngine())
    real.search([SearchRequest("a"), SearchRequest("b")], topk=1)
    assert real.ledger.real_searches == 2 and real.calls and real.name == "fake" and real.real


def test_the_price_is_an_engine_setting():
    assert EngineConfig.from_dict({"kind": "bm25", "price_per_1000": 5}).price_per_1000 == 5
    with pytest.raises(ValueError, match="price_per_1000"):
        EngineConfig(price_per_1000=-0.01)


def test_the_ledger_loads_without_torch():
    import subprocess
    import sys

    code = "import sys, zerosearch.engines.ledger; print(sorted(m for m in ('torch', 'trl') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
