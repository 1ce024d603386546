"""The speech branch live, as a curve: weighted F1 by how many of the speaker's utterances were heard before.

    python benchmarks/speech_curve.py --data DATA --cache DIR --head mlp --orders 20 \
        --prior-scales 0.5 1 2 --blend-k 1 2 4 --max-weight 1 0.85     # the choice: 5-fold CV, training speakers
    python benchmarks/speech_curve.py --data DATA --cache DIR --bundle BUNDLE_BEFORE --branch ecmf_edge/weights \
        --fusion --test --prior-scales 0.5 --blend-k 2                   # once, after the choice
    python benchmarks/speech_choice.py --data DATA --cache DIR2 --only "1 s chunks" --write-tokens VARIANTS
    python benchmarks/speech_curve.py --data DATA --cache DIR --head logreg --orders 20 --windows 8 --prior-scales 0.5 \
        --blend-k 2 --tokens VARIANTS/SET.npz --save-preds OUT.npz     # another token (feature set), the same CV

Live protocol: each speaker's clips in a random order (5 orders), a fresh speaker state per
speaker; the clip scored is normalised with the statistics of the clips heard so far, itself
included (:class:`ecmf_edge.audio.speaker_norm.SpeakerNormalizer`). Each clip is scored in the
bucket of the number of that speaker's utterances heard *before* it (1st, 2nd-3rd, 4th-7th,
8th+); weighted F1 per bucket over all of a corpus' speakers and orders.

Features: the shipped audio token (``audio_encoder``'s ``pooled_mid`` from 1 s chunks + 16
prosody values, exactly as ``ecmf-edge train`` caches them, :mod:`ecmf_edge.train.corpus_features`)
and the plain anchor's (Whisper-base final states of the VAD speech padded to 12 s, mean + std
over the clip's frames, ``audio_encoder``'s ``states``), cached per corpus under ``--cache``.

Rows (logistic regression, C = 0.1, unless said otherwise): the anchor (final layer, global
standardisation, no speaker state); the un-normalised head (the token standardised with the
training population's statistics); the speaker-normalised head (live statistics, a prior of
``--windows`` windows, or per feature ``--prior-scales`` x within- / between-speaker variance);
and their blends by utterances heard, the normalised head's weight w(n) = top n / (n + k), n =
utterances heard before (``--blend-k``, ``--max-weight``): with logistic regression the two heads'
probabilities are mixed, with ``--head mlp`` (the branch's MLP ensemble, retrained in each fold
with its population paths) the members' hidden activations, as the runtime does. ``--test`` fits
the LR rows on all training speakers, scores RAVDESS 15-18 and EmoDB 03/14 once, and also runs
the exported speech heads of ``--bundle`` and ``--branch DIR`` in ONNX Runtime as the runtime
does (``--fusion``: the bundle's fusion head reading their token alone). Each run writes a table,
a JSON (curves, per-speaker accuracy, clips per bucket) and a picture; ``--replot JSON`` redraws one.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common  # noqa: F401  (puts the source checkout on sys.path)

ANCHOR_FRAMES = 1200  # 12 s of mel frames
BUCKETS = ((0, 0, "1st"), (1, 2, "2nd-3rd"), (3, 6, "4th-7th"), (7, 10 ** 9, "8th+"))
ORDERS = 5
CORPORA = ("ravdess", "emodb")


def anchor_features(samples, bundle, cache: Path, progress: bool = True) -> dict:
    """{id: final-layer mean + std (1024,)} of each clip's VAD speech (-23 dBFS, padded to 12 s), cached per corpus."""
    import numpy as np
    import onnxruntime as ort

    from ecmf_edge.audio.io import SPEECH_TARGET_DBFS, load_audio, normalize_loudness
    from ecmf_edge.audio.speech_encoder import prepare_mel
    from ecmf_edge.features import FeatureExtractor
    from ecmf_edge.modalities import SAMPLE_RATE

    spec = bundle.spec("audio_encoder")
    key = bundle.manifest["files"][spec["file"]]["sha256"][:16]
    root = cache / f"anchor-{key}"
    root.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    by_corpus: dict[str, list] = {}
    for s in samples:
        by_corpus.setdefault(s.corpus, []).append(s)
    session = None
    vad = None
    for corpus, items in by_corpus.items():
        shard = root / f"{corpus}.npz"
        cached: dict = {}
        if shard.is_file():
            with np.load(shard) as data:
                cached = {str(i): v for i, v in zip(data["ids"], data["anchor"])}
        missing = [s for s in items if s.id not in cached]
        started = time.perf_counter()
        for n, s in enumerate(missing):
            if session is None:
                options = ort.SessionOptions()
                options.intra_op_num_threads = options.inter_op_num_threads = 1
                session = ort.InferenceSession(str(bundle.root / spec["file"]), options, providers=["CPUExecutionProvider"])
                vad = FeatureExtractor(bundle)._model("vad")
            x = load_audio(s.audio)
            segments = vad.segments(x)
            if not segments:
                continue
            speech = np.concatenate([x[int(g.start * SAMPLE_RATE): int(g.end * SAMPLE_RATE)] for g in segments])
            speech = normalize_loudness(speech[: 30 * SAMPLE_RATE], SPEECH_TARGET_DBFS)
            frames = max(1, prepare_mel(speech).shape[2] // 2)
            states = session.run(["states"], {"mel": prepare_mel(speech, min_frames=ANCHOR_FRAMES)})[0][0, :frames]
            cached[s.id] = np.concatenate([states.mean(0), states.std(0)]).astype(np.float32)
            if progress and n % 100 == 0:
                print(f"  anchor {corpus}: {n}/{len(missing)} ({time.perf_counter() - started:.0f} s)", flush=True)
        if missing:
            ids = sorted(cached)
            np.savez(shard, ids=np.array(ids), anchor=np.stack([cached[i] for i in ids]))
        out.update({s.id: cached[s.id] for s in items if s.id in cached})
    return out


def live_normalise(x, groups, prior, k, seed: int):
    """(rows normalised as live, utterances heard before each): each speaker's rows in a random order, each
    with the running statistics of the rows so far (itself included) shrunk towards ``prior`` with weight ``k``
    (windows; a number or one per feature), as :class:`~ecmf_edge.audio.speaker_norm.SpeakerNormalizer` does."""
    import numpy as np

    from ecmf_edge.audio.speaker_norm import STD_FLOOR

    mean0, var0 = np.asarray(prior[0], np.float64), np.asarray(prior[1], np.float64) ** 2
    k = np.broadcast_to(np.asarray(k, np.float64), mean0.shape)
    rng = np.random.default_rng(seed)
    out, before = np.empty(x.shape, np.float32), np.empty(len(x), int)
    for group in np.unique(groups):
        rows = rng.permutation(np.flatnonzero(groups == group))
        block = np.asarray(x[rows], np.float64)
        n = np.arange(1, len(rows) + 1, dtype=np.float64)[:, None]
        mean_obs = np.cumsum(block, 0) / n
        var_obs = np.maximum(np.cumsum(block ** 2, 0) / n - mean_obs ** 2, 0.0)
        mean = (k * mean0 + n * mean_obs) / (k + n)
        var = (k * (var0 + (mean0 - mean) ** 2) + n * (var_obs + (mean_obs - mean) ** 2)) / (k + n)
        out[rows] = (block - mean) / (np.sqrt(var) + STD_FLOOR)
        before[rows] = np.arange(len(rows))
    return out, before


def bucket_of(before):
    import numpy as np

    out = np.empty(len(before), int)
    for b, (lo, hi, _) in enumerate(BUCKETS):
        out[(before >= lo) & (before <= hi)] = b
    return out


def curve(y, pred, corpora, buckets) -> dict:
    """{corpus: {"all": wF1, bucket name: wF1, ...}} over the given rows."""
    from ecmf_edge.labels import MER2025_LABELS
    from ecmf_edge.train.metrics import evaluate

    out = {}
    for corpus in CORPORA:
        rows = corpora == corpus
        if not rows.any():
            continue
        row = {"all": round(evaluate(y[rows], pred[rows], MER2025_LABELS).weighted_f1, 4)}
        for b, (_, _, name) in enumerate(BUCKETS):
            sel = rows & (buckets == b)
            row[name] = round(evaluate(y[sel], pred[sel], MER2025_LABELS).weighted_f1, 4) if sel.any() else None
        out[corpus] = row
    return out


def _logistic(x, y):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=0.1, max_iter=3000).fit(x, y)


