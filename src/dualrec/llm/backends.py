"""LLM backends: one small interface, three real implementations.

* :class:`OpenAICompatibleBackend`: any OpenAI-compatible HTTP server, ``/v1/completions`` or
  ``/v1/chat/completions``: OpenRouter (``deepseek/deepseek-chat``, the paper's model), vLLM, Ollama, llama.cpp's
  server. The API key is read from an environment variable at request time and never stored, logged or hashed;
  timeouts; retries with exponential backoff (honouring ``Retry-After``) on 429, 5xx, timeouts and refused
  connections; a thread pool bounds concurrent requests.
* :class:`LlamaCppBackend`: a GGUF in process (llama-cpp-python). Its high-level API generates one sequence at a
  time, so prompts run one after another; llama.cpp keeps the KV cache of the previous prompt and re-evaluates only
  what differs, which reuses the shared prompt prefix for free.
* :class:`HFBackend`: a transformers causal LM, optionally with a peft LoRA adapter, on CPU or CUDA; prompts are
  generated in left-padded batches.

Every backend returns one :class:`Completion` per prompt; a failure becomes ``Completion(error=...)`` for that
prompt (never an exception), so the pipeline can fall back for that user and go on. Responses go through one
on-disk :class:`~dualrec.llm.cache.ResponseCache`, keyed by the backend's :meth:`~LLMBackend.identity`, the prompt
and the :class:`SamplingParams`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import httpx
import torch

from dualrec.llm.cache import ResponseCache, cache_key
from dualrec.llm.hf import gemma_gguf_path, load_causal_lm, resolve_dtype
from dualrec.llm.parse import end_of_titles
from dualrec.llm.prompts import system_message
from dualrec.utils import pick_device


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. ``temperature=0`` is greedy. Passed explicitly to every backend (llama.cpp's server
    defaults ``repeat_penalty`` to 1.1, the library to 1.0: never rely on defaults)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    repeat_penalty: float = 1.0
    stop: tuple[str, ...] = ("\n\n",)
    seed: int = 42
    max_titles: int | None = None  # stop once the answer holds this many complete title lines (parse.end_of_titles)


@dataclass
class Completion:
    text: str | None
    error: str | None = None
    cached: bool = False
    new_tokens: int = 0
    finish_reason: str | None = None  # "stop" or "length" (cut by max_new_tokens: the last line may be partial)

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@dataclass
class BackendStats:
    requests: int = 0
    cached: int = 0
    errors: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    retries: int = 0


class LLMBackend(ABC):
    """``generate(prompts, params) -> [Completion]``; subclasses write ``identity`` and ``_generate``."""

    kind: str = "llm"

    def __init__(self, cache: ResponseCache | str | Path | None = None):
        self.cache = ResponseCache(cache) if isinstance(cache, (str, Path)) else cache
        self.stats = BackendStats()

    @abstractmethod
    def identity(self) -> dict:
        """What determines a response besides prompt and sampling (model, adapter, endpoint); no secrets."""

    @abstractmethod
    def _generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]: ...

    def generate(self, prompts: Sequence[str], params: SamplingParams = SamplingParams()) -> list[Completion]:
        prompts = list(prompts)
        keys = [cache_key(self.identity(), p, asdict(params)) for p in prompts]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        todo = list(dict.fromkeys(k for k in keys if k not in found))  # distinct prompts not cached yet
        first = {k: p for k, p in zip(keys, prompts)}
        start = time.perf_counter()
        fresh = dict(zip(todo, self._generate([first[k] for k in todo], params))) if todo else {}
        self.stats.seconds += time.perf_counter() - start
        if params.max_titles:  # one cut for every backend (a server cannot be told to stop after n titles)
            fresh = {k: cut_after_titles(c, params.max_titles) for k, c in fresh.items()}
        if self.cache is not None:
            self.cache.put_many([(k, c.text, {"tokens": c.new_tokens, "finish_reason": c.finish_reason})
                                 for k, c in fresh.items() if c.ok])
        out = [Completion(found[k][0], cached=True, finish_reason=found[k][1].get("finish_reason"))
               if k in found else fresh[k] for k in keys]
        self.stats.requests += len(prompts)
        self.stats.cached += sum(c.cached for c in out)
        self.stats.errors += sum(not c.ok for c in fresh.values())
        self.stats.new_tokens += sum(c.new_tokens for c in fresh.values())
        return out

    def close(self) -> None:
        """Release models, connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def cut_after_titles(c: Completion, n: int) -> Completion:
    """``c`` ending right after its ``n``-th complete title line (finish_reason "stop"), or ``c`` unchanged."""
    end = end_of_titles(c.text, n) if c.ok else None
    if end is None or end == len(c.text) and c.finish_reason == "stop":
        return c
    return Completion(c.text[:end], new_tokens=c.new_tokens, finish_reason="stop")


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


