"""The batched decoding cache (keys and values written in place) and the packed linear layers give the numbers
of transformers' own cache and layers."""

from __future__ import annotations

import copy

import torch
from transformers.cache_utils import DynamicLayer

from zerosearch.llm import decoding
from zerosearch.llm.decoding import InPlaceLayer, KVBatch, packed_linears


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


def _linear_forwards(model) -> list[bool]:
    return ["forward" in m.__dict__ for m in model.modules() if type(m) is torch.nn.Linear]


def test_packed_linears_give_the_numbers_of_the_plain_layers_and_are_restored(tiny_model):
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17]]
    for model in (tiny_model, copy.deepcopy(tiny_model).to(torch.bfloat16)):
        # bfloat16 weights are packed only where the CPU computes in bfloat16 natively (AVX512-BF16 / AMX)
        packed = decoding._CAN_PACK and next(model.parameters()).dtype in decoding._PACK_DTYPES
        packs = [packed] * len(_linear_forwards(model))
        want = _steps(KVBatch(model, pad_id=0), prompts, 12)
        with packed_linears(model):
            assert _linear_forwards(model) == packs
            with packed_linears(model):  # nested: the inner exit leaves the outer's layers in place
                pass
            assert _linear_forwards(model) == packs
            got = _steps(KVBatch(model, pad_id=0), prompts, 12)
        assert not any(_linear_forwards(model))
        for a, b in zip(got, want):
            assert torch.allclose(a, b, atol=1e-5)


def test_packed_linears_follow_weight_updates_and_leave_training_forwards_alone():
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(3, 16)
    with packed_linears(layer):
        with torch.no_grad():
            assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-6)
        layer(x).sum().backward()  # grad enabled: the plain layer, so gradients flow
    assert layer.weight.grad is not None
    with torch.no_grad():
        layer.weight.mul_(2)  # a training step between two entries
    with packed_linears(layer), torch.no_grad():
        assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-6)