class Heads:
    """The heads fitted on one set of speakers: speaker-normalised, un-normalised (population statistics), their
    blends by utterances heard, and the anchor.

    logreg: the un-normalised head is its own logistic regression (global standardisation) and a blend mixes
    the two heads' probabilities. mlp: the branch's MLP ensemble with its population paths
    (:func:`ecmf_edge.train.branches.classifier.train_population_path`), blended inside each member's hidden
    layer as the runtime does (the un-normalised head is the population paths alone, weight 0)."""

    def __init__(self, x, a, y, g, c, head: str, prior_scales=(), seed: int = 0):
        import numpy as np

        from ecmf_edge.audio.speaker_norm import STD_FLOOR, normalize_by_group
        from ecmf_edge.train.branches.speech import feature_prior_windows, population_prior

        self.prior = population_prior(np.asarray(x, np.float64), g)
        self.k_feature = {s: feature_prior_windows(np.asarray(x, np.float64), g, s) for s in prior_scales}
        self.mean, self.std = x.mean(0), x.std(0) + STD_FLOOR
        self.a_mean, self.a_std = a.mean(0), a.std(0) + STD_FLOOR
        self.head = head
        if head == "mlp":
            from ecmf_edge.labels import MER2025_LABELS
            from ecmf_edge.train.branches.classifier import (
                HeadOptions,
                blended_module,
                train_classifier,
                train_population_path,
            )
            from ecmf_edge.train.datasets.base import held_out_groups

            opts = HeadOptions(threads=1)
            val = held_out_groups(g, c, 0.15, seed)
            z = normalize_by_group(x, g)
            pop = self.population(x)
            module = train_classifier(z[~val], y[~val], z[val], y[val], MER2025_LABELS, opts)[0]
            paths = train_population_path(module, pop[~val], z[~val], y[~val], pop[val], y[val], MER2025_LABELS, opts)[0]
            self.module = blended_module(module, paths)
        else:
            self.norm = _logistic(normalize_by_group(x, g), y).predict_proba
            self.pop = _logistic((x - self.mean) / self.std, y).predict_proba
        self.anchor = _logistic((a - self.a_mean) / self.a_std, y).predict_proba

    def population(self, x):
        """Rows standardised with the typical training speaker's statistics (no speaker state)."""
        import numpy as np

        from ecmf_edge.audio.speaker_norm import STD_FLOOR

        return ((x - self.prior[0]) / (self.prior[1] + STD_FLOOR)).astype(np.float32)

    def blend(self, z, x, weight):
        import numpy as np

        weight = np.asarray(weight, np.float64).reshape(-1, 1)
        if self.head == "mlp":
            from ecmf_edge.train.branches.classifier import predict_blended

            return predict_blended(self.module, z, self.population(x), weight)[1]
        return weight * self.norm(z) + (1 - weight) * self.pop((x - self.mean) / self.std)

    def probs(self, x, a, g, seed: int, windows=(8.0,), blend_k=(), max_weights=(1.0,)) -> dict:
        """{row name: probabilities} for one clip order, and "before" (utterances heard before each row)."""
        import numpy as np

        out = {"anchor": self.anchor((a - self.a_mean) / self.a_std), "pop": self.blend(x, x, np.zeros(len(x)))}
        before = None
        normalised = {}
        for k in windows:
            normalised[f"norm k={k:g}"], before = live_normalise(x, g, self.prior, k, seed)
        for s, k in self.k_feature.items():
            normalised[f"norm per-feature k x{s:g}"], before = live_normalise(x, g, self.prior, k, seed)
        for name, z in normalised.items():
            out[name] = self.blend(z, x, np.ones(len(x)))
            for k in blend_k:
                for top in max_weights:
                    out[f"blend({name}; k={k:g}, max {top:g})"] = self.blend(z, x, top * before / (before + k))
        out["before"] = before
        return out