# ---- HTTP ------------------------------------------------------------------------------------------------------

OPENROUTER_URL = "https://openrouter.ai/api/v1"


class OpenAICompatibleBackend(LLMBackend):
    """An OpenAI-compatible server. ``endpoint="chat"`` sends ``system`` + the prompt as messages (the paper's
    OpenRouter call); ``"completions"`` sends the raw prompt (base models, llama.cpp's server). ``extra_body`` adds
    server-specific fields (llama.cpp: ``{"repeat_penalty": 1.0}``; vLLM: ``{"repetition_penalty": 1.0}``).

    Example, the paper's setting: ``OpenAICompatibleBackend(OPENROUTER_URL, "deepseek/deepseek-chat",
    api_key_env="OPENROUTER_API_KEY", endpoint="chat")`` with ``SamplingParams(300, 0.7, 0.9)``.
    """

    kind = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, endpoint: str = "completions",
                 system: str | None = None, timeout: float = 60.0, max_retries: int = 4, backoff: float = 0.5,
                 max_backoff: float = 30.0, concurrency: int = 4, extra_body: dict | None = None,
                 cache: ResponseCache | str | Path | None = None):
        super().__init__(cache)
        self.extra_body = dict(extra_body or {})
        if endpoint not in ("completions", "chat"):
            raise ValueError(f"endpoint must be 'completions' or 'chat', got {endpoint!r}")
        self.base_url = base_url.rstrip("/")
        self.model, self.api_key_env, self.endpoint, self.system = model, api_key_env, endpoint, system
        self.timeout, self.max_retries, self.backoff, self.max_backoff = timeout, max_retries, backoff, max_backoff
        self.concurrency = max(1, concurrency)
        self._client = None

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICompatibleBackend({self.base_url!r}, {self.model!r}, endpoint={self.endpoint!r})"

    def identity(self) -> dict:
        return {"kind": self.kind, "base_url": self.base_url, "model": self.model, "endpoint": self.endpoint,
                "system": self.system, "extra_body": self.extra_body}

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise RuntimeError(f"environment variable {self.api_key_env} (the API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _payload(self, prompt: str, p: SamplingParams) -> dict:
        body: dict[str, Any] = {"model": self.model, "max_tokens": p.max_new_tokens, "temperature": p.temperature,
                                "top_p": p.top_p, "seed": p.seed}
        if p.stop:
            body["stop"] = list(p.stop)
        # server-specific fields (e.g. llama.cpp's repeat_penalty, which defaults to 1.1 there): the OpenAI API
        # rejects unknown fields, so they are opt-in
        body.update(self.extra_body)
        if self.endpoint == "chat":
            msgs = ([{"role": "system", "content": self.system}] if self.system else [])
            body["messages"] = msgs + [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    def _one(self, prompt: str, p: SamplingParams) -> Completion:
        url = f"{self.base_url}/{'chat/completions' if self.endpoint == 'chat' else 'completions'}"
        try:
            headers = self._headers()
        except RuntimeError as exc:
            return Completion(None, error=str(exc))
        body = self._payload(prompt, p)
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            wait = min(self.max_backoff, self.backoff * 2 ** attempt)
            try:
                r = self._client.post(url, json=body, headers=headers, timeout=self.timeout)
            except httpx.TimeoutException:
                last = f"timeout after {self.timeout}s"
            except httpx.TransportError as exc:
                last = f"connection error: {type(exc).__name__}: {exc}"
            else:
                if r.status_code == 200:
                    return self._decode(r)
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                if r.status_code != 429 and r.status_code < 500:
                    return Completion(None, error=last)  # a client error will not get better by retrying
                retry_after = r.headers.get("retry-after")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = min(self.max_backoff, float(retry_after))
            if attempt < self.max_retries:
                self.stats.retries += 1
                time.sleep(wait)
        return Completion(None, error=f"gave up after {self.max_retries + 1} attempts: {last}")

    def _decode(self, r) -> Completion:
        try:
            data = r.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] if self.endpoint == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return Completion(None, error=f"malformed response ({type(exc).__name__}): {r.text[:200]}")
        if text is None:
            return Completion(None, error="response without text")
        tokens = (data.get("usage") or {}).get("completion_tokens") or 0
        return Completion(text, new_tokens=int(tokens), finish_reason=choice.get("finish_reason"))

    def _generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        if self._client is None:
            self._client = httpx.Client(limits=httpx.Limits(max_connections=self.concurrency))
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda q: self._one(q, params), prompts))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# ---- llama.cpp in process -------------------------------------------------------------------------------------

