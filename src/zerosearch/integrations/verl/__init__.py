"""verl adapter: the search protocol as a verl agent loop, for multi-node PPO, GRPO and REINFORCE++.

- `episode`     one search episode over a token-in/token-out generate call (no verl import)
- `reward`      `compute_score` for `reward.custom_reward_function` (no verl import)
- `export`      parquet rows that verl's RLHFDataset reads (no verl import)
- `agent_loop`  `ZeroSearchAgentLoop`, an `AgentLoopBase` registered as "zerosearch_agent" (needs verl)
- `manager`     `ZeroSearchAgentLoopManager`, hands the trainer's step to every agent loop (needs verl)

Importing this package does not import verl, so the main environment can export data and score answers.
"""

AGENT_NAME = "zerosearch_agent"
