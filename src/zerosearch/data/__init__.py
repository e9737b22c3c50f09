"""QA data: the example type, loaders for FlashRAG / Search-R1 / the hub, and the offline world."""

from .qa import QAExample

__all__ = ["QAExample"]
