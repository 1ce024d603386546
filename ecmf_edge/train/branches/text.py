"""Text branch: all-MiniLM-L6-v2 with its top layers fine-tuned on MELD, reading the dialogue context.

Input: the utterance as the first segment and its conversational context as the second
(the two earlier utterances of the dialogue, and the LLM's context sentence when one is
used), ``[CLS] utterance [SEP] context [SEP]``, at most :data:`MAX_TOKENS` tokens. The
bottom layers stay as the package ships them; the top :attr:`TextTrainOptions.top_layers`
layers and a linear classifier are fine-tuned on MELD train in batches of similar length
(an exponential moving average of the weights is kept; the epoch is chosen on 10 % of the
training dialogues), and scored on MELD dev. The embedding (the branch's token for the
fusion head) is the mean of the last layer over the *utterance's* tokens, so the context
informs it through attention without being averaged in.

Only the fine-tuned tensors are saved (``text_branch.npz``, a few MB): each fine-tuned weight
matrix as its int8 difference from the package's matrix with one float32 scale per row (the
rounding error, under 3e-5, is below float16's resolution of these weights), the other tensors
as float16;
:func:`ecmf_edge.build.text_branch.build_text_branch` puts them on top of the package's weights and exports
``text_branch.onnx`` (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``;
outputs ``embedding``, ``logits``, ``probs``).
"""
from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ecmf_edge.build.common import json_default, require_torch
from ecmf_edge.build.text_branch import (
    HIDDEN,
    RECORD_FILE,
    WEIGHTS_FILE,
    build_top,
    load_package_minilm,
    pack_tuned_tensors,
    pad_encodings,
)
from ecmf_edge.errors import InputError
from ecmf_edge.text.text_branch import context_text, encode_pairs
from ecmf_edge.train.metrics import evaluate

__all__ = ["TextTrainOptions", "run_text_branch", "tune_class_bias", "length_buckets"]

logger = logging.getLogger("ecmf_edge")



@dataclass(frozen=True)
class TextTrainOptions:
    """How the text branch is fine-tuned."""

    # Fine-tuned top layers of the six (the rest stay frozen).
    top_layers: int = 4
    # Earlier utterances of the dialogue given as context (0 = the utterance alone).
    history: int = 2
    epochs: int = 4
    batch_size: int = 32
    # Peak learning rates (one-cycle) of the fine-tuned layers and of the classifier.
    lr: float = 4e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    label_smoothing: float = 0.05
    val_fraction: float = 0.1
    # Decay of the exponential moving average of the weights, which is what is scored and saved
    # (0 = the raw weights).
    ema_decay: float = 0.995
    threads: int = 2
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _bottom_states(torch, model, encodings, bottom: int, batch: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    """Frozen layers' output per sequence, float16, with its segment ids (computed once)."""
    order = np.argsort([len(e.ids) for e in encodings])
    out: list = [None] * len(encodings)
    with torch.no_grad():
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            ids, types, mask = pad_encodings(torch, [encodings[i] for i in idx])
            x = model.norm(model.words(ids) + model.positions(torch.arange(ids.shape[1])[None]) + model.types(types))
            bias = (1.0 - mask.float())[:, None, None, :] * -1e4
            for layer in model.layers[:bottom]:
                x = layer(x, bias)
            for k, i in enumerate(idx):
                n = len(encodings[i].ids)
                out[i] = (x[k, :n].half().numpy(), np.asarray(encodings[i].type_ids[:n], np.int8))
    return out


def _batch(torch, items):
    width = max(len(s) for s, _ in items)
    x = torch.zeros(len(items), width, HIDDEN)
    mask, utterance = torch.zeros(len(items), width), torch.zeros(len(items), width)
    for k, (states, types) in enumerate(items):
        n = len(states)
        x[k, :n] = torch.from_numpy(states.astype(np.float32))
        mask[k, :n] = 1
        utterance[k, :n] = torch.from_numpy((types == 0).astype(np.float32))
    return x, mask, utterance


def _predict(torch, top, items, batch: int = 128) -> np.ndarray:
    top.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(items), batch):
            out.append(torch.softmax(top(*_batch(torch, items[start:start + batch]))[1], dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, top.classifier.out_features), np.float32)


# The offsets tune_class_bias tries per class and round.
BIAS_STEPS = np.linspace(-1.5, 1.5, 31)


def tune_class_bias(probs: np.ndarray, y: np.ndarray, labels: Sequence[str], rounds: int = 3,
                    steps: np.ndarray = BIAS_STEPS) -> tuple[np.ndarray, float, float]:
    """Per-class offsets added to the log-probabilities that maximise weighted F1 on held-out data
    (coordinate search). A classifier trained with cross-entropy on MELD leans to the majority class;
    weighted F1 rewards recall of the other classes too. Returns (offsets, F1 before, F1 after)."""
    logp = np.log(np.asarray(probs, np.float64) + 1e-9)

    def f1(bias: np.ndarray) -> float:
        return evaluate(y, (logp + bias).argmax(1), labels).weighted_f1

    bias = np.zeros(logp.shape[1])
    before = best = f1(bias)
    for _ in range(rounds):
        for k in range(len(bias)):
            for value in steps:
                trial = bias.copy()
                trial[k] = value
                score = f1(trial)
                if score > best + 1e-4:
                    best, bias = score, trial
    return bias, before, best


