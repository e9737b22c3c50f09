#!/usr/bin/env bash
# Shared by grpo.sh, ppo.sh and reinforce_pp.sh (each sets ALGO and its own Hydra overrides, then calls
# zs_launch). Every setting is an environment variable whose default is the paper's (PAPER §2, App. F):
# 64 prompts x 5 rollouts per step, actor lr 1e-6, KL 0.001 ("low_var_kl" loss), 200 steps, top-5
# documents, the noise curriculum of the policy model. Extra Hydra overrides given to a script win.
# DRY_RUN=1 prints the agent-loop YAML and the verl command instead of running them.
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-3B-Instruct}
DATA_DIR=${DATA_DIR:-data/verl}                       # from `zerosearch export verl` (README)
TRAIN_FILES=${TRAIN_FILES:-$DATA_DIR/train.parquet}
VAL_FILES=${VAL_FILES:-$DATA_DIR/test.parquet}
RUN_NAME=${RUN_NAME:-$ALGO-$(basename "$MODEL")}
OUT=${OUT:-$PWD/runs/verl/$RUN_NAME}                   # on a shared filesystem for several nodes
RETRIEVE_URL=${RETRIEVE_URL:-http://127.0.0.1:8000/retrieve}  # `zerosearch serve` in front of the simulator
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
STEPS=${STEPS:-200}
BATCH=${BATCH:-64}                                     # prompts per step
ROLLOUTS=${ROLLOUTS:-5}                                # rollouts per prompt
LR=${LR:-1e-6}
KL=${KL:-0.001}
ENTROPY=${ENTROPY:-0.001}                              # the original code's default (not in the paper)
MAX_TURNS=${MAX_TURNS:-2}                              # searched turns; one answer turn follows
TURN_TOKENS=${TURN_TOKENS:-500}                        # new tokens per turn
OBS_TOKENS=${OBS_TOKENS:-500}                          # document tokens per <information> block
TOPK=${TOPK:-5}
PROMPT_LENGTH=${PROMPT_LENGTH:-1024}
# every turn at its budget plus every observation (~30 tokens of tags and instructions on top)
RESPONSE_LENGTH=${RESPONSE_LENGTH:-$(( (MAX_TURNS + 1) * TURN_TOKENS + MAX_TURNS * (OBS_TOKENS + 32) ))}
VAL_NOISE=${VAL_NOISE:-useful}                         # validation reads useful documents (null = the curriculum)
ROLLOUT_ENGINE=${ROLLOUT_ENGINE:-vllm}                 # or sglang
TP=${TP:-1}
GPU_MEM=${GPU_MEM:-0.6}
MICRO=${MICRO:-8}                                      # per-GPU micro-batch for updates and log-probs

# The per-model curriculum p_s -> p_e (PAPER App. F); NOISE_START / NOISE_END override it.
case "$MODEL" in
  *[Qq]wen2.5-7[Bb]*)  DEFAULT_START=0.0;  DEFAULT_END=0.75 ;;
  *[Qq]wen2.5-3[Bb]*)  DEFAULT_START=0.0;  DEFAULT_END=0.25 ;;
  *[Ll]lama-3.2-3[Bb]*) DEFAULT_START=0.25; DEFAULT_END=0.5 ;;
  *)                   DEFAULT_START=0.0;  DEFAULT_END=0.5 ;;   # the original README's example
esac
NOISE_START=${NOISE_START:-$DEFAULT_START}
NOISE_END=${NOISE_END:-$DEFAULT_END}

# The agent loop, registered by name for verl (actor_rollout_ref.rollout.agent.agent_loop_config_path).
# Keys besides name and _target_ are the loop's settings. With VAL_RETRIEVE_URL (e.g. a real engine
# behind `zerosearch serve -c engine.kind=bm25 …`), a second loop searches there: export the validation
# parquet with `--agent-name zerosearch_agent_val` to use it.
zs_agent_loop_yaml() {
  cat <<YAML
- name: zerosearch_agent
  _target_: zerosearch.integrations.verl.agent_loop.ZeroSearchAgentLoop
  max_turns: $MAX_TURNS
  max_turn_tokens: $TURN_TOKENS
  max_obs_tokens: $OBS_TOKENS
  engine: {kind: remote, url: "$RETRIEVE_URL", topk: $TOPK, timeout: 120, retries: 3}
  curriculum: {start: $NOISE_START, end: $NOISE_END, base: 4}
  val_noise: $VAL_NOISE
YAML
  if [ -n "${VAL_RETRIEVE_URL:-}" ]; then
    cat <<YAML
- name: zerosearch_agent_val
  _target_: zerosearch.integrations.verl.agent_loop.ZeroSearchAgentLoop
  max_turns: $MAX_TURNS
  max_turn_tokens: $TURN_TOKENS
  max_obs_tokens: $OBS_TOKENS
  engine: {kind: remote, url: "$VAL_RETRIEVE_URL", topk: $TOPK, timeout: 120, retries: 3}
YAML
  fi
}