def branch_rows(name: str, session, attrs: dict, x, g, seed: int, fusion=None) -> dict:
    """Probabilities of an exported speech head (ONNX Runtime) under the live protocol, as the runtime computes
    them: its own prior (one number or per feature) and, for heads with a population path, its blend by the
    utterances heard before; also its population path alone and its speaker-normalised path alone. With
    ``fusion`` (a :class:`~ecmf_edge.runtime.fusion_head.FusionHead`), also the fusion head reading the branch's
    token alone (audio only), as ``predict`` and streams use it."""
    import numpy as np

    from ecmf_edge.audio.speaker_norm import STD_FLOOR

    norm = attrs["speaker_normalisation"]
    prior = (np.asarray(norm["prior_mean"], np.float64), np.asarray(norm["prior_std"], np.float64))
    z, before = live_normalise(x, g, prior, np.asarray(norm["prior_windows"], np.float64), seed)
    population = ((x - prior[0]) / (prior[1] + STD_FLOOR)).astype(np.float32)
    def fused(tokens):
        return {f"{name} -> fusion head (audio only)": np.stack([fusion.predict({"audio": t}).probabilities for t in tokens])}

    if "blend" not in norm:
        embedding, probs = session.run(["embedding", "probs"], {"features": z})
        return {name: probs, f"{name}, population statistics only": session.run(["probs"], {"features": population})[0],
                **(fused(embedding) if fusion is not None else {})}

    def run(weight, output="probs"):
        feeds = {"features": z, "population": population, "weight": np.asarray(weight, np.float32).reshape(-1, 1)}
        return session.run([output], feeds)[0]
    k, top = float(norm["blend"]["windows"]), float(norm["blend"]["max_weight"])
    weight = top * before / (before + k)
    return {name: run(weight), f"{name}: population path alone": run(np.zeros(len(x))),
            f"{name}: normalised path alone": run(np.ones(len(x))),
            **(fused(run(weight, "embedding")) if fusion is not None else {})}


