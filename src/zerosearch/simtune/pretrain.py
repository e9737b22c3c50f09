"""Continued pre-training of a simulator on a corpus: the knowledge a simulator needs before it is tuned.

The paper's 14B simulator had read Wikipedia in pre-training, so asked about any entity it could write a
page that names the entity's founder, birthplace or country — the bridge a two-hop question needs. A small
model knows nothing of an offline world; a few epochs of next-token training on the world's articles (the
corpus plays the part of the web) give it that knowledge. Simulation tuning on real searches comes after and
teaches the document format and the useful/noisy control.

Articles are written as a simulator writes a document, `(Title: t) text`, so what is learned here is
recalled in the same form when the tuned simulator writes `Doc i: (Title: t) text`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Sequence

from ..io import atomic_write_text, read_jsonl
from ..engines.base import Document
from ..train.sft import SFTConfig, TokenizedExample, sft_train


def article_text(contents: str) -> str:
    doc = Document.from_contents("", contents)
    return f"(Title: {doc.title}) {doc.text}" if doc.title else doc.text


def corpus_examples(tokenizer, corpus: Sequence[dict[str, Any]], *, steps: int, batch_size: int,
                    seed: int = 0) -> list[TokenizedExample]:
    """Enough epochs of the corpus, each in its own seeded order, for `steps` batches; loss on every token."""
    if not corpus:
        raise ValueError("the corpus is empty")
    articles = []
    for n, r in enumerate(corpus):
        if "contents" not in r:
            raise ValueError(f"corpus row {n} has no 'contents' field (FlashRAG format: id, contents)")
        ids = tokenizer(article_text(r["contents"]), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        articles.append(TokenizedExample(ids, [1] * len(ids)))
    rng = random.Random(seed)
    out: list[TokenizedExample] = []
    while len(out) < steps * batch_size:
        epoch = list(articles)
        rng.shuffle(epoch)
        out.extend(epoch)
    return out[: steps * batch_size]


def pretrain_simulator(model_name: str, corpus: str | Path | Sequence[dict[str, Any]], out_dir: str | Path, *,
                       sft: SFTConfig, model=None, tokenizer=None) -> dict[str, Any]:
    """Train `model_name` on the corpus articles; the model goes to out_dir/model (a plain transformers folder,
    the base model for `simtune tune`)."""
    from ..llm.local import load_causal_lm

    rows = read_jsonl(corpus) if isinstance(corpus, (str, Path)) else list(corpus)
    if model is None:
        model, tokenizer = load_causal_lm(model_name)
    examples = corpus_examples(tokenizer, rows, steps=sft.steps, batch_size=sft.batch_size, seed=sft.seed)
    summary = sft_train(model, tokenizer, examples, out_dir, sft)
    summary.update(base_model=model_name, articles=len(rows),
                   epochs=round(sft.steps * sft.batch_size / len(rows), 2))
    atomic_write_text(Path(out_dir) / "pretrain.json",
                      json.dumps({k: v for k, v in summary.items() if k != "model"}, indent=2))
    return summary
