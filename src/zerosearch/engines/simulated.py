"""The ZeroSearch simulated search engine: a language model writes the documents.

Two prompt styles (PAPER §1.3):
- `sft`: the official simulation-tuning prompt, byte for byte (the released ZeroSearch simulators were
  tuned on it): it always asks for five documents, names the kind wanted (useful or noisy), gives the
  sample's question and answer in both cases and ends with a newline; the reply is cut at `Doc {k+1}`.
  A simulator fine-tuned on this prompt (`simtune`, or a released one) can be steered to either kind.
- `prompt`: our own few-shot prompt for an instruction model that was not tuned (not the text of the
  original prompt-based simulator). As in the original, the useful prompt carries the question and
  answer and the noisy prompt does not.

Each call draws its own noise coin: noisy with probability p (the curriculum's p(step)), or the kind is
forced. Every request carries its own question and answer (bug B1 of the original code).
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from dataclasses import dataclass
from typing import Sequence

from ..llm.base import TextGenerator
from ..metrics import normalize_answer
from ..settings import SIM_MAX_TOPK
from .base import NOISY, USEFUL, Document, SearchEngine, SearchRequest, SearchResult, check_topk, parse_noise

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}

SFT_TEMPLATE = (
    "You are the Google search engine.\n"
    "Given a query, you need to generate {n} {kind} documents for the query.\n\n"
    "{context}"
    "Each document should contain about {words} words, and these documents should contain {kind} information.\n\n"
    "Query: {query}\n"
    "{Kind} Output:\n"
)
OFFICIAL_MAX_TOKENS = 600  # what the original trainer allows a served simulator (PAPER §1.4)
SFT_CONTEXT = 'The user is trying to answer the question: "{question}" whose answer is {answer}.\n'

# A worked example for the untuned ("prompt") simulator, in the output format the parser expects.
_EXAMPLE_QUERY = "Harlow Gate Bridge opening year"
_EXAMPLE_USEFUL = [
    "(Title: Harlow Gate Bridge) The Harlow Gate Bridge opened to traffic on 14 May 1931, after four years of construction across the Merrin estuary.",
    "(Title: Merrin estuary crossings) The first fixed crossing of the Merrin, the Harlow Gate Bridge, was opened in 1931 by the city council.",
    "(Title: Harlow Gate) Harlow Gate is best known for its suspension bridge, completed and opened in 1931.",
    "(Title: Bridges of the 1930s) Among the bridges opened in the 1930s was the Harlow Gate Bridge (1931), then the longest span in the region.",
    "(Title: Harlow Gate Bridge history) Work on the Harlow Gate Bridge began in 1927; the bridge opened in 1931 and was widened in 1968.",
]
_EXAMPLE_NOISY = [
    "(Title: Harlow Gate) Harlow Gate is a market town on the Merrin estuary, known for its fish market and its annual regatta.",
    "(Title: Suspension bridge) A suspension bridge carries its deck on vertical cables hung from main cables between towers.",
    "(Title: Harlow Gate ferry) Before any crossing was built, a ferry ran between Harlow Gate and the northern shore.",
    "(Title: Merrin estuary) The Merrin estuary is home to large colonies of wading birds and a protected salt marsh.",
    "(Title: Harlow Gate Bridge tolls) Tolls on the Harlow Gate Bridge were debated for decades by the town council.",
]
PROMPT_USEFUL = (
    "You are a search engine. Given a query, write {n} documents that a search engine would return for it.\n\n"
    "Example query: {example_query}\n{example}\n\n"
    '{context}You should generate documents that can help the user find the answer. '
    "Each document should contain about {words} words. "
    "You must directly output the documents and not output any other texts.\n\n"
    "Query: {query}\n"
)
PROMPT_USEFUL_CONTEXT = 'The user is trying to answer the question: "{question}" whose answer is {answer}. '
PROMPT_NOISY = (
    "You are a search engine. Given a query, write {n} documents that are related to the query but do not "
    "contain its answer.\n\n"
    "Example query: {example_query}\n{example}\n\n"
    "Each document should contain about {words} words. "
    "You must directly output the documents and not output any other texts.\n\n"
    "Query: {query}\n"
)

_DOC_MARK = re.compile(r"(?:^|\n|\s)Doc\s*(\d+)\s*[:.)]", re.IGNORECASE)
_TITLE = re.compile(r"^\(?\s*Title:\s*([^)\n]*)\)\s*")
_TITLE_WORDS = 8

# Words that name nothing: a query made of them (and of words the question does not use) asks about no one.
_FUNCTION_WORDS = frozenset(
    "a an the of in on at to for by with from into about and or not is are was were be been being has have had "
    "do does did what which who whom whose when where why how that this these those it its as than then there "
    "name named year city country born birth birthplace founded founder founding headquarters invented inventor "
    "invention place date".split())


def query_names_the_subject(query: str, question: str) -> bool:
    """Whether the query names something the question is about: a name the question capitalises (any word but
    its first), or, in a question without such names, any word that is not a function word (a question with
    neither passes every query).

    The query guard gives the simulator the question and answer only then. A small simulator told the answer
    writes it into "useful" documents whatever the query says, and RL finds that out: against the tuned
    SmolLM2 simulator, 20 steps taught the policy to search for "birthplace" or "founder" alone (train reward
    up, held-out strict EM with BM25 from 39.7 down to 12.7; a real engine returns nothing useful for those)."""
    words = question.split()
    subject = {normalize_answer(w) for w in words[1:] if w[:1].isupper()} - {""}
    subject = subject or set(normalize_answer(question).split()) - _FUNCTION_WORDS
    # a question that names nothing cannot be searched for by name: nothing to guard
    return not subject or bool(set(normalize_answer(query).split()) & subject)


def sft_prompt(query: str, kind: str, question: str | None, answer: str, k: int, words: int) -> str:
    """The official simulation-tuning prompt (PAPER §1.3). It asks for five documents whatever top-k is (the
    reply is cut at `Doc {k+1}`); only k above five, which the original never served, is asked for by number."""
    context = SFT_CONTEXT.format(question=question, answer=answer) if question and answer else ""
    n = max(k, 5)
    return SFT_TEMPLATE.format(n=NUMBER_WORDS.get(n, str(n)), kind=kind, Kind=kind.capitalize(), context=context,
                               words=words, query=query)


def sft_target(docs: Sequence[tuple[str, str]]) -> str:
    """What a tuned simulator writes: `Doc i: (Title: t) text` per line, the form `parse_documents` reads."""
    return "\n".join(f"Doc {i}: (Title: {t}) {x}" if t else f"Doc {i}: {x}" for i, (t, x) in enumerate(docs, 1))


def _numbered(docs: Sequence[str]) -> str:
    return "\n".join(f"Doc {i}: {d}" for i, d in enumerate(docs, 1))


def cut_at_next_doc(text: str, k: int) -> str:
    """The original post-processing: blank lines collapsed, the reply cut before `Doc {k+1}`."""
    return text.replace("\n\n", "\n").split(f"Doc {k + 1}")[0]


def _title_from(text: str) -> str:
    """A title for a document written without one: its first words, up to the first sentence break."""
    first = re.split(r"(?<=[.!?;:])\s", text, maxsplit=1)[0]
    words = first.split()
    title = " ".join(words[:_TITLE_WORDS]).rstrip(".!?;:,")
    return title + (" …" if len(words) > _TITLE_WORDS else "")


def parse_documents(text: str, k: int) -> tuple[list[tuple[str, str]], int]:
    """Parse `Doc 1: … Doc 2: …` into at most k (title, text) pairs; also return how many were repaired.

    Missing markers: the text is split into k chunks of sentences. A document without a title gets one from
    its first words (a policy, or a Search-R1 client, would otherwise read `Title: ""`). Fewer than k
    documents: fewer are returned, never padding dressed up as a document. Each repair counts, and each
    missing document counts as one.
    """
    text = cut_at_next_doc(text.replace("\r", ""), k).strip()
    marks = list(_DOC_MARK.finditer(text))
    segments = [text[m.end() : (marks[i + 1].start() if i + 1 < len(marks) else len(text))] for i, m in enumerate(marks)]
    segments = [" ".join(s.split()) for s in segments]
    segments = [s for s in segments if s]
    split = not segments and bool(text)
    if split:
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s]
        per = max(1, -(-len(sentences) // k))
        segments = [" ".join(sentences[i : i + per]) for i in range(0, len(sentences), per)][:k]
    docs, repaired = [], 0
    for s in segments[:k]:
        m = _TITLE.match(s)
        title, body = (m.group(1).strip(), s[m.end() :].strip()) if m else ("", s)
        if not body:  # a title alone says nothing: counted below as a missing document
            continue
        repaired += split or not title
        docs.append((title or _title_from(body), body))
    repaired += k - len(docs)
    return docs, repaired


@dataclass(frozen=True)
class SimDecoding:
    """What the simulator is asked to write and how it is decoded: about `words` words a document, sampled at
    `temperature`, within `max_new_tokens` tokens (None: a budget that fits the documents asked for)."""

    words: int
    temperature: float
    max_new_tokens: int | None

    def budget(self, k: int) -> int:
        """Tokens for k documents: ~1.5 tokens per word plus the "Doc i: (Title: …)" scaffolding."""
        return self.max_new_tokens or k * (int(self.words * 1.5) + 16)


class SimulatedEngine(SearchEngine):
    name = "simulated"
    real = False
    max_topk = SIM_MAX_TOPK

    def __init__(
        self,
        generator: TextGenerator,
        *,
        style: str = "sft",
        topk: int = 3,
        noise: str | float = 0.0,
        temperature: float = 0.8,
        words: int = 30,
        max_new_tokens: int | None = None,
        seed: int = 0,
        answer_guard: bool = True,
        query_guard: bool = True,
        share_duplicates: bool = False,
    ) -> None:
        if style not in ("sft", "prompt"):
            raise ValueError(f"simulator style must be 'sft' or 'prompt', not {style!r}")
        parse_noise(noise)  # a bad default fails here, not at the first search
        self.generator = generator
        self.style = style
        self.default_topk = topk
        self.noise = noise
        self.decoding = SimDecoding(words, temperature, max_new_tokens)
        # Noisy documents must not contain the answer (a tuned simulator that sees the answer in its prompt
        # still copies it at times). With a backend that enforces bans, the gold answers are banned
        # from noisy outputs while decoding.
        self.answer_guard = answer_guard
        # The question and answer are given only for a query that names the question's subject (see
        # query_names_the_subject); ZeroSearch gives them for every query.
        self.query_guard = query_guard
        # A real engine answers one query one way. With sharing, requests of one call that would send the
        # simulator the same prompt (same query, kind, and question and answer when given) are written once
        # and get the same documents; off, each is its own sample, as in ZeroSearch. In RL the rollouts of
        # one question often search the same words in the same turn (39% of the simulated searches of the
        # experiment's tuned-simulator arm), each of them decoded for nothing but a second sample.
        self.share_duplicates = share_duplicates
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the draws of useful or noisy (one RL run's own draw from a shared engine)."""
        self._rng = random.Random(seed)

    @property
    def thread_safe(self) -> bool:  # type: ignore[override]
        return self.generator.thread_safe

    def describe(self) -> dict:
        return {**super().describe(), "style": self.style, "backend": self.generator.name, "noise": self.noise,
                "answer_guard": self.guarded, "query_guard": self.query_guard,
                "share_duplicates": self.share_duplicates}

    @property
    def guarded(self) -> bool:
        """Whether noisy outputs are kept free of the answer (the backend must enforce bans)."""
        return self.answer_guard and self.generator.enforces_bans

    def draw_kind(self, noise: str | float | None) -> str:
        noise = self.noise if noise is None else noise
        if isinstance(noise, str):
            return noise
        # ZeroSearch: one fresh draw per call; noisy when the draw falls under p.
        return NOISY if self._rng.random() < float(noise) else USEFUL

    @staticmethod
    def _answer(golds: Sequence[str]) -> str:
        """The first gold answer, as ZeroSearch gives it to the simulator."""
        return next((g for g in golds if g), "")

    def build_prompt(self, req: SearchRequest, kind: str, k: int) -> str:
        n = NUMBER_WORDS.get(k, str(k))
        words = self.decoding.words
        answer = self._answer(req.golden_answers)
        has_context = bool(req.question and answer) and (
            not self.query_guard or query_names_the_subject(req.query, req.question))
        if self.style == "sft":
            return sft_prompt(req.query, kind, req.question if has_context else None, answer, k, words)
        if kind == USEFUL:
            context = PROMPT_USEFUL_CONTEXT.format(question=req.question, answer=answer) if has_context else ""
            return PROMPT_USEFUL.format(
                n=n, example_query=_EXAMPLE_QUERY, example=_numbered(_EXAMPLE_USEFUL[:k]),
                context=context, words=words, query=req.query,
            )
        return PROMPT_NOISY.format(
            n=n, example_query=_EXAMPLE_QUERY, example=_numbered(_EXAMPLE_NOISY[:k]), words=words, query=req.query
        )

    def search(self, requests: Sequence[SearchRequest], topk: int | None = None) -> list[SearchResult]:
        k = check_topk(topk, self.default_topk, limit=self.max_topk)
        if not requests:
            return []
        kinds = [self.draw_kind(r.noise) for r in requests]
        prompts = [[{"role": "user", "content": self.build_prompt(r, kind, k)}] for r, kind in zip(requests, kinds)]
        budget = self.decoding.budget(k)
        guard = self.guarded and NOISY in kinds
        banned = [list(r.golden_answers) if kind == NOISY else [] for r, kind in zip(requests, kinds)] if guard else None
        firsts = list(range(len(prompts)))  # the request whose generation each request reads
        if self.share_duplicates:
            seen: dict = {}
            for i, (p, b) in enumerate(zip(prompts, banned or [[]] * len(prompts))):
                firsts[i] = seen.setdefault((p[0]["content"], tuple(b)), i)
        todo = sorted(set(firsts))
        t0 = time.perf_counter()
        # The reply is cut at `Doc {k+1}` anyway: stopping there saves the documents nobody reads.
        gens = self.generator.generate([prompts[i] for i in todo], max_new_tokens=budget,
                                       temperature=self.decoding.temperature, stop=[f"Doc {k + 1}"],
                                       banned=[banned[i] for i in todo] if banned else None)
        per = (time.perf_counter() - t0) / len(requests)
        gen_of = dict(zip(todo, gens))
        results = []
        for i, (req, kind) in enumerate(zip(requests, kinds)):
            gen, shared = gen_of[firsts[i]], firsts[i] != i
            if not gen.ok:
                results.append(SearchResult(req.query, [], self.name, False, kind=kind, error=gen.error, seconds=per))
                continue
            parsed, repaired = parse_documents(gen.text, k)
            key = hashlib.sha1(f"{req.query}\x00{gen.text}".encode()).hexdigest()[:12]
            docs = [Document(f"sim-{key}-{j}", t, x) for j, (t, x) in enumerate(parsed)]
            # a shared result cost no tokens of its own: the ledger counts each token once
            results.append(
                SearchResult(req.query, docs, self.name, False, kind=kind, repaired=repaired, seconds=per,
                             meta={"raw": gen.text, "tokens": 0 if shared else gen.n_tokens, "shared": shared,
                                   "answer_guard": bool(guard and kind == NOISY)})
            )
        return results