def _rows(samples, tokens, anchors, index):
    import numpy as np

    kept = [s for s in samples if s.id in tokens and s.id in anchors]
    return (np.stack([tokens[s.id] for s in kept]), np.stack([anchors[s.id] for s in kept]),
            np.array([index[s.label] for s in kept]), np.array([s.group for s in kept]), np.array([s.corpus for s in kept]))


def _tokens(samples, bundle, cache: Path) -> dict:
    """{id: audio token} as ``ecmf-edge train`` caches it (clips where the VAD found speech)."""
    from ecmf_edge.features import FeatureExtractor
    from ecmf_edge.modalities import MODALITIES
    from ecmf_edge.train.corpus_features import cache_dims, extract_table

    table = extract_table(samples, FeatureExtractor(bundle), cache, cache_dims(bundle), progress=True)
    audio = MODALITIES.index("audio")
    return {str(i): v for i, v, m in zip(table.ids, table.features["audio"], table.mask[:, audio]) if m > 0}


def _folds(groups, corpora, k: int = 5):
    """Speaker-independent folds: each corpus' speakers dealt round-robin (sorted) into k folds."""
    import numpy as np

    fold = np.zeros(len(groups), int)
    for corpus in np.unique(corpora):
        for i, s in enumerate(sorted(set(groups[corpora == corpus]))):
            fold[groups == s] = i % k
    return fold


