"""Feature tables for training: every sample's modality tokens, extracted once and cached.

The cache key is a hash of the encoder files' sha256 (from the bundle manifest), the
feature options and the LLM used for text context, so a changed encoder never reuses
stale features. Each corpus is cached in one ``.npz`` shard under
``<cache>/<key>/<corpus>.npz``; samples already in a shard are not extracted again.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ecmf_edge.features import FeatureExtractor
from ecmf_edge.modalities import MODALITIES
from ecmf_edge.train.datasets.base import Sample
from ecmf_edge.train.datasets.images import PHOTO_CORPORA

__all__ = ["FeatureTable", "extract_table", "feature_key", "cache_dims"]

logger = logging.getLogger("ecmf_edge")

# The models each kind of sample's features depend on: a changed face encoder must not
# invalidate cached speech features (and the other way round).
_ENCODERS_BY_MEDIA = {"image": ("face_detector", "face_encoder", "frame_encoder"), "video": ("face_detector", "face_encoder", "frame_encoder"),
                      "audio": ("vad", "audio_encoder"), "text": ("text_encoder", "text_branch")}
FEATURE_VERSION = 4  # 3: the audio token from 1 s chunks combined, as the live loop computes it; 4: whole photos detected

def cache_dims(bundle) -> dict[str, int]:
    """The token sizes a feature cache of this bundle holds: the fusion head's (:meth:`Bundle.token_dims`)
    except audio, cached raw (:meth:`Bundle.encoder_dims`) because the speech branch maps it per speaker
    afterwards (:func:`ecmf_edge.train.fusion.pipeline.speech_branch_tokens`)."""
    return {**bundle.token_dims(), "audio": bundle.encoder_dims()["audio"]}



@dataclass
class FeatureTable:
    """Aligned arrays for N samples; absent modalities are zero rows with mask 0."""

    ids: np.ndarray
    corpora: np.ndarray
    groups: np.ndarray
    labels: np.ndarray  # label strings
    features: dict[str, np.ndarray]
    mask: np.ndarray  # (N, 4) float32
    face_probs: np.ndarray  # (N, 7) pretrained face teacher (zeros where no face)

    def __len__(self) -> int:
        return int(self.ids.size)

    def subset(self, index) -> FeatureTable:
        index = np.asarray(index)
        return FeatureTable(self.ids[index], self.corpora[index], self.groups[index], self.labels[index],
                            {m: v[index] for m, v in self.features.items()}, self.mask[index], self.face_probs[index])

    @staticmethod
    def concat(tables: Sequence[FeatureTable]) -> FeatureTable:
        return FeatureTable(
            np.concatenate([t.ids for t in tables]), np.concatenate([t.corpora for t in tables]),
            np.concatenate([t.groups for t in tables]), np.concatenate([t.labels for t in tables]),
            {m: np.concatenate([t.features[m] for t in tables]) for m in MODALITIES},
            np.concatenate([t.mask for t in tables]), np.concatenate([t.face_probs for t in tables]))


def feature_key(bundle, extractor: FeatureExtractor, with_text: bool = True, media: Sequence[str] | None = None) -> str:
    """Hash of everything that determines a feature vector of samples with these ``media``
    (image, video, audio, text; default all); the LLM only matters for text."""
    media = tuple(media) if media is not None else tuple(_ENCODERS_BY_MEDIA)
    keys = sorted({k for m in media for k in _ENCODERS_BY_MEDIA[m]})
    files = {k: [bundle.manifest["files"][f]["sha256"] for f in bundle.model_files(k)] for k in keys if bundle.has(k)}
    llm = None
    if with_text and "text" in media and extractor.enricher is not None:
        opts = extractor.enricher.options
        llm = {"model": extractor.enricher.path.name, "size": extractor.enricher.path.stat().st_size,
               "prompt": opts.system_prompt, "few_shot": opts.few_shot, "max_tokens": opts.max_tokens,
               "temperature": opts.temperature, "max_chars": opts.max_chars}
    blob = json.dumps({"v": FEATURE_VERSION, "files": files, "options": asdict(extractor.options), "llm": llm}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _media(samples: Sequence[Sample]) -> tuple[str, ...]:
    found = set()
    for s in samples:
        found.update(m for m, v in (("image", s.image), ("video", s.video), ("audio", s.audio), ("text", s.text)) if v)
    return tuple(sorted(found))


def _empty_row(dims: dict[str, int]) -> dict[str, np.ndarray]:
    return {m: np.zeros(dims[m], np.float32) for m in MODALITIES}


def _extract_one(extractor: FeatureExtractor, sample: Sample, dims: dict[str, int]):
    import cv2

    from ecmf_edge.features import ModalityFeatures

    feats = ModalityFeatures()
    if sample.image is not None and sample.corpus in PHOTO_CORPORA:
        # a whole photo: as the runtime reads a frame (the largest face detected and aligned, the frame token of it all)
        image = cv2.imread(str(sample.image), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"unreadable image {sample.image}")
        extractor.from_frames([image], feats)
        if feats.face is None:
            raise ValueError(f"no face found in {sample.image}")
    elif sample.image is not None:
        image = cv2.imread(str(sample.image), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"unreadable image {sample.image}")
        face = extractor._model("face_encoder").encode([image])  # the image is already a face crop
        feats.face = np.asarray(face.features[0], np.float32)
        feats.face_probs = np.asarray(face.probs[0], np.float32)
        feats.frame = extractor._model("frame_encoder").encode([image])[0]
    if sample.video is not None:
        extractor.from_video(sample.video, feats)
    if sample.audio is not None:
        extractor.from_audio_file(sample.audio, feats)
    if sample.text:
        extractor.from_text(sample.text, feats, history=sample.history)
    row = _empty_row(dims)
    mask = np.zeros(len(MODALITIES), np.float32)
    for i, m in enumerate(MODALITIES):
        token = feats.token(m)
        if token is not None:
            row[m] = token.astype(np.float32)
            mask[i] = 1.0
    probs = feats.face_probs if feats.face_probs is not None else np.zeros(7, np.float32)
    return row, mask, probs


def _extract_or_error(extractor: FeatureExtractor, sample: Sample, dims: dict[str, int]):
    """A sample's feature row, or the one-line reason it could not be read."""
    try:
        return _extract_one(extractor, sample, dims)
    except Exception as exc:
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _same(value):
    return value


