"""The batched decoding cache: keys and values written in place, same numbers as transformers' own cache."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from zerosearch.llm.decoding import InPlaceLayer, KVBatch


def _steps(batch: KVBatch, prompts: list[list[int]], n: int) -> list[torch.Tensor]:
    """Prefill ragged prompts, decode n greedy steps, set a row aside and bring it back, decode again."""
    logits = [batch.feed(prompts)]
    for step in range(n):
        tokens = [[int(t)] for t in logits[-1].argmax(-1)]
        if step == n // 2:  # row 0 sits out a step (its token waits) and comes back last
            taken = batch.take([0])
            logits.append(batch.feed(tokens[1:]))
            batch.put(taken)
            tokens = [[int(t)] for t in logits[-1].argmax(-1)] + tokens[:1]
        logits.append(batch.feed(tokens))
    return logits


def test_cache_is_written_in_place_with_the_numbers_of_a_concatenating_cache(tiny_model):
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17]]
    ours = KVBatch(tiny_model, pad_id=0)
    theirs = KVBatch(tiny_model, pad_id=0)
    theirs.cache.layer_class_to_replicate = DynamicLayer  # transformers' layer: torch.cat on every update
    storage = []
    feed = KVBatch.feed

    def record(chunks):
        out = feed(ours, chunks)
        storage.append(ours.cache.layers[0].keys.data_ptr())
        return out

    ours.feed = record
    got, want = _steps(ours, prompts, 12), _steps(theirs, prompts, 12)
    assert all(isinstance(layer, InPlaceLayer) for layer in ours.cache.layers)
    for a, b in zip(got, want):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    assert all(isinstance(layer, DynamicLayer) and not isinstance(layer, InPlaceLayer) for layer in theirs.cache.layers)
    # 6 prefilled positions -> a buffer of 25: the next steps write into it. Setting a row aside and putting it
    # back replace the keys, so the steps after each move them once to a new buffer, then write in place.
    assert storage[:6] == [storage[0]] * 6
    assert len(set(storage)) <= 3 < len(storage)
