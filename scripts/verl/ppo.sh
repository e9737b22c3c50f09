#!/usr/bin/env bash
# PPO through verl: GAE (gamma = lambda = 1) on a critic initialised from the policy, critic lr 1e-5
# (PAPER App. F). The KL term is the same low-variance KL loss as the other scripts; the original code
# put a k1 KL in the reward instead: add actor_rollout_ref.actor.use_kl_loss=False
# algorithm.use_kl_in_reward=True algorithm.kl_penalty=kl algorithm.kl_ctrl.kl_coef=0.001 to match it.
# Usage: bash scripts/verl/ppo.sh [hydra overrides...]; settings are environment variables (common.sh).
ALGO=ppo
source "$(dirname "$0")/common.sh"
CRITIC_LR=${CRITIC_LR:-1e-5}
ALGO_ARGS=(
  algorithm.adv_estimator=gae
  algorithm.gamma=1.0
  algorithm.lam=1.0
  algorithm.use_kl_in_reward=False
  critic.model.path="$MODEL"
  critic.optim.lr="$CRITIC_LR"
  critic.ppo_micro_batch_size_per_gpu="$MICRO"
  critic.cliprange_value=0.5
)
zs_launch "$@"