def _table(results: dict, title: str) -> None:
    from ecmf_edge.bench.report import print_table

    columns = [("setting", title, "")]
    for corpus, short in (("ravdess", "R"), ("emodb", "E")):
        columns += [(f"{corpus}:{name}", f"{short} {name}", ".3f") for name in ("all", *[b[2] for b in BUCKETS])]
    print_table([{"setting": k, **{f"{c}:{b}": v for c, row in r.items() for b, v in row.items()}} for k, r in results.items()],
                columns)


def collect(parts: list) -> dict:
    """Concatenate [(row name -> probs, y, corpora, groups, before)] over folds and orders into curves."""
    import numpy as np

    y = np.concatenate([q[1] for q in parts])
    corpora = np.concatenate([q[2] for q in parts])
    groups = np.concatenate([q[3] for q in parts])
    buckets = bucket_of(np.concatenate([q[4] for q in parts]))
    names = list(parts[0][0])
    preds = {n: np.concatenate([q[0][n].argmax(1) for q in parts]) for n in names}
    results = {n: curve(y, preds[n], corpora, buckets) for n in names}
    # per speaker: accuracy over all of its clips and orders (which speakers a setting helps)
    speakers = {n: {str(s): round(float((preds[n][groups == s] == y[groups == s]).mean()), 4) for s in np.unique(groups)}
                for n in names}
    counts = {c: {b[2]: int(((corpora == c) & (buckets == i)).sum()) for i, b in enumerate(BUCKETS)} for c in CORPORA}
    return {"curves": results, "speaker_accuracy": speakers, "clips_scored_per_bucket": counts}


