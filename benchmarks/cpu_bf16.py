"""Does bfloat16 pay on this CPU? Matrix products in float32 and in bfloat16, side by side in one process.

Every `bf16` setting (rollout, RL and SFT updates, a simulator's or evaluated policy's weights) asks for
bfloat16; zerosearch grants it on a CPU only where oneDNN computes it natively (AVX512-BF16 or AMX), and
computes in float32 elsewhere (`llm.decoding.use_bf16`). This prints the measured rates and that decision.

    python benchmarks/cpu_bf16.py
"""

from __future__ import annotations

import argparse

import torch

from train_step import matmul_peak
from zerosearch.llm.decoding import CPU_BF16, use_bf16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="n of the n x n matrices")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}, native bfloat16 (oneDNN) {CPU_BF16}")
    rates = {dt: matmul_peak(dt, args.size, args.repeats) for dt in (torch.float32, torch.bfloat16)}
    for dt, r in rates.items():
        print(f"  {str(dt):15s} {r / 1e9:8.1f} GFLOP/s  ({args.size} x {args.size} products, best of {args.repeats})")
    print(f"bfloat16 / float32: {rates[torch.bfloat16] / rates[torch.float32]:.3f}x")
    print(f"zerosearch computes bf16 settings in {'bfloat16' if use_bf16(True, 'cpu') else 'float32'} here")


if __name__ == "__main__":
    main()
