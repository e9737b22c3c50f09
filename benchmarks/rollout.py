"""Batched multi-turn rollout vs the sequential loop of the original `inference.py`, side by side.

Same model, questions, engine (BM25 over the world), greedy decoding, turn limit and per-turn token budget.
The sequential loop answers one question at a time the way ZeroSearch's and Search-R1's inference scripts
do: `model.generate` until `</search>` or `</answer>`, search, append the documents to the text, re-tokenise
the whole context and generate again. Ours decodes every question of the batch together with one KV cache.
Both run once on train questions first (warm-up); the batched rollout then runs `--repeats` times (default 5,
around the sequential loop) and the ratio uses its median run; every run is printed.

    python benchmarks/rollout.py --model tiny
    python benchmarks/rollout.py --model smollm2-135m --questions 32
    python benchmarks/rollout.py --model smollm2-135m --policy runs/demo/warmstart/model  # a warm-started policy

Real models run in bfloat16 weights by default, as training samples from its bfloat16 twin; both loops use
the same weights, so the ratio compares the loops and not the number formats. Our rollout also runs the linear
layers with weights packed once for oneDNN (`zerosearch.llm.decoding.packed_linears`), which `model.generate`
does not; `--packed-sequential` runs the sequential loop once more with them, to show how much of the ratio
they make.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from zerosearch import protocol
from zerosearch.agent.rollout import RolloutStats, rollout
from zerosearch.settings import RolloutConfig
from zerosearch.data.world import build_world
from zerosearch.engines.base import SearchRequest
from zerosearch.engines.bm25 import BM25Engine
from zerosearch.llm.decoding import packed_linears
from zerosearch.llm.local import load_causal_lm, render_chat


def cut_at_stop(text: str) -> str:
    """Cut a generated turn right after its first closing </search> or </answer>, as the original scripts do."""
    ends = [i + len(s) for s in protocol.STOP_STRINGS if (i := text.find(s)) >= 0]
    return text[: min(ends)] if ends else text


class StopOnTags(StoppingCriteria):
    def __init__(self, tokenizer, start: int) -> None:
        self.tokenizer, self.start = tokenizer, start

    def __call__(self, input_ids, scores, **kw) -> bool:
        text = self.tokenizer.decode(input_ids[0, self.start :], skip_special_tokens=True)
        return any(s in text for s in protocol.STOP_STRINGS)


@torch.no_grad()
def sequential(model, tok, questions, engine, cfg: RolloutConfig) -> tuple[int, float, int]:
    """One question at a time, re-tokenising the growing context every turn. Returns (tokens, seconds, searches)."""
    generated, searches, t0 = 0, 0, time.perf_counter()
    for q in questions:
        context = render_chat(tok, protocol.chat_prompt(q.question))
        for turn in range(cfg.max_turns + 1):
            ids = tok(context, return_tensors="pt", add_special_tokens=False).input_ids
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=cfg.max_new_tokens,
                                 do_sample=False, stopping_criteria=StoppingCriteriaList([StopOnTags(tok, ids.shape[1])]),
                                 pad_token_id=tok.pad_token_id)
            new = out[0, ids.shape[1] :]
            generated += len(new)
            text = cut_at_stop(tok.decode(new, skip_special_tokens=True))
            context += text
            action = protocol.parse_action(text)
            if action.kind == "answer" or turn == cfg.max_turns:
                break
            if action.kind == "search":
                res = engine.search([SearchRequest(action.content, q.question, q.golden_answers)])[0]
                searches += 1
                context += protocol.observation(res.docs_text())
            else:
                context += protocol.INVALID_ACTION
    return generated, time.perf_counter() - t0, searches


def batched(model, tok, questions, engine, cfg: RolloutConfig) -> tuple[int, float, int]:
    stats = RolloutStats()
    t0 = time.perf_counter()
    trajs = rollout(model, tok, questions, engine, cfg, stats=stats)
    return stats.generated_tokens, time.perf_counter() - t0, sum(t.n_searches for t in trajs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="'tiny' (random, built here) or a model name/folder")
    ap.add_argument("--policy", default=None, help="a trained policy folder (defaults to --model)")
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--max-turns", type=int, default=2)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16", help="weights of a real model")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of the batched rollout (the ratio uses the median)")
    ap.add_argument("--packed-sequential", action="store_true",
                    help="also run the sequential loop with packed linear layers")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    world = build_world(seed=7)
    engine = BM25Engine(world.corpus)
    questions = world.test[: args.questions]
    if args.model == "tiny":
        from zerosearch.llm.tiny import build_tiny_model, build_tiny_tokenizer

        tok = build_tiny_tokenizer([r["contents"] for r in world.corpus])
        model = build_tiny_model(tok)
    else:
        model, tok = load_causal_lm(args.policy or args.model, dtype=args.dtype)
    cfg = RolloutConfig(max_turns=args.max_turns, max_new_tokens=args.max_new_tokens, temperature=0.0,
                        batch_size=len(questions), bf16=False)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    print(f"model {args.policy or args.model} ({dtype}), {len(questions)} questions, {args.max_turns} search turns + "
          f"answer turn, {args.max_new_tokens} tokens per turn, greedy, BM25 engine, torch threads "
          f"{torch.get_num_threads()}")
    # Both loops first run once on other questions (the train split), so that neither pays for first-call set-up
    # (thread pools, the matrix kernels chosen for each new shape). The batched rollout is short (seconds against
    # minutes) and a single run of it swings with the machine's load: it runs `--repeats` times, the first before
    # the sequential loop and the rest after it, and the ratio uses the median.
    warm = world.train[: len(questions)]
    sequential(model, tok, warm[:2], engine, cfg)
    batched(model, tok, warm, engine, cfg)
    runs = [batched(model, tok, questions, engine, cfg)]
    seq = sequential(model, tok, questions, engine, cfg)
    runs += [batched(model, tok, questions, engine, cfg) for _ in range(args.repeats - 1)]
    line("sequential (inference.py style)", seq, len(questions))
    if args.packed_sequential:
        with packed_linears(model):
            packed = sequential(model, tok, questions, engine, cfg)
        line("sequential, packed linear layers", packed, len(questions))
    for i, run in enumerate(runs, 1):
        line(f"batched (zerosearch) run {i}/{len(runs)}", run, len(questions))
    med = sorted(runs, key=lambda r: r[1])[len(runs) // 2]
    line("batched (zerosearch), median run", med, len(questions))
    ratios = sorted(speedup(r, seq) for r in runs)
    print(f"ratio (batched / sequential): {speedup(med, seq):.1f}x tokens/s, "
          f"{seq[1] / med[1]:.1f}x questions/s (median run; runs {ratios[0]:.1f}x to {ratios[-1]:.1f}x tokens/s)")
    if args.packed_sequential:
        print(f"ratio (batched / sequential with packed layers): {speedup(med, packed):.1f}x tokens/s (median run)")


def speedup(run: tuple[int, float, int], base: tuple[int, float, int]) -> float:
    """Tokens/s of `run` over tokens/s of `base`."""
    return (run[0] / run[1]) / (base[0] / base[1])


def line(name: str, result: tuple[int, float, int], n_questions: int) -> None:
    tokens, seconds, searches = result
    print(f"{name:34s} {tokens:7d} tokens in {seconds:7.1f} s: {tokens / seconds:8.1f} tokens/s, "
          f"{n_questions / seconds:6.2f} questions/s, {searches} searches", flush=True)


if __name__ == "__main__":
    main()
