"""A small trained classifier head over fixed feature vectors, shared by the speech branch.

``LayerNorm -> Dropout -> Linear(d, hidden) -> GELU -> Dropout -> Linear(hidden, classes)``,
trained with AdamW, label smoothing and early stopping on held-out speakers; several
seeds are averaged (a deep ensemble folded into one ONNX graph) because the corpora are
small and one seed's score moves by a few points. The ONNX graph has input ``features``
(N, d) and outputs ``embedding`` (N, hidden: the mean hidden activation, the branch's
token for the fusion head), ``logits`` and ``probs`` (N, classes).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ecmf_edge.build.common import check_parity, onnx_export, require_torch
from ecmf_edge.train.metrics import evaluate

__all__ = ["HeadOptions", "train_classifier", "predict_classifier", "export_classifier", "load_classifier", "train_population_path",
           "blended_module", "predict_blended", "export_blended"]

logger = logging.getLogger("ecmf_edge")


@dataclass(frozen=True)
class HeadOptions:
    """How a branch classifier head is trained."""

    # Chosen by 5-fold speaker-independent cross-validation on the training speakers (MODEL_CARD.md):
    # hidden 64 / input dropout 0.5 scored 0.809 / 0.894 (RAVDESS / EmoDB), 128 / 0.2 scored 0.799 / 0.862.
    hidden: int = 64
    dropout_in: float = 0.5
    dropout: float = 0.3
    lr: float = 1e-3
    weight_decay: float = 5e-2
    label_smoothing: float = 0.1
    batch_size: int = 64
    max_epochs: int = 200
    # Stop after this many epochs without a better held-out weighted F1.
    patience: int = 25
    # Members of the averaged ensemble (different seeds).
    seeds: int = 5
    threads: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


def _member(torch, dim: int, classes: int, opts: HeadOptions):
    nn = torch.nn
    return nn.ModuleDict({
        "body": nn.Sequential(nn.LayerNorm(dim), nn.Dropout(opts.dropout_in), nn.Linear(dim, opts.hidden), nn.GELU()),
        "out": nn.Sequential(nn.Dropout(opts.dropout), nn.Linear(opts.hidden, classes)),
    })


def _ensemble_module(torch, members):
    class Ensemble(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(members)

        def forward(self, features):
            hidden = [m["body"](features) for m in self.members]
            logits = torch.stack([m["out"](h) for m, h in zip(self.members, hidden)]).mean(0)
            embedding = torch.stack(hidden).mean(0)
            return embedding, logits, torch.softmax(logits, dim=1)

    return Ensemble().eval()


def _fit_early_stopped(torch, module, loss_of, predicted, rng, n: int, y_val: np.ndarray, labels: tuple[str, ...],
                       opts: HeadOptions) -> tuple[float, int]:
    """AdamW on ``module``'s parameters over shuffled batches of ``n`` rows (``loss_of(batch indices)``), with
    early stopping on the weighted F1 of ``predicted()`` against ``y_val``; ``module`` ends with its best state.
    Returns (best weighted F1, its epoch)."""
    opt = torch.optim.AdamW(module.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    best, best_state, best_epoch, waited = -1.0, None, 0, 0
    for epoch in range(opts.max_epochs):
        module.train()
        order = rng.permutation(n)
        for start in range(0, len(order), opts.batch_size):
            loss = loss_of(torch.from_numpy(order[start:start + opts.batch_size]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        module.eval()
        with torch.no_grad():
            pred = predicted()
        f1 = evaluate(y_val, pred, labels).weighted_f1
        if f1 > best:
            best, best_epoch, waited = f1, epoch + 1, 0
            best_state = {k: v.clone() for k, v in module.state_dict().items()}
        else:
            waited += 1
            if waited >= opts.patience:
                break
    module.load_state_dict(best_state)
    return best, best_epoch


def train_classifier(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                     labels: tuple[str, ...], opts: HeadOptions = HeadOptions()):
    """Train ``opts.seeds`` members with early stopping on (x_val, y_val); returns (module, record)."""
    torch = require_torch()
    torch.set_num_threads(opts.threads)
    xf, yf = torch.from_numpy(np.asarray(x_fit, np.float32)), torch.from_numpy(np.asarray(y_fit, np.int64))
    xv = torch.from_numpy(np.asarray(x_val, np.float32))
    members, record = [], []
    for seed in range(opts.seeds):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        member = _member(torch, xf.shape[1], len(labels), opts)

        def loss_of(idx, member=member):
            logits = member["out"](member["body"](xf[idx]))
            return torch.nn.functional.cross_entropy(logits, yf[idx], label_smoothing=opts.label_smoothing)

        def predicted(member=member):
            return member["out"](member["body"](xv)).argmax(1).numpy()

        best, best_epoch = _fit_early_stopped(torch, member, loss_of, predicted, rng, len(yf), y_val, labels, opts)
        members.append(member.eval())
        record.append({"seed": seed, "best_epoch": best_epoch, "val_weighted_f1": round(best, 4)})
    return _ensemble_module(torch, members), record


def load_classifier(path: Path, opts: HeadOptions = HeadOptions()):
    """The ensemble of an exported head (``members.*`` of :func:`export_classifier`'s or :func:`export_blended`'s
    ONNX file) as the torch module :func:`train_classifier` returns, to train a population path for it.

    Raises:
        ModelError: the file is not such a head (or was exported with other sizes than ``opts``).
    """
    import onnx
    from onnx import numpy_helper

    from ecmf_edge.errors import ModelError

    torch = require_torch()
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if t.name.startswith("members.")}
    count = len({name.split(".")[1] for name in weights})
    first = weights.get("members.0.body.2.weight")
    classes = weights.get("members.0.out.1.weight")
    if not count or first is None or classes is None or first.shape[0] != opts.hidden:
        raise ModelError(f"{path} is not a speech head of this layout (hidden {opts.hidden}): retrain it")
    members = [_member(torch, first.shape[1], classes.shape[0], opts) for _ in range(count)]
    for i, member in enumerate(members):
        prefix = f"members.{i}."
        state = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in weights.items() if k.startswith(prefix)}
        try:
            member.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"{path}: member {i} does not load ({str(exc).splitlines()[0][:120]}): retrain it") from None
        member.eval()
    return _ensemble_module(torch, members)


def predict_classifier(module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(embedding, probs) of the torch ensemble."""
    torch = require_torch()
    with torch.no_grad():
        embedding, _, probs = module(torch.from_numpy(np.asarray(x, np.float32)))
    return embedding.numpy(), probs.numpy()