def length_buckets(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, jitter: float = 8.0) -> list[np.ndarray]:
    """One epoch's batches: indices sorted by length (plus up to ``jitter`` tokens of noise, so batches
    differ between epochs), cut into batches, the batches shuffled. Each batch is padded only to its own
    longest sequence instead of to the longest of a random draw."""
    order = np.argsort(np.asarray(lengths, np.float64) + rng.uniform(0.0, jitter, len(lengths)), kind="stable")
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def _val_dialogues(dialogues: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    unique = np.unique(dialogues)
    return np.isin(dialogues, rng.choice(unique, size=max(1, int(round(len(unique) * fraction))), replace=False))


def run_text_branch(train: Sequence, dev: Sequence, out_dir: Path, labels: tuple[str, ...],
                    opts: TextTrainOptions = TextTrainOptions(), llm_context: dict[str, str] | None = None,
                    progress: bool = True) -> dict:
    """Fine-tune on MELD ``train`` utterances, score on ``dev``; saves the weights and the record.

    ``llm_context`` maps ``"<split>:<dialogue>:<utterance>"`` to an LLM context sentence
    (utterances without one get the dialogue history alone).
    """
    torch = require_torch()
    from tokenizers import Tokenizer

    if not train or not dev:
        raise InputError("the text branch needs MELD train and dev: pass --data DIR with meld/ (or --meld)")
    torch.manual_seed(opts.seed)
    torch.set_num_threads(opts.threads)
    started = time.perf_counter()
    model, src = load_package_minilm()
    tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
    index = {l: i for i, l in enumerate(labels)}
    llm_context = llm_context or {}

    def prepare(utts, split):
        contexts = [context_text(u.history[-opts.history:] if opts.history else (),
                                 llm_context.get(f"{split}:{u.dialogue_id}:{u.utterance_id}", "")) for u in utts]
        states = _bottom_states(torch, model, encode_pairs(tokenizer, [u.text for u in utts], contexts), 6 - opts.top_layers)
        return states, np.array([index[u.label] for u in utts]), np.array([u.dialogue_id for u in utts])

    tr_states, tr_y, tr_d = prepare(train, "train")
    dv_states, dv_y, _ = prepare(dev, "dev")
    val = _val_dialogues(tr_d, opts.val_fraction, opts.seed)
    fit = [s for s, v in zip(tr_states, val) if not v]
    fit_y, held = tr_y[~val], [s for s, v in zip(tr_states, val) if v]
    cache_seconds = time.perf_counter() - started

    top = build_top(torch, model, opts.top_layers, len(labels))
    package = {k: v.detach().numpy().copy() for k, v in top.state_dict().items() if k.startswith("layers.")}
    params = [{"params": top.layers.parameters(), "lr": opts.lr}, {"params": top.classifier.parameters(), "lr": opts.head_lr}]
    optimizer = torch.optim.AdamW(params, weight_decay=opts.weight_decay)
    lengths = np.array([len(states) for states, _ in fit])
    steps = opts.epochs * -(-len(fit) // opts.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[opts.lr, opts.head_lr], total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(opts.seed)
    averaged = copy.deepcopy(top) if opts.ema_decay > 0 else top
    best, history = (-1.0, None, 0), []
    for epoch in range(opts.epochs):
        top.train()
        t0 = time.perf_counter()
        for idx in length_buckets(lengths, opts.batch_size, rng):
            logits = top(*_batch(torch, [fit[i] for i in idx]))[1]
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(fit_y[idx]), label_smoothing=opts.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if averaged is not top:
                with torch.no_grad():
                    for kept, current in zip(averaged.parameters(), top.parameters()):
                        kept.mul_(opts.ema_decay).add_(current.detach(), alpha=1.0 - opts.ema_decay)
        f1 = evaluate(tr_y[val], _predict(torch, averaged, held).argmax(1), labels).weighted_f1
        history.append({"epoch": epoch + 1, "val_weighted_f1": round(f1, 4), "seconds": round(time.perf_counter() - t0, 1)})
        if progress:
            logger.info("text branch epoch %d: held-out weighted F1 %.4f (%.0f s)", epoch + 1, f1, history[-1]["seconds"])
        if f1 > best[0]:
            best = (f1, {k: v.detach().clone() for k, v in averaged.state_dict().items()}, epoch + 1)
    top.load_state_dict(best[1])
    unadjusted = evaluate(dv_y, _predict(torch, top, dv_states).argmax(1), labels)
    # class offsets chosen on the held-out training dialogues, folded into the classifier's bias
    offsets, val_before, val_after = tune_class_bias(_predict(torch, top, held), tr_y[val], labels)
    with torch.no_grad():
        top.classifier.bias += torch.from_numpy(offsets.astype(np.float32))
    report = evaluate(dv_y, _predict(torch, top, dv_states).argmax(1), labels)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / WEIGHTS_FILE, **pack_tuned_tensors(
        {k: v.detach().numpy() for k, v in top.state_dict().items()}, package))
    record = {"branch": "text", "labels": list(labels), "options": opts.to_dict(),
              "input": "[CLS] utterance [SEP] context [SEP]; context = LLM sentence (if any) + earlier utterances",
              "llm_context": bool(llm_context), "history": history, "best_epoch": best[2],
              "storage": "fine-tuned matrices as int8 differences from the package's (a float32 scale per row), "
                         "other tensors float16",
              "data": {"train": len(fit), "val": int(val.sum()), "dev": len(dev)},
              "class_offsets": {"values": [round(float(v), 3) for v in offsets], "val_weighted_f1_before": round(val_before, 4),
                                "val_weighted_f1_after": round(val_after, 4), "dev_weighted_f1_before": round(unadjusted.weighted_f1, 4)},
              "metrics": {"dev": report.to_dict()}, "cache_seconds": round(cache_seconds, 1),
              "train_seconds": round(time.perf_counter() - started - cache_seconds, 1)}
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2, default=json_default) + "\n", encoding="utf-8")
    return record
