"""`zerosearch train` across processes: two CPU processes (gloo) stand in for two GPUs, launched by
torchrun as `accelerate launch` launches them on GPUs (accelerate reads the same environment)."""

import json
import os
import subprocess
import sys

from zerosearch.data.world import build_world, write_world
from zerosearch.llm.tiny import save_tiny


def test_train_runs_data_parallel_with_one_metrics_writer(tmp_path):
    world = build_world(seed=2, n_entities=30)
    write_world(world, tmp_path / "w")
    save_tiny(tmp_path / "tiny", [r["contents"] for r in world.corpus])
    (tmp_path / "run.yaml").write_text(
        f"engine: {{kind: bm25, corpus: {tmp_path / 'w' / 'corpus.jsonl'}, topk: 2}}\n"
        "rollout: {max_turns: 1, max_new_tokens: 8, max_obs_tokens: 32, batch_size: 8}\n"
        "rl: {steps: 2, questions_per_step: 2, num_generations: 2, learning_rate: 1.0e-4}\n"
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "zerosearch.cli", "train", "--config", str(tmp_path / "run.yaml"), "--policy", str(tmp_path / "tiny"),
           "--train-data", str(tmp_path / "w"), "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]  # rank 0 writes; the other rank does not duplicate rows
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    # 2 steps x 2 processes x (2 questions x 2 rollouts): each process rolls out its own share
    assert len(rollouts) == 16
    assert len({r["id"] for r in rollouts if r["step"] == 0}) == 4
    assert (out / "policy" / "config.json").exists()