def export_classifier(module, path: Path, reference: np.ndarray) -> dict:
    """Write the ensemble as ONNX and check ONNX Runtime against torch on ``reference`` rows."""
    torch = require_torch()
    import onnxruntime as ort

    x = torch.from_numpy(np.asarray(reference, np.float32))
    onnx_export(module, (x[:2],), path, ["features"], ["embedding", "logits", "probs"],
                {"features": {0: "batch"}, "embedding": {0: "batch"}, "logits": {0: "batch"}, "probs": {0: "batch"}})
    with torch.no_grad():
        _, _, expected = module(x)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["probs"], {"features": x.numpy()})[0]
    return {"reference": "torch ensemble", "inputs": f"{len(reference)} real feature rows",
            "max_abs_diff": check_parity(f"{Path(path).name} ONNX vs torch", expected.numpy(), got, 1e-4), "tolerance": 1e-4}


def train_population_path(module, x_pop_fit: np.ndarray, x_norm_fit: np.ndarray, y_fit: np.ndarray, x_pop_val: np.ndarray,
                          y_val: np.ndarray, labels: tuple[str, ...], opts: HeadOptions = HeadOptions(),
                          match: float = 1.0) -> tuple[list, list[dict]]:
    """A population path for each member of ``module`` (:func:`train_classifier`'s ensemble): the same body
    (LayerNorm -> Dropout -> Linear -> GELU) reading features standardised with the population's statistics
    only (``x_pop``), trained so that its hidden activation reproduces the member's own on the speaker-normalised
    rows (``x_norm``; mean squared error over the target's variance, weight ``match``) and, through the member's
    frozen output layer, classifies (cross-entropy). Its hidden activation is then in the member's token space:
    the two can be blended (:func:`blended_module`). Early stopping on (x_pop_val, y_val)."""
    torch = require_torch()
    torch.set_num_threads(opts.threads)
    xp, xn = torch.from_numpy(np.asarray(x_pop_fit, np.float32)), torch.from_numpy(np.asarray(x_norm_fit, np.float32))
    yf = torch.from_numpy(np.asarray(y_fit, np.int64))
    xv = torch.from_numpy(np.asarray(x_pop_val, np.float32))
    paths, record = [], []
    for seed, member in enumerate(module.members):
        member.eval()
        for p in member.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            target = member["body"](xn)
        scale = float(target.var(0).mean()) + 1e-6
        torch.manual_seed(100 + seed)
        rng = np.random.default_rng(100 + seed)
        path = _member(torch, xp.shape[1], len(labels), opts)["body"]

        def loss_of(idx, path=path, member=member, target=target, scale=scale):
            hidden = path(xp[idx])
            loss = torch.nn.functional.cross_entropy(member["out"](hidden), yf[idx], label_smoothing=opts.label_smoothing)
            return loss + match * ((hidden - target[idx]) ** 2).mean() / scale

        def predicted(path=path, member=member):
            return member["out"](path(xv)).argmax(1).numpy()

        best, best_epoch = _fit_early_stopped(torch, path, loss_of, predicted, rng, len(yf), y_val, labels, opts)
        paths.append(path.eval())
        record.append({"seed": seed, "best_epoch": best_epoch, "val_weighted_f1": round(best, 4)})
    return paths, record