# Overrides every algorithm shares; the scripts add their own (ALGO_ARGS).
zs_common_args() {
  COMMON_ARGS=(
    data.train_files="$TRAIN_FILES"
    data.val_files="$VAL_FILES"
    data.return_raw_chat=True
    data.train_batch_size="$BATCH"
    data.max_prompt_length="$PROMPT_LENGTH"
    data.max_response_length="$RESPONSE_LENGTH"
    data.filter_overlong_prompts=True
    actor_rollout_ref.model.path="$MODEL"
    actor_rollout_ref.actor.optim.lr="$LR"
    actor_rollout_ref.actor.ppo_mini_batch_size="$BATCH"
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$MICRO"
    actor_rollout_ref.actor.entropy_coeff="$ENTROPY"
    actor_rollout_ref.actor.use_kl_loss=True
    actor_rollout_ref.actor.kl_loss_coef="$KL"
    actor_rollout_ref.actor.kl_loss_type=low_var_kl
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu="$MICRO"
    actor_rollout_ref.rollout.name="$ROLLOUT_ENGINE"
    actor_rollout_ref.rollout.n="$ROLLOUTS"
    actor_rollout_ref.rollout.temperature=1.0
    actor_rollout_ref.rollout.top_p=0.95
    actor_rollout_ref.rollout.tensor_model_parallel_size="$TP"
    actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEM"
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu="$MICRO"
    actor_rollout_ref.rollout.agent.agent_loop_config_path="$OUT/agent_loop.yaml"
    actor_rollout_ref.rollout.agent.default_agent_loop=zerosearch_agent
    # not in verl's YAML (the dataclass has it), hence the +
    +actor_rollout_ref.rollout.agent.agent_loop_manager_class=zerosearch.integrations.verl.manager.ZeroSearchAgentLoopManager
    reward.custom_reward_function.path=pkg://zerosearch.integrations.verl.reward
    reward.custom_reward_function.name=compute_score
    trainer.nnodes="$NNODES"
    trainer.n_gpus_per_node="$GPUS_PER_NODE"
    trainer.total_training_steps="$STEPS"
    trainer.total_epochs=100
    trainer.save_freq=50
    trainer.test_freq=50
    trainer.val_before_train=False
    trainer.logger='["console"]'
    trainer.project_name=zerosearch
    trainer.experiment_name="$RUN_NAME"
    trainer.default_local_dir="$OUT/checkpoints"
  )
}

zs_launch() {
  zs_common_args
  if [ "${DRY_RUN:-0}" = 1 ]; then
    zs_agent_loop_yaml
    echo "---"
    printf '%s\n' "${COMMON_ARGS[@]}" "${ALGO_ARGS[@]}" "$@"
    return 0
  fi
  mkdir -p "$OUT"
  zs_agent_loop_yaml > "$OUT/agent_loop.yaml"
  # Fail before Ray starts if the engine is not up (the agent loops would fail the first step).
  python3 - "$RETRIEVE_URL" <<'PY'
import json, sys, urllib.request
url = sys.argv[1]
body = json.dumps({"queries": ["ping"], "topk": 1}).encode()
try:
    urllib.request.urlopen(urllib.request.Request(url, body, {"Content-Type": "application/json"}), timeout=30)
except Exception as e:  # noqa: BLE001 - any failure means the run cannot start
    sys.exit(f"the search engine at {url} does not answer ({e}); start it first (README: Scale out with verl)")
PY
  python3 -m verl.trainer.main_ppo "${COMMON_ARGS[@]}" "${ALGO_ARGS[@]}" "$@" 2>&1 | tee -a "$OUT/train.log"
}
