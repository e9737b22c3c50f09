import json

from zerosearch.demo import paired_change, run_demo


def test_paired_change_counts_flips_both_ways():
    before = {"a": 1.0, "b": 0.0, "c": 0.0, "d": 1.0}
    after = {"a": 0.0, "b": 1.0, "c": 1.0, "d": 1.0}
    assert paired_change(before, after) == {"gained": 2, "lost": 1}


def test_quick_demo_writes_the_table_with_every_method_and_the_paired_change(tmp_path):
    """The whole demo pipeline on tiny random models (its numbers mean nothing; its bookkeeping must hold)."""
    result = run_demo(tmp_path, quick=True, say=lambda m: None)
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == ["direct (no search)", "rag (one retrieval)", "warm start (tuned simulator)",
                          "RL, tuned simulator", "RL, prompt-only simulator", "RL, real engine (BM25)"]
    assert all(r["n"] == result["eval_questions"] > 0 for r in rows.values())

    def strict(slug):
        lines = (tmp_path / "eval" / slug / "predictions.jsonl").read_text().splitlines()
        return {p["id"]: p["strict_em"] for p in map(json.loads, lines)}

    warm = strict("warm-start--tuned-simulator")
    for label in ("direct (no search)", "rag (one retrieval)", "warm start (tuned simulator)"):
        assert rows[label]["vs_warm_start"] is None
    rl = strict("rl--real-engine--bm25")
    assert rows["RL, real engine (BM25)"]["vs_warm_start"] == {
        "gained": sum(rl[i] > warm[i] for i in warm), "lost": sum(rl[i] < warm[i] for i in warm)}
    assert rows["RL, tuned simulator"]["training_real_searches"] == 0  # the simulated pipeline trains offline
    table = (tmp_path / "results.md").read_text()
    assert "questions gained / lost vs warm start" in table and "| RL, tuned simulator |" in table