def picture(results: dict, rows: dict, path: Path, title: str, counts: dict | None = None) -> Path:
    """Weighted F1 by utterances heard before, one panel per corpus (``rows``: setting -> legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [b[2] for b in BUCKETS]
    fig, axes = plt.subplots(1, len(CORPORA), figsize=(10, 4.6), sharey=True)
    for ax, corpus in zip(axes, CORPORA):
        for setting, legend in rows.items():
            values = [results[setting][corpus][b] for b in names]
            ax.plot(range(len(names)), values, marker="o", label=legend)
        ax.set_xticks(range(len(names)), [(f"{b} utterance" if i == 0 else b) + (f"\nn={counts[corpus][b]}" if counts else "")
                                          for i, b in enumerate(names)])
        ax.set_title({"ravdess": "RAVDESS 15-18", "emodb": "EmoDB 03, 14"}[corpus] if "test" in title
                     else {"ravdess": "RAVDESS 01-14 (held-out folds)", "emodb": "EmoDB 08-13 (held-out folds)"}[corpus])
        ax.set_xlabel("utterance of the speaker (live)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("weighted F1")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7.5, loc="lower center", ncol=2, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with ravdess/ and emodb/")
    parser.add_argument("--cache", required=True, help="folder for the per-clip features")
    parser.add_argument("--bundle", default="default")
    parser.add_argument("--head", choices=("logreg", "mlp"), default="logreg",
                        help="logreg: logistic regression (C = 0.1); mlp: the branch's MLP ensemble")
    parser.add_argument("--windows", type=float, nargs="+", default=[8.0], help="scalar prior weights compared")
    parser.add_argument("--prior-scales", type=float, nargs="*", default=[0.5, 1.0, 2.0],
                        help="per-feature prior weights compared: this times within / between-speaker variance")
    parser.add_argument("--blend-k", type=float, nargs="*", default=[1.0, 2.0, 4.0, 8.0], help="blend weights compared")
    parser.add_argument("--max-weight", type=float, nargs="+", default=[1.0],
                        help="blend weights of the normalised head reached after many utterances (w = max n / (n + k))")
    parser.add_argument("--branch", nargs="*", metavar="DIR", help="with --test: also score the speech heads in these "
                        "folders (`ecmf-edge train --branch speech --out DIR`), as the runtime runs them")
    parser.add_argument("--fusion", action="store_true", help="with --test: also the bundle's fusion head reading each "
                        "exported speech head's token alone")
    parser.add_argument("--bundle-head-name", default="speech branch (bundle)", help="row name of --bundle's speech head")
    parser.add_argument("--tokens", metavar="NPZ", help="score these per-clip tokens (ids, tokens) instead of the shipped "
                        "token, e.g. a feature set of `speech_choice.py --write-tokens` (not with --test)")
    parser.add_argument("--orders", type=int, default=ORDERS)
    parser.add_argument("--save-preds", metavar="NPZ", help="also write each row's predicted class per scored clip and order "
                        "(rows, preds, y, corpora, groups, before), for paired comparisons of runs")
    parser.add_argument("--show", nargs="*", help="rows drawn in the picture besides the anchor, the un-normalised and the "
                        "normalised head")
    parser.add_argument("--test", action="store_true", help="score the test speakers once (with the chosen settings)")
    parser.add_argument("--json", default=None, help="default bench-out/speech_curve[_test]_<head>.json")
    parser.add_argument("--png", default=None, help="the picture (default next to the JSON)")
    parser.add_argument("--replot", metavar="JSON", help="only redraw the picture of an earlier run's JSON (--png, --show)")
    parser.add_argument("--extract-only", action="store_true", help="only build the feature caches")
    parser.add_argument("--with-test", action="store_true", help="with --extract-only: also the test speakers' features")
    args = parser.parse_args(argv)
    if args.replot:
        import json

        report = json.loads(Path(args.replot).read_text(encoding="utf-8"))
        rows = {"anchor": "anchor: LR, Whisper final layer, no speaker state",
                "pop": f"un-normalised head ({report['head']}, population statistics)",
                f"norm k={args.windows[0]:g}": f"speaker-normalised head ({report['head']}), prior {args.windows[0]:g} windows",
                **{name: name for name in args.show or []}}
        png = picture(report["curves"], {k: v for k, v in rows.items() if k in report["curves"]},
                      Path(args.png or Path(args.replot).with_suffix(".png")),
                      f"{report['split']}; live, {report['orders']} clip orders; {report['head']}", report.get("clips_scored_per_bucket"))
        print(f"wrote {png}")
        return 0

    from ecmf_edge.bench.report import write_report
    from ecmf_edge.bench.system import peak_rss_mb
    from ecmf_edge.labels import MER2025_LABELS
    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.train.datasets.corpora import CorpusPaths, load_splits

    data, cache = Path(args.data), Path(args.cache)
    splits = load_splits(CorpusPaths(ravdess=data / "ravdess", emodb=data / "emodb"))
    bundle = load_bundle(args.bundle)
    train = [s for c in CORPORA for s in splits[c].train]
    test = [s for c in CORPORA for s in splits[c].test]
    if args.extract_only:
        chosen = train + (test if args.with_test else [])
        anchor_features(chosen, bundle, cache)
        _tokens(chosen, bundle, cache)
        return 0
    started = time.perf_counter()
    index = {label: i for i, label in enumerate(MER2025_LABELS)}
    used = train + test if args.test else train
    anchors = anchor_features(used, bundle, cache)
    if args.tokens:
        import numpy as np

        if args.test:
            parser.error("--tokens is for the cross-validation only")
        with np.load(args.tokens) as data:
            tokens = {str(i): v for i, v in zip(data["ids"], data["tokens"])}
    else:
        tokens = _tokens(used, bundle, cache)
    x, a, y, g, c = _rows(train, tokens, anchors, index)
    parts = []
    exported: list = []
    if args.test:
        heads = Heads(x, a, y, g, c, args.head, args.prior_scales)
        tx, ta, ty, tg, tc = _rows(test, tokens, anchors, index)
        # (row name, ONNX session, attributes) of exported speech heads
        if bundle.has("speech_head"):
            exported.append((args.bundle_head_name, bundle.session(bundle.spec("speech_head")["file"]),
                             bundle.spec("speech_head")["attributes"]))
        for folder in args.branch or []:
            import json

            import onnxruntime as ort

            record = json.loads((Path(folder) / "speech_head.json").read_text(encoding="utf-8"))
            exported.append((f"speech branch ({Path(folder).name})",
                             ort.InferenceSession(str(Path(folder) / "speech_head.onnx"), providers=["CPUExecutionProvider"]),
                             record))
        fusion = None
        if args.fusion:
            from ecmf_edge.runtime.fusion_head import FusionHead

            fusion = FusionHead.from_bundle(bundle)
        for seed in range(args.orders):
            probs = heads.probs(tx, ta, tg, seed, args.windows, args.blend_k, args.max_weight)
            before = probs.pop("before")
            for row, session, attrs in exported:
                probs.update(branch_rows(row, session, attrs, tx, tg, seed, fusion))
            parts.append((probs, ty, tc, tg, before))
        split, n = "test: RAVDESS 15-18, EmoDB 03/14", len(ty)
    else:
        fold = _folds(g, c)
        for k in range(fold.max() + 1):
            held = fold == k
            heads = Heads(x[~held], a[~held], y[~held], g[~held], c[~held], args.head, args.prior_scales, seed=k)
            for seed in range(args.orders):
                probs = heads.probs(x[held], a[held], g[held], 100 * k + seed, args.windows, args.blend_k, args.max_weight)
                before = probs.pop("before")
                parts.append((probs, y[held], c[held], g[held], before))
            print(f"  fold {k + 1}/{fold.max() + 1} ({time.perf_counter() - started:.0f} s)", flush=True)
        split, n = "5-fold CV over whole training speakers (RAVDESS 01-14, EmoDB 08-13)", len(y)
    found = collect(parts)
    if args.save_preds:
        import numpy as np

        names = list(parts[0][0])
        np.savez(args.save_preds, rows=np.array(names), preds=np.stack([np.concatenate([q[0][n].argmax(1) for q in parts])
                                                                          for n in names]),
                 **{key: np.concatenate([q[i] for q in parts]) for i, key in ((1, "y"), (2, "corpora"), (3, "groups"), (4, "before"))})
    _table(found["curves"], f"{'test' if args.test else '5-fold CV'}, live, {args.head}, {args.orders} orders (wF1)")
    print("clips scored per bucket (all orders):", found["clips_scored_per_bucket"])
    name = f"speech_curve{'_test' if args.test else ''}_{args.head}"
    json_path = Path(args.json or f"bench-out/{name}.json")
    png = Path(args.png or json_path.with_suffix(".png"))
    legend = {"anchor": "anchor: LR, Whisper final layer, no speaker state"}
    if args.test and exported:  # the exported heads as the runtime runs them
        for row, _, _ in exported:
            legend[row] = row
        legend.update({f"{row}: population path alone": f"{row}: population path alone (un-normalised head)"
                       for row, _, _ in exported})
    else:
        legend.update({"pop": f"un-normalised head ({args.head}, population statistics)",
                       f"norm k={args.windows[0]:g}": f"speaker-normalised head ({args.head}), prior {args.windows[0]:g} windows"})
    for name in args.show or []:
        legend[name] = name
    picture(found["curves"], {k: v for k, v in legend.items() if k in found["curves"]}, png,
            f"{split}; live, {args.orders} clip orders" + ("" if args.test and exported else f"; {args.head}"),
            found["clips_scored_per_bucket"])
    path = write_report(json_path, {"benchmark": "speech_curve", "split": split, "n": int(n), "head": args.head,
                                    "orders": args.orders, "buckets": [b[2] for b in BUCKETS], **found,
                                    "picture": str(png), "seconds": round(time.perf_counter() - started, 1),
                                    "peak_rss_mb": peak_rss_mb()})
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