def free_cpus() -> int:
    """Cores not busy right now (1-minute load average), at least 1. On a shared machine, llama.cpp (and torch)
    with more threads than free cores spin and slow down by an order of magnitude (results/benchmarks.md), so the
    default thread count follows the load."""
    n = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:  # pragma: no cover - platforms without getloadavg
        return n
    return max(1, min(n, int(n - busy + 0.5)))


class LlamaCppBackend(LLMBackend):
    """A GGUF through llama-cpp-python; ``model_path="embedded"`` is the packaged Gemma 3 270M.
    ``n_threads=None``: :func:`free_cpus` at load time."""

    kind = "llama_cpp"

    def __init__(self, model_path: str | Path = "embedded", n_ctx: int = 2048, n_threads: int | None = None,
                 cache: ResponseCache | str | Path | None = None):
        super().__init__(cache)
        self.model_path, self.n_ctx = str(model_path), n_ctx
        self.n_threads = n_threads
        self._llm = None

    def identity(self) -> dict:
        return {"kind": self.kind, "model": Path(self.resolved_path()).name}

    def resolved_path(self) -> str:
        if self.model_path == "embedded":
            return str(gemma_gguf_path())
        return self.model_path

    @property
    def llm(self):
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ImportError("llama.cpp backend needs the 'llamacpp' extra: pip install 'dualrec[llamacpp]'") \
                    from exc
            n = self.n_threads or free_cpus()
            # n_threads_batch (prompt evaluation) defaults to every core: pin it too, or it spins under load
            self._llm = Llama(model_path=self.resolved_path(), n_ctx=self.n_ctx, n_threads=n, n_threads_batch=n,
                              verbose=False)
        return self._llm

    def _generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        out = []
        for prompt in prompts:
            try:
                # streamed, one chunk per token, so generation can stop at the answer's last title line
                text, tokens, finish = "", 0, "length"
                for chunk in self.llm.create_completion(
                        prompt, max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                        repeat_penalty=params.repeat_penalty, stop=list(params.stop) or None, seed=params.seed,
                        stream=True):
                    choice = chunk["choices"][0]
                    text += choice["text"]
                    tokens += 1
                    finish = choice.get("finish_reason") or finish
                    if params.max_titles and "\n" in choice["text"] and end_of_titles(text, params.max_titles):
                        finish = "stop"
                        break
                out.append(Completion(text, new_tokens=tokens, finish_reason=finish))
            except Exception as exc:  # one bad prompt (e.g. longer than n_ctx) must not stop the batch
                out.append(Completion(None, error=f"{type(exc).__name__}: {exc}"))
        return out

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None


# ---- transformers ---------------------------------------------------------------------------------------------

def _adapter_digest(adapter: str | Path | None) -> str | None:
    if adapter is None:
        return None
    f = Path(adapter) / "adapter_model.safetensors"
    return hashlib.sha256(f.read_bytes()).hexdigest()[:16] if f.exists() else str(adapter)