def _extract_many(extractor: FeatureExtractor, samples: Sequence[Sample], dims: dict[str, int]):
    """(sample, row or error) for every sample: in this process, or spread over Ray actors when the
    extractor names a cluster (rows are the same either way; they arrive in another order)."""
    cluster = getattr(extractor, "cluster", None)
    if cluster is None or len(samples) < 2:
        for s in samples:
            yield s, _extract_or_error(extractor, s, dims)
        return
    from functools import partial

    from ecmf_edge.batch.ray_executor import ray_map

    for index, outcome in ray_map(partial(_same, extractor), partial(_extract_or_error, dims=dims), samples,
                                  address=cluster.address, actors=cluster.actors, cpus_per_actor=cluster.cpus_per_actor,
                                  gpus_per_actor=cluster.gpus_per_actor):
        yield samples[index], outcome


def extract_table(samples: Sequence[Sample], extractor: FeatureExtractor, cache_dir: str | Path,
                  dims: dict[str, int], progress: bool = True) -> FeatureTable:
    """Features for ``samples`` (in order), reusing and extending the per-corpus cache shards."""
    from tqdm import tqdm

    by_corpus: dict[str, list[Sample]] = {}
    for s in samples:
        by_corpus.setdefault(s.corpus, []).append(s)
    rows: dict[str, tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]] = {}
    for corpus, items in by_corpus.items():
        root = Path(cache_dir) / feature_key(extractor.bundle, extractor, with_text=any(s.text for s in items), media=_media(items))
        root.mkdir(parents=True, exist_ok=True)
        shard = root / f"{corpus}.npz"
        cached: dict[str, tuple] = {}
        if shard.is_file():
            with np.load(shard, allow_pickle=False) as data:  # read each array once (NpzFile re-reads on every access)
                arrays = {name: data[name] for name in (*MODALITIES, "ids", "mask", "face_probs")}
            stale = False
            for j, m in enumerate(MODALITIES):  # absent tokens are zeros of whatever width the caller asks for
                if arrays[m].shape[1] != dims[m]:
                    if np.any(arrays["mask"][:, j] > 0):
                        stale = True  # present features of another width: made by another encoder set
                    arrays[m] = np.zeros((len(arrays["ids"]), dims[m]), np.float32)
            for i, sid in enumerate([] if stale else arrays["ids"]):
                cached[str(sid)] = ({m: arrays[m][i] for m in MODALITIES}, arrays["mask"][i], arrays["face_probs"][i])
        missing = [s for s in items if s.id not in cached]
        failed = 0
        bar = tqdm(total=len(missing), desc=f"features {corpus}", disable=not progress or not missing, unit="sample")
        for n, (s, outcome) in enumerate(_extract_many(extractor, missing, dims)):
            if isinstance(outcome, str):  # one unreadable file must not stop a corpus
                failed += 1
                logger.warning("skipping %s: %s", s.id, outcome)
            else:
                cached[s.id] = outcome
            bar.update(1)
            if (n + 1) % 2000 == 0:
                _write_shard(shard, cached)
        bar.close()
        if missing:
            _write_shard(shard, cached)
        if failed:
            logger.warning("%s: %d samples could not be read", corpus, failed)
        rows.update({s.id: cached[s.id] for s in items if s.id in cached})
    kept = [s for s in samples if s.id in rows]
    return FeatureTable(
        ids=np.array([s.id for s in kept]), corpora=np.array([s.corpus for s in kept]),
        groups=np.array([s.group for s in kept]), labels=np.array([s.label for s in kept]),
        features={m: np.stack([rows[s.id][0][m] for s in kept]).astype(np.float32) for m in MODALITIES},
        mask=np.stack([rows[s.id][1] for s in kept]).astype(np.float32),
        face_probs=np.stack([rows[s.id][2] for s in kept]).astype(np.float32),
    )


def _write_shard(path: Path, cached: dict[str, tuple]) -> None:
    ids = sorted(cached)
    arrays = {m: np.stack([cached[i][0][m] for i in ids]) for m in MODALITIES}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.array(ids), mask=np.stack([cached[i][1] for i in ids]), face_probs=np.stack([cached[i][2] for i in ids]), **arrays)
    tmp.replace(path)
