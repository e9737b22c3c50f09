"""The local transformers generator: batched decoding with a shared prompt prefix and rows set aside
gives what transformers' own generate gives one prompt at a time."""

import torch

from zerosearch.llm.local import TransformersGenerator

from .scripted import ScriptedLM

TEMPLATE = "You are a search engine. Given a query, write documents that a search engine would return for it. Query: {}"


def test_batched_greedy_generation_equals_generate_one_by_one(tiny_model, tiny_tokenizer):
    tok = tiny_tokenizer
    queries = ["city founded", "river length of the long river", "who built it", "a", "inventor of the lamp", "x y"]
    prompts = [[{"role": "user", "content": TEMPLATE.format(q)}] for q in queries]
    gen = TransformersGenerator(tiny_model, tok, batch_size=8)
    batched = gen.generate(prompts, max_new_tokens=12, temperature=0.0)
    for p, g in zip(prompts, batched):
        text = p[0]["content"] + "\n"  # the tiny tokenizer has no chat template
        ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
        ref = tiny_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                                  pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        ref = [t for t in ref if t != tok.eos_token_id]
        assert g.ok and g.n_tokens == len(ref)
        assert g.text == tok.decode(ref, skip_special_tokens=True)
    assert gen.stats["requests"] == len(queries) and gen.stats["tokens"] == sum(g.n_tokens for g in batched)


def test_rows_stop_at_their_own_stop_string_or_end_token(tiny_tokenizer):
    tok = tiny_tokenizer
    scripts = {f"query {i}": [f"Doc 1: text {i} " + "more " * i + "END and after"] for i in range(6)}
    scripts["query 6"] = ["Doc 1: short"]  # ends with an end-of-message token, no stop string
    prompts = [[{"role": "user", "content": f"query {i}"}] for i in range(7)]
    gens = TransformersGenerator(ScriptedLM(tok, scripts), tok).generate(prompts, max_new_tokens=40, stop=["END"])
    for i, g in enumerate(gens[:6]):
        assert g.text.replace(" ", "") == f"Doc1:text{i}" + "more" * i + "END"
    assert gens[6].text.replace(" ", "") == "Doc1:short"
