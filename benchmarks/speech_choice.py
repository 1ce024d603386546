"""Which speech features win under the live protocol: Whisper-base layers, speaker normalisation, the prior.

    python benchmarks/speech_choice.py --data DATA --cache DIR [--bundle default] [--json bench-out/speech_choice.json]
    python benchmarks/speech_choice.py --data DATA --cache DIR --test   # once, after the choice

Every clip of the training speakers (RAVDESS actors 01-14, EmoDB 08-13) goes through the live
path's front end (VAD speech, -23 dBFS) and the Whisper-base encoder (the torch re-implementation
the bundle exports): mean + std over time of the residual stream after each of the six layers,
the final (layer-normed) states, and the plain anchor's features: the final states of the input
padded to 12 s, pooled over the clip's frames; plus the 16 prosody statistics. Cached per clip.

The choice is 5-fold speaker-independent cross-validation on the training speakers, scored under
the **live protocol**: each held-out speaker's clips in a random order, each normalised with the
statistics of the clips heard so far (itself included) shrunk towards the training folds' typical
speaker (:class:`ecmf_edge.audio.speaker_norm.SpeakerNormalizer`). Logistic regression throughout
(the shipped head is chosen on the same folds by ``ecmf-edge train --branch speech``). Compared:
the anchor (final layer, 12 s, global standardisation), feature sets, a head trained on
speaker-normalised rows alone or also on rows normalised as live (random orders), and the prior's
weight. ``--test`` scores the anchor and the chosen setting on RAVDESS 15-18 and EmoDB 03/14 once.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common  # noqa: F401  (puts the source checkout on sys.path)

from ecmf_edge.bench.report import print_table, write_report
from ecmf_edge.bench.system import peak_rss_mb

LAYERS = 6
ANCHOR_FRAMES = 1200  # 12 s of mel frames
FEATURE_SETS = {"layer 1 (shipped)": (1,), "layers 0+1": (0, 1), "layers 1+2": (1, 2), "layers 0+1+2": (0, 1, 2),
                "layers 1+2+3": (1, 2, 3), "layers 0+1+2+3": (0, 1, 2, 3), "final states": ("final",),
                "layers 0+1+2, 1 s chunks": ("chunks_1s", 0, 1, 2), "layers 0+1+2, 1 s chunks with 1 s context": ("chunks_2s", 0, 1, 2),
                "layers 0+1+2+3, 1 s chunks": ("chunks_1s", 0, 1, 2, 3), "layers 1+2+3, 1 s chunks": ("chunks_1s", 1, 2, 3),
                "layers 0+1, 1 s chunks": ("chunks_1s", 0, 1), "layers 1+2, 1 s chunks": ("chunks_1s", 1, 2),
                "layers 0-5, 1 s chunks": ("chunks_1s", 0, 1, 2, 3, 4, 5),
                # prosody of each 1 s chunk, mean + std over the chunks (weighted as the encoder's), instead of / besides
                # the prosody of the whole speech
                "layers 0+1+2, 1 s chunks, chunk prosody": ("chunks_1s", 0, 1, 2, "chunk prosody"),
                "layers 0+1+2, 1 s chunks, both prosodies": ("chunks_1s", 0, 1, 2, "both prosodies"),
                "layers 0+1+2, 1 s chunks, no prosody": ("chunks_1s", 0, 1, 2, "no prosody"),
                "layers 0+1+2, 1 s chunks, means only": ("chunks_1s", 0, 1, 2, "means only"),
                "layers 0+1+2+3, 1 s chunks, means only": ("chunks_1s", 0, 1, 2, 3, "means only")}
# Seconds of speech each 1 s hop is encoded with (the new second and the context before it).
CHUNK_CONTEXTS = (1.0, 2.0)
# The prior's weight (windows of a typical speaker) is compared on this feature set.
PRIOR_SET = "layers 0+1+2"


def _encoder(bundle):
    from ecmf_edge.build.whisper_encoder import CT2_DIR, build_whisper_encoder, encoder_weights

    state, layers, heads, _ = encoder_weights(bundle.root / CT2_DIR)
    assert layers == LAYERS, layers
    return build_whisper_encoder(state, layers, heads)


def extract(samples, bundle, cache: Path) -> dict:
    """{id: {"layers": (6, 1024), "final": (1024,), "anchor": (1024,), "prosody": (16,)}} (cached as one npz per clip)."""
    import numpy as np
    import torch

    from ecmf_edge.audio.io import SPEECH_TARGET_DBFS, load_audio, normalize_loudness
    from ecmf_edge.audio.prosody import prosody_features
    from ecmf_edge.audio.speech_encoder import chunk_spans, prepare_mel
    from ecmf_edge.build.whisper_encoder import _mean_std
    from ecmf_edge.features import FeatureExtractor
    from ecmf_edge.modalities import SAMPLE_RATE

    cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    module = _encoder(bundle)
    vad = FeatureExtractor(bundle)._model("vad")
    out, started = {}, time.perf_counter()
    def stats(t):
        return _mean_std(torch, t)[0].numpy().astype(np.float32)

    captured = []
    hooks = [layer.register_forward_hook(lambda m, i, o: captured.append(o)) for layer in module.layers]
    for n, sample in enumerate(samples):
        path = cache / (sample.id.replace("/", "_").replace(":", "_") + ".npz")
        row = {}
        if path.is_file():
            with np.load(path) as cached:
                row = dict(cached)
        missing = [seconds for seconds in CHUNK_CONTEXTS if f"chunks_{seconds:g}s" not in row
                   or (seconds == 1.0 and "chunk_prosody_1s" not in row)]
        if "anchor" in row and not missing:
            out[sample.id] = row
            continue
        x = load_audio(sample.audio)
        segments = vad.segments(x)
        if not segments:
            continue
        speech = np.concatenate([x[int(s.start * SAMPLE_RATE): int(s.end * SAMPLE_RATE)] for s in segments])
        raw = speech[: 30 * SAMPLE_RATE]
        speech = normalize_loudness(raw, SPEECH_TARGET_DBFS)
        with torch.no_grad():
            if "anchor" not in row:
                captured.clear()
                mel = prepare_mel(speech)
                states = module(torch.from_numpy(mel))[0]
                whole = captured[:LAYERS]
                pad = prepare_mel(speech, min_frames=ANCHOR_FRAMES)
                frames = max(1, mel.shape[2] // 2)
                anchor_states = module(torch.from_numpy(pad))[0][:, :frames]
                row.update({"layers": np.stack([stats(c) for c in whole]), "final": stats(states), "anchor": stats(anchor_states),
                            "prosody": np.asarray(prosody_features(speech, SAMPLE_RATE), np.float32)})
            for seconds in missing:  # as the live loop encodes it: each 1 s of speech once, with context
                chunks, weights, prosody = [], [], []
                for start, end, new in chunk_spans(raw.size, window=int(seconds * SAMPLE_RATE)):
                    captured.clear()
                    piece = normalize_loudness(raw[start:end], SPEECH_TARGET_DBFS)
                    module(torch.from_numpy(prepare_mel(piece)))
                    chunks.append(np.stack([stats(c) for c in captured[:LAYERS]]))
                    weights.append(new)
                    prosody.append(prosody_features(piece, SAMPLE_RATE))
                row[f"chunks_{seconds:g}s"], row[f"chunk_weights_{seconds:g}s"] = np.stack(chunks), np.asarray(weights, np.float64)
                if seconds == 1.0:
                    row["chunk_prosody_1s"] = np.asarray(prosody, np.float32)
        np.savez(path, **row)
        out[sample.id] = row
        if n % 100 == 0:
            print(f"  {n}/{len(samples)} clips ({time.perf_counter() - started:.0f} s)", flush=True)
    for h in hooks:
        h.remove()
    return out


def _matrix(rows, ids, feature):
    import numpy as np

    if feature == "anchor":
        return np.stack([rows[i]["anchor"] for i in ids])
    from ecmf_edge.audio.speech_encoder import combine_pooled

    parts = []
    for i in ids:
        r = rows[i]
        if str(feature[0]).startswith("chunks"):
            layers = [k for k in feature[1:] if isinstance(k, int)]
            flags = {k for k in feature[1:] if isinstance(k, str)}
            prosody = next((k for k in flags if k.endswith("prosody") or k.endswith("prosodies")), "whole prosody")
            chunks = r[feature[0]][:, layers].reshape(len(r[feature[0]]), -1)
            weights = r[feature[0].replace("chunks", "chunk_weights")]
            tail = []
            if prosody in ("whole prosody", "both prosodies"):
                tail.append(r["prosody"])
            if prosody in ("chunk prosody", "both prosodies"):  # (mean, std) of each prosody value over the chunks
                tail.append(combine_pooled(np.concatenate([r["chunk_prosody_1s"], np.zeros_like(r["chunk_prosody_1s"])], 1),
                                           weights, r["chunk_prosody_1s"].shape[1]))
            pooled = combine_pooled(chunks, weights, chunks.shape[1] // (2 * len(layers)))
            if "means only" in flags:  # (layers, mean / std, width): the means
                pooled = pooled.reshape(len(layers), 2, -1)[:, 0].reshape(-1)
            parts.append(np.concatenate([pooled, *tail]))
            continue
        parts.append(np.concatenate([r["final"] if k == "final" else r["layers"][k] for k in feature] + [r["prosody"]]))
    return np.stack(parts)


def _logistic(x, y):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=0.1, max_iter=3000).fit(x, y)


def fit_predict(x_fit, y_fit, g_fit, x_eval, g_eval, how: str, prior_windows: float, live_copies: int, seed: int):
    """Predictions for ``x_eval`` (speakers ``g_eval``) from a logistic regression fitted on ``x_fit``.

    how: "global" (standardised with the fitting rows' statistics, no speaker state) or "live"
    (fitting rows z-scored per speaker, plus ``live_copies`` copies normalised as live in random orders;
    evaluation rows normalised as live, from the fitting speakers' typical statistics)."""
    import numpy as np

    from ecmf_edge.audio.speaker_norm import STD_FLOOR, normalize_by_group
    from ecmf_edge.train.branches.speech import population_prior, streaming_normalize

    if how == "global":
        mean, std = x_fit.mean(0), x_fit.std(0) + STD_FLOOR
        return _logistic((x_fit - mean) / std, y_fit).predict((x_eval - mean) / std)
    prior = population_prior(x_fit.astype(np.float64), g_fit)
    rows, labels = [normalize_by_group(x_fit, g_fit)], [y_fit]
    for copy in range(live_copies):
        rows.append(streaming_normalize(x_fit, g_fit, prior, prior_windows, seed=1000 + copy))
        labels.append(y_fit)
    model = _logistic(np.concatenate(rows), np.concatenate(labels))
    return model.predict(streaming_normalize(x_eval, g_eval, prior, prior_windows, seed=seed))


def _folds(groups, corpora, k: int = 5):
    """Speaker-independent folds: each corpus' speakers dealt round-robin (sorted) into k folds."""
    import numpy as np

    fold = np.zeros(len(groups), int)
    for corpus in np.unique(corpora):
        speakers = sorted(set(groups[corpora == corpus]))
        for i, s in enumerate(speakers):
            fold[groups == s] = i % k
    return fold


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with ravdess/ and emodb/")
    parser.add_argument("--cache", required=True, help="folder for the per-clip features")
    parser.add_argument("--bundle", default="default")
    parser.add_argument("--json", default="bench-out/speech_choice.json")
    parser.add_argument("--only", nargs="+", metavar="TEXT", help="run only the settings whose name contains one of these")
    parser.add_argument("--test", action="store_true", help="score the anchor and the chosen setting on the test speakers")
    parser.add_argument("--feature", default="layers 0+1+2", choices=sorted(FEATURE_SETS), help="with --test: the chosen set")
    parser.add_argument("--prior-windows", type=float, default=8.0, help="with --test: the chosen prior weight")
    parser.add_argument("--live-copies", type=int, default=0, help="with --test: the chosen live-normalised copies")
    parser.add_argument("--write-tokens", metavar="DIR", help="only write each feature set's rows of the training speakers "
                        "(those whose name contains an --only text) as DIR/<name>.npz (ids, tokens), for "
                        "`speech_curve.py --tokens`")
    args = parser.parse_args(argv)

    import numpy as np

    from ecmf_edge.labels import MER2025_LABELS
    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.train.datasets.corpora import CorpusPaths, load_splits
    from ecmf_edge.train.metrics import evaluate

    data = Path(args.data)
    splits = load_splits(CorpusPaths(ravdess=data / "ravdess", emodb=data / "emodb"))
    bundle = load_bundle(args.bundle)
    train = [s for c in ("ravdess", "emodb") for s in splits[c].train]
    test = [s for c in ("ravdess", "emodb") for s in splits[c].test] if args.test else []
    rows = extract(train + test, bundle, Path(args.cache))
    index = {label: i for i, label in enumerate(MER2025_LABELS)}

    def table(samples):
        kept = [s for s in samples if s.id in rows]
        return ([s.id for s in kept], np.array([index[s.label] for s in kept]), np.array([s.group for s in kept]),
                np.array([s.corpus for s in kept]))

    ids, y, g, c = table(train)
    if args.write_tokens:
        folder = Path(args.write_tokens)
        folder.mkdir(parents=True, exist_ok=True)
        for name, feature in FEATURE_SETS.items():
            if feature != "anchor" and (not args.only or any(text in name for text in args.only)):
                x = _matrix(rows, ids, feature)
                path = folder / (name.replace(" ", "_").replace(",", "").replace("+", "") + ".npz")
                np.savez(path, ids=np.array(ids), tokens=x.astype(np.float32))
                print(f"wrote {path} {x.shape}")
        return 0

    def scores(pred, y, c) -> dict:
        return {corpus: round(evaluate(y[c == corpus], pred[c == corpus], MER2025_LABELS).weighted_f1, 4) for corpus in ("ravdess", "emodb")}

    if args.test:
        t_ids, t_y, t_g, t_c = table(test)
        results = {}
        for name, feature, how, windows, copies in (
                ("anchor: final layer, 12 s, global standardisation", "anchor", "global", 0, 0),
                ("layers 0+1+2 in one pass over the clip, speaker-normalised head", (0, 1, 2), "live", 8.0, 0),
                (f"chosen: {args.feature}, {args.live_copies} live copies, prior {args.prior_windows:g}",
                 FEATURE_SETS[args.feature], "live", args.prior_windows, args.live_copies)):
            x, x_t = _matrix(rows, ids, feature), _matrix(rows, t_ids, feature)
            runs = [scores(fit_predict(x, y, g, x_t, t_g, how, windows, copies, seed), t_y, t_c) for seed in range(5)]
            results[name] = {corpus: round(float(np.mean([r[corpus] for r in runs])), 4) for corpus in ("ravdess", "emodb")}
            results[name]["orders"] = runs
        print_table([{"setting": k, **v} for k, v in results.items()],
                    [("setting", "test (live protocol, mean of 5 clip orders)", ""), ("ravdess", "RAVDESS 15-18", ".4f"),
                     ("emodb", "EmoDB 03/14", ".4f")])
        path = write_report(args.json, {"benchmark": "speech_choice", "split": "test", "n": len(t_ids), "results": results,
                                        "peak_rss_mb": peak_rss_mb()})
        print(f"wrote {path}")
        return 0

    fold = _folds(g, c)
    settings = [("anchor: final layer, 12 s, global standardisation", "anchor", "global", 0, 0)]
    settings += [(f"{name}, speaker-normalised head", feature, "live", 8.0, 0) for name, feature in FEATURE_SETS.items()]
    settings += [(f"{name}, + 2 live copies", feature, "live", 8.0, 2) for name, feature in FEATURE_SETS.items()]
    settings += [(f"{PRIOR_SET}, speaker-normalised head, prior {w:g} windows", FEATURE_SETS[PRIOR_SET], "live", w, 0)
                 for w in (2.0, 4.0, 16.0)]
    if args.only:
        settings = [s for s in settings if any(text in s[0] for text in args.only)]
    results = {}
    for name, feature, how, windows, copies in settings:
        x = _matrix(rows, ids, feature)
        pred = np.empty_like(y)
        for k in range(fold.max() + 1):
            held = fold == k
            pred[held] = fit_predict(x[~held], y[~held], g[~held], x[held], g[held], how, windows, copies, seed=k)
        results[name] = scores(pred, y, c)
        print(f"  {name}: {results[name]}", flush=True)
    print_table([{"setting": k, **v} for k, v in results.items()],
                [("setting", "5-fold CV on training speakers, live protocol", ""), ("ravdess", "RAVDESS", ".4f"),
                 ("emodb", "EmoDB", ".4f")])
    path = write_report(args.json, {"benchmark": "speech_choice", "split": "5-fold CV on the training speakers",
                                    "n": len(ids), "results": results, "peak_rss_mb": peak_rss_mb()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
