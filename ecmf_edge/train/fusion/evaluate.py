"""Score a fusion head (the bundle's or a trained folder's) on the person-independent test splits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ecmf_edge.errors import InputError
from ecmf_edge.modalities import MODALITIES
from ecmf_edge.train.corpus_features import cache_dims, extract_table
from ecmf_edge.train.datasets.corpora import CorpusPaths, load_splits
from ecmf_edge.train.fusion.pipeline import FAMILIES, speech_branch_tokens
from ecmf_edge.train.metrics import Report, evaluate, render_confusion_png

__all__ = ["evaluate_head"]


def evaluate_head(extractor, paths: CorpusPaths, cache: Path, *, head_dir: Path | None = None, out: Path | None = None,
                  progress: bool = True) -> dict[str, Report]:
    """Weighted F1 etc. per test corpus and per modality family of the head in ``head_dir``
    (``fusion_head.onnx`` + ``.json``; default the extractor's bundle's head). With ``out``, a
    confusion-matrix PNG per group is written there.

    Raises:
        InputError: no corpus given.
        ModelError: the head or the bundle cannot be loaded.
    """
    from ecmf_edge.runtime.sessions import create_session

    bundle = extractor.bundle
    if head_dir is not None:
        head_path = Path(head_dir) / "fusion_head.onnx"
        labels = tuple(json.loads((Path(head_dir) / "fusion_head.json").read_text(encoding="utf-8"))["labels"])
    else:
        head_path, labels = bundle.path(bundle.spec("fusion_head")["file"]), tuple(bundle.labels)
    session = create_session(head_path)
    splits = load_splits(paths)
    if not splits:
        raise InputError("no corpus given: pass --data DIR or per-corpus paths")
    dims = cache_dims(bundle)
    test = speech_branch_tokens(extract_table([s for sp in splits.values() for s in sp.test], extractor, Path(cache), dims,
                                              progress), bundle)
    probs = session.run(["probs"], {**{m: test.features[m] for m in MODALITIES}, "mask": test.mask})[0]
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[label] for label in test.labels])
    groups = {f"corpus:{c}": test.corpora == c for c in np.unique(test.corpora)}
    groups.update({f"family:{f}": np.isin(test.corpora, cs) for f, cs in FAMILIES.items() if np.isin(test.corpora, cs).any()})
    reports = {}
    for name, members in groups.items():
        reports[name] = evaluate(y[members], probs[members].argmax(1), labels)
        if out is not None:
            render_confusion_png(reports[name], Path(out) / f"confusion_{name.replace(':', '_')}.png", name)
    return reports
