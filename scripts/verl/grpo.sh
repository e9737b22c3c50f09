#!/usr/bin/env bash
# GRPO through verl: group-normalised advantages over the 5 rollouts of each prompt.
# Usage: bash scripts/verl/grpo.sh [hydra overrides...]; settings are environment variables (common.sh).
ALGO=grpo
source "$(dirname "$0")/common.sh"
ALGO_ARGS=(
  algorithm.adv_estimator=grpo
  algorithm.use_kl_in_reward=False
)
zs_launch "$@"