class HFBackend(LLMBackend):
    """A transformers causal LM (``"embedded"``, a hub id or a folder), optionally with a peft adapter.

    The loaded ``model`` and ``tokenizer`` are public: constrained generation and candidate scoring reuse them.
    """

    kind = "hf"

    def __init__(self, model_name: str = "embedded", adapter: str | Path | None = None, dtype: str = "auto",
                 device: str = "auto", batch_size: int = 8, attn_implementation: str | None = None,
                 n_threads: int | None = None, cache: ResponseCache | str | Path | None = None):
        super().__init__(cache)
        self.model_name, self.adapter, self.dtype, self.device = str(model_name), adapter, dtype, device
        self.batch_size, self.attn_implementation, self.n_threads = batch_size, attn_implementation, n_threads
        self._loaded = None

    def identity(self) -> dict:
        # the resolved dtype: "auto" is bf16 on one machine and fp32 on another, and their answers differ
        dtype = str(resolve_dtype(self.dtype, pick_device(self.device))).removeprefix("torch.")
        return {"kind": self.kind, "model": self.model_name, "adapter": _adapter_digest(self.adapter), "dtype": dtype}

    def load(self):
        if self._loaded is None:
            # torch's CPU threads spin like llama.cpp's (see free_cpus): follow the load unless told
            torch.set_num_threads(self.n_threads or free_cpus())
            self._loaded = load_causal_lm(self.model_name, dtype=self.dtype, device=self.device,
                                          attn_implementation=self.attn_implementation, adapter=self.adapter)
        return self._loaded

    @property
    def model(self):
        return self.load()[0]

    @property
    def tokenizer(self):
        return self.load()[1]

    def _generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        model, tok = self.load()
        out: list[Completion] = []
        torch.manual_seed(params.seed)
        for lo in range(0, len(prompts), self.batch_size):
            batch = prompts[lo:lo + self.batch_size]
            try:
                enc = tok(batch, return_tensors="pt", padding=True).to(model.device)
                kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=tok.pad_token_id,
                              repetition_penalty=params.repeat_penalty)
                if params.temperature > 0:
                    kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
                else:
                    kwargs.update(do_sample=False, top_p=None, top_k=None, temperature=None)
                if params.stop:
                    kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
                if params.max_titles:
                    kwargs["stopping_criteria"] = [_TitlesDone(tok, enc["input_ids"].shape[1], params.max_titles)]
                with torch.inference_mode():
                    seqs = model.generate(**enc, **kwargs)
                new = seqs[:, enc["input_ids"].shape[1]:]
                for row in new:
                    n = int((row != tok.pad_token_id).sum())
                    text = tok.decode(row, skip_special_tokens=True)
                    cut = truncate_at_stop(text, params.stop)
                    ended = len(cut) < len(text) or bool((row == tok.eos_token_id).any())
                    out.append(Completion(cut, new_tokens=n, finish_reason="stop" if ended else "length"))
            except Exception as exc:  # out of memory, a prompt too long: this batch falls back, the run goes on
                out.extend(Completion(None, error=f"{type(exc).__name__}: {exc}") for _ in batch)
        return out

    def close(self) -> None:
        self._loaded = None


@functools.lru_cache(maxsize=4)
def _newline_tokens(tokenizer):
    """``[vocab]`` bool: which tokens hold a newline. Built once per tokenizer (262k entries), not per batch."""
    vocab = tokenizer.get_vocab()
    table = torch.zeros(max(vocab.values()) + 1, dtype=torch.bool)
    table[[i for t, i in vocab.items() if "\n" in t or "\u010a" in t or t == "<0x0A>"]] = True
    return table


class _TitlesDone:
    """transformers stopping criterion: a row is done once its new text holds ``n`` complete title lines (checked
    only on steps that emitted a newline token)."""

    def __init__(self, tokenizer, prompt_len: int, n: int):
        self.tok, self.prompt_len, self.n = tokenizer, prompt_len, n
        self.is_newline = _newline_tokens(tokenizer)

    def __call__(self, input_ids, scores, **kwargs):
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for r in self.is_newline[input_ids[:, -1].cpu()].nonzero().flatten().tolist():
            text = self.tok.decode(input_ids[r, self.prompt_len:], skip_special_tokens=True)
            done[r] = end_of_titles(text, self.n) is not None
        return done


def make_backend(spec: dict | None, cache: ResponseCache | str | Path | None = None) -> LLMBackend:
    """Build a backend from a config dict: ``{"kind": "llama_cpp" | "hf" | "openai" | "openrouter", ...}``.

    ``openrouter`` is ``openai`` with the paper's defaults (base URL, ``deepseek/deepseek-chat``, chat endpoint,
    key in ``OPENROUTER_API_KEY``, the paper's system message).
    """
    spec = dict(spec or {"kind": "llama_cpp"})
    kind = spec.pop("kind", "llama_cpp")
    if kind == "llama_cpp":
        return LlamaCppBackend(cache=cache, **spec)
    if kind == "hf":
        return HFBackend(cache=cache, **spec)
    if kind in ("openai", "openrouter"):
        if kind == "openrouter":
            spec = {"base_url": OPENROUTER_URL, "model": "deepseek/deepseek-chat", "endpoint": "chat",
                    "api_key_env": "OPENROUTER_API_KEY", "system": system_message(), **spec}
        return OpenAICompatibleBackend(cache=cache, **spec)
    raise ValueError(f"unknown LLM backend kind {kind!r}; choose llama_cpp, hf, openai or openrouter")
