"""Model FLOP utilisation (MFU) of one policy update on this machine.

The peak is measured, not taken from a data sheet: the best FLOP/s of large square matrix products in the
update's number format, with the same torch threads. The update is what one GRPO step of `zerosearch train`
computes after its rollouts: a forward pass over the group's trajectories, the clipped policy-gradient loss
on the policy's own tokens (observation tokens masked out), the backward pass and an AdamW step. Its FLOPs
are counted by torch's FlopCounterMode (matrix products and attention, forward and backward) on one step,
then the step is timed without the counter.

    python benchmarks/train_step.py --model tiny
    python benchmarks/train_step.py --model smollm2-135m --bf16
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n by n x n product (2 n^3 FLOPs)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def make_batch(vocab: int, batch: int, length: int, prompt: int, seed: int = 0):
    """Token ids, and a mask of the tokens the policy wrote: half of each completion, in turns, as rollouts
    interleave the policy's turns with observations."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    mask = torch.zeros(batch, length)
    for start in range(prompt, length, 64):
        mask[:, start : start + 32] = 1.0
    advantages = torch.randn(batch, generator=g)
    return ids, mask, advantages


def update(model, optimizer, ids, mask, advantages, bf16: bool, epsilon: float = 0.2) -> float:
    """One GRPO update with a single optimisation pass per batch (old log-probs = the current ones)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    ratio = torch.exp(logp - logp.detach())
    adv = advantages[:, None]
    per_token = -torch.min(ratio * adv, ratio.clamp(1 - epsilon, 1 + epsilon) * adv)
    m = mask[:, 1:]
    loss = (per_token * m).sum() / m.sum()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="'tiny' (built here) or a model name/folder")
    ap.add_argument("--batch", type=int, default=16, help="trajectories per update (questions x group size)")
    ap.add_argument("--length", type=int, default=384, help="tokens per trajectory (prompt + completion)")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens per trajectory")
    ap.add_argument("--steps", type=int, default=3, help="timed updates (after one counted warm-up)")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast, as `rl.bf16: true` in the configs")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model == "tiny":
        from zerosearch.data.world import build_world
        from zerosearch.llm.tiny import build_tiny_model, build_tiny_tokenizer

        tok = build_tiny_tokenizer([r["contents"] for r in build_world(seed=7).corpus])
        model = build_tiny_model(tok)
    else:
        from zerosearch.llm.local import load_causal_lm

        model, tok = load_causal_lm(args.model)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    ids, mask, adv = make_batch(model.config.vocab_size, args.batch, args.length, args.prompt)
    fmt = "bfloat16 autocast" if args.bf16 else "float32"
    print(f"model {args.model}: {n_params / 1e6:.1f} M parameters, update of {args.batch} x {args.length} tokens, "
          f"{fmt}, torch threads {torch.get_num_threads()}", flush=True)

    counter = FlopCounterMode(display=False)
    with counter:
        update(model, optimizer, ids, mask, adv, args.bf16)
    flops = counter.get_total_flops()
    peak_dtype = torch.bfloat16 if args.bf16 else torch.float32
    peaks, times = [], []
    for _ in range(args.steps):  # peak and update interleaved: a busy neighbour hurts both alike
        peaks.append(matmul_peak(peak_dtype))
        t0 = time.perf_counter()
        update(model, optimizer, ids, mask, adv, args.bf16)
        times.append(time.perf_counter() - t0)
    peak, seconds = max(peaks), min(times)
    achieved = flops / seconds
    tokens = args.batch * args.length
    print(f"matmul peak ({str(peak_dtype).replace('torch.', '')}, 2048^3, best of {args.steps * 5}): "
          f"{peak / 1e9:8.1f} GFLOP/s")
    print(f"update: {flops / 1e9:.1f} GFLOP counted ({flops / (6 * n_params * tokens):.2f} x 6 N T), "
          f"best {seconds:.2f} s of {args.steps} (median {sorted(times)[len(times) // 2]:.2f} s), "
          f"{tokens / seconds:.0f} tokens/s")
    print(f"achieved {achieved / 1e9:.1f} GFLOP/s, MFU {achieved / peak:.1%}")


if __name__ == "__main__":
    main()
