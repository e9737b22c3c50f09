#!/usr/bin/env bash
# REINFORCE++ through verl: batch-normalised returns, no critic. (The paper's default, "REINFORCE", had
# no baseline at all; REINFORCE++ is its variance-reduced successor in verl.)
# Usage: bash scripts/verl/reinforce_pp.sh [hydra overrides...]; settings are environment variables (common.sh).
ALGO=reinforce_pp
source "$(dirname "$0")/common.sh"
ALGO_ARGS=(
  algorithm.adv_estimator=reinforce_plus_plus
  algorithm.use_kl_in_reward=False
)
zs_launch "$@"