def blended_module(module, paths):
    """The ensemble with its population paths: inputs ``features`` (speaker-normalised), ``population``
    (population-standardised) and ``weight`` (N, 1); each member's hidden activation is
    ``weight * body(features) + (1 - weight) * path(population)``; embedding = their mean, logits = the mean
    of the members' output layers on them. ``weight`` 1 is exactly the ensemble alone."""
    torch = require_torch()
    members = list(module.members)

    class Blended(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(members)
            self.paths = torch.nn.ModuleList(paths)

        def forward(self, features, population, weight):
            hidden = [weight * m["body"](features) + (1 - weight) * p(population) for m, p in zip(self.members, self.paths)]
            logits = torch.stack([m["out"](h) for m, h in zip(self.members, hidden)]).mean(0)
            return torch.stack(hidden).mean(0), logits, torch.softmax(logits, dim=1)

    return Blended().eval()


def predict_blended(module, features: np.ndarray, population: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(embedding, probs) of :func:`blended_module`'s module; ``weight`` one per row."""
    torch = require_torch()
    with torch.no_grad():
        embedding, _, probs = module(torch.from_numpy(np.asarray(features, np.float32)),
                                     torch.from_numpy(np.asarray(population, np.float32)),
                                     torch.from_numpy(np.asarray(weight, np.float32).reshape(-1, 1)))
    return embedding.numpy(), probs.numpy()


def export_blended(module, path: Path, features: np.ndarray, population: np.ndarray, weight: np.ndarray) -> dict:
    """Write :func:`blended_module`'s module as ONNX and check ONNX Runtime against torch on reference rows."""
    torch = require_torch()
    import onnxruntime as ort

    inputs = [torch.from_numpy(np.asarray(a, np.float32)) for a in (features, population, np.reshape(weight, (-1, 1)))]
    onnx_export(module, tuple(i[:2] for i in inputs), path, ["features", "population", "weight"], ["embedding", "logits", "probs"],
                {n: {0: "batch"} for n in ("features", "population", "weight", "embedding", "logits", "probs")})
    with torch.no_grad():
        _, _, expected = module(*inputs)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["probs"], {n: i.numpy() for n, i in zip(("features", "population", "weight"), inputs)})[0]
    return {"reference": "torch ensemble with population paths", "inputs": f"{len(features)} real feature rows",
            "max_abs_diff": check_parity(f"{Path(path).name} ONNX vs torch", expected.numpy(), got, 1e-4), "tolerance": 1e-4}
