"""`ecmf-edge bench` on a tiny input: well-formed JSON, skipped combinations with reasons, PNGs, README section.

No timing thresholds here: the figures depend on the machine. The tests check that the
benchmark runs end to end and that what it writes is complete and consistent.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecmf_edge.bench.combos import plan_combos
from ecmf_edge.bench.plots import cpu_share_png, latency_cdf_png, stage_bars_png
from ecmf_edge.bench.readme import BEGIN, END, render_section, update_file
from ecmf_edge.bench.replay import build_replay_clip
from ecmf_edge.bench.report import check_report, read_json
from ecmf_edge.bench.runner import BenchOptions
from ecmf_edge.bench.stages import STAGES
from ecmf_edge.cli import main
from ecmf_edge.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, bundle_root):
    """One quick benchmark over the test bundle (fp32 only, so int8 is skipped), LLM off."""
    tmp = tmp_path_factory.mktemp("bench")
    patch = pytest.MonkeyPatch()
    patch.setenv("ECMF_EDGE_ENGINES", str(tmp / "engines"))  # the replay clip is cached here, not in the user's cache
    try:
        code = main(["bench", "--quick", "--seconds", "2", "--backend", "auto,onnxruntime", "--backend", "tensorrt",
                     "--precision", "fp32", "--precision", "int8", "--bundle", str(bundle_root),
                     "--out", str(tmp / "out"), "--readme", str(tmp / "README.md"), "--streams", "2"])
    finally:
        patch.undo()
    return code, tmp / "out", tmp / "README.md"


def _finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_quick_bench_writes_a_well_formed_report(quick_run):
    code, out, _ = quick_run
    assert code == 0
    report = read_json(out / "bench.json")  # raises when the shape is wrong
    assert report["machine"]["usable_cores"] >= 1 and report["versions"]["onnxruntime"]
    assert report["clip"]["seconds"] == 2.0 and all(SHA256.match(h) for h in report["clip"]["sha256"].values())
    configs = {c["key"]: c for c in report["configurations"]}
    assert set(configs) == {f"{b}-{p}" for b in ("auto", "onnxruntime", "tensorrt") for p in ("fp32", "int8")}
    fp32 = configs["onnxruntime-fp32"]
    assert fp32["status"] == "measured"
    e2e = fp32["end_to_end"]
    lat = e2e["capture_to_event"]
    assert lat["n"] >= 10 and all(_finite_positive(lat[k]) for k in ("p50_ms", "p95_ms", "p99_ms"))
    assert lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert _finite_positive(e2e["events_per_s"]["median"]) and e2e["frames"]["expected"] == 60
    assert 0 <= e2e["frames"]["dropped_share"] <= 1 and _finite_positive(e2e["cpu_percent_of_one_core"]["median"])
    assert len(e2e["latency_samples_ms"]) == lat["n"]
    assert _finite_positive(fp32["peak_rss_mb"]) and fp32["peak_rss_mb"] >= fp32["peak_rss_mb_stream"]
    stages = fp32["stages"]
    assert list(stages) == list(STAGES)
    assert stages["llm"] == {"skipped": "off (the default; --llm times it)"}
    for name in set(STAGES) - {"llm"}:
        assert _finite_positive(stages[name]["p50_ms"]) and stages[name]["p95_ms"] >= stages[name]["p50_ms"], name
    files = report["bundles"]["onnxruntime-fp32"]["files"]
    assert files and all(SHA256.match(h) for h in files.values())


def test_unavailable_combinations_are_skipped_with_a_reason(quick_run):
    report = read_json(quick_run[1] / "bench.json")
    configs = {c["key"]: c for c in report["configurations"]}
    for key in ("onnxruntime-int8", "tensorrt-fp32", "tensorrt-int8"):
        assert configs[key]["status"] == "skipped" and configs[key]["reason"].strip(), key
    assert "int8" in configs["onnxruntime-int8"]["reason"]  # a folder bundle of another precision
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "tensorrt" in configs["tensorrt-fp32"]["reason"].lower()
    auto = configs["auto-fp32"]
    if auto["status"] == "skipped":
        assert auto["same_as"] == "onnxruntime-fp32"


def test_peers_and_scaling_are_reported(quick_run):
    report = read_json(quick_run[1] / "bench.json")
    peers = report["peers"]
    assert peers["inputs"]["faces"] == 24 and peers["ours"]["onnxruntime-fp32"]["per_face"]["n"] == 24
    assert all(p["reason"].strip() for p in peers["unavailable"])
    names = [p["name"] for p in peers["peers"]] + [p["name"] for p in peers["unavailable"]]
    assert any(n.startswith("fer") for n in names) and "hsemotion-onnx" in names
    for peer in peers["peers"]:
        agreement = peer["agreement"]["onnxruntime-fp32"]["per_face"]
        assert agreement["compared"] == 24
        # our face encoder and fer's network both learnt FER2013 (ours also in-the-wild faces): on these faces they
        # agree on most (chance with six classes is about 0.17, so a broken label mapping shows).
        assert agreement["top1_agreement"] >= 0.5
        assert _finite_positive(peer["per_face"]["p50_ms"])
    tables = report["scaling"]["tables"]
    assert [r["input"] for r in tables["frame_size"]] == ["320x240", "640x480", "1280x720", "1920x1080"]
    assert [r["faces_found"] for r in tables["faces"]] == [0, 1, 2, 4]
    assert len(tables["audio_window"]) == 5 and len(tables["transcript"]) == 4
    assert all(_finite_positive(r["audio_encoder_p50_ms"]) for r in tables["audio_window"])


def test_plots_and_tables_are_written(quick_run):
    import cv2

    out = quick_run[1]
    report = read_json(out / "bench.json")
    streams = report["streams"]
    assert 1 <= len(streams["rows"]) <= 2 and streams["asked"] == 2 and 0 <= streams["holds"] <= 2
    assert [r["streams"] for r in streams["rows"]] == list(range(1, len(streams["rows"]) + 1))
    assert all(len(r["per_stream"]) == r["streams"] and isinstance(r["keeps_up"], bool) for r in streams["rows"])
    assert {s["stream"] for s in streams["rows"][-1]["per_stream"]} == {f"bench-{k}" for k in range(len(streams["rows"]))}
    assert report["plots"] == {"latency_png": "latency.png", "stages_png": "stages.png", "cpu_png": "cpu.png",
                               "streams_png": "streams.png"}
    for name in report["plots"].values():
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] >= 200 and image.shape[1] >= 600 and image.std() > 10
    text = (out / "bench.txt").read_text()
    assert "onnxruntime-fp32" in text and "tensorrt-fp32:" in text and "face_detect" in text
    shares = next(c for c in report["configurations"] if c["status"] == "measured")["end_to_end"]["cpu_per_stream_s"]
    assert {"face", "frame", "video", "total", "other"} <= set(shares) and shares["total"] > 0
    assert "CPU per stream second" in text and "streams at once" in text and "this machine holds" in text


def test_bench_streams_zero_is_a_one_line_error(capsys):
    code = main(["bench", "--quick", "--streams", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--streams 0" in err and err.strip().count("\n") == 0


def test_readme_section_is_generated_from_the_json(quick_run, tmp_path):
    out, readme = quick_run[1], quick_run[2]
    report = read_json(out / "bench.json")
    section = readme.read_text()
    assert section.startswith(BEGIN) and section.rstrip().endswith(END)
    p50 = report["configurations"][[c["key"] for c in report["configurations"]].index("onnxruntime-fp32")]
    assert f"| onnxruntime-fp32 | {p50['end_to_end']['capture_to_event']['p50_ms']:.1f} |" in section
    assert report["machine"]["cpu"] in section and "`tensorrt-int8`" in section
    # Replacing keeps what surrounds the markers, and running twice changes nothing.
    target = tmp_path / "README.md"
    target.write_text(f"# Title\n\nintro\n\n{BEGIN}\nold figures\n{END}\n\n## After\n")
    script = [sys.executable, str(ROOT / "benchmarks" / "readme_results.py"), str(out / "bench.json"), "--to", str(target)]
    subprocess.run(script, check=True, capture_output=True)
    first = target.read_text()
    subprocess.run(script, check=True, capture_output=True)
    assert target.read_text() == first
    assert first.startswith("# Title\n\nintro\n\n") and first.endswith("\n\n## After\n") and "old figures" not in first
    assert first.count(BEGIN) == first.count(END) == 1 and render_section(report, str(out / "bench.json")) in first


def test_broken_markers_and_reports_are_refused(tmp_path, quick_run):
    target = tmp_path / "README.md"
    target.write_text(f"{END}\nx\n{BEGIN}\n")
    with pytest.raises(InputError, match="broken benchmark section"):
        update_file(target, "section")
    report = json.loads((quick_run[1] / "bench.json").read_text())
    skipped = next(c for c in report["configurations"] if c["status"] == "skipped")
    skipped["reason"] = " "
    with pytest.raises(InputError, match="carries no reason"):
        check_report(report)
    with pytest.raises(InputError, match="schema"):
        check_report({"schema": "other"})
    with pytest.raises(InputError, match="does not exist"):
        read_json(tmp_path / "missing.json")


def test_options_and_combinations_are_validated(capsys):
    assert main(["bench", "--backend", "cuda"]) == 2
    assert "unknown backend 'cuda'" in capsys.readouterr().err
    with pytest.raises(InputError, match="seconds"):
        BenchOptions(seconds=0.5)
    with pytest.raises(InputError, match="repeats"):
        BenchOptions(repeats=0)
    combos = plan_combos(["all"], ["fp16"])
    assert [c.key for c in combos] == ["auto-fp16", "onnxruntime-fp16", "tensorrt-fp16"]


def test_replay_clip_is_deterministic(tmp_path):
    import cv2

    a = build_replay_clip(1, tmp_path / "a")
    b = build_replay_clip(1, tmp_path / "b")
    assert a.sha256 == b.sha256 and a.video.parent.name == b.video.parent.name
    assert build_replay_clip(1, tmp_path / "a").video == a.video  # reused from the cache
    cap = cv2.VideoCapture(str(a.video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 30 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0)
    cap.release()
    with pytest.raises(InputError, match="seconds"):
        build_replay_clip(0.1, tmp_path)


def test_plots_draw_any_series(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    cdf = latency_cdf_png({"a": rng.gamma(4, 8, 200), "b": [5.0]}, tmp_path / "cdf.png")
    bars = stage_bars_png({"a": {"vad": (0.08, 0.1), "asr": (1500.0, 1700.0)}, "b": {"vad": (0.05, 0.05)}},
                          tmp_path / "bars.png")
    cpu = cpu_share_png({"a": {"face": 0.2, "audio": 0.1, "other": 0.3, "total": 0.6}, "b": {"face": 0.1}},
                        tmp_path / "cpu.png")
    for path in (cdf, bars, cpu):
        image = cv2.imread(str(path))
        assert image is not None and image.std() > 10


def test_first_utterance_stops_at_the_first_pause():
    from ecmf_edge._assets import asset_path
    from ecmf_edge.audio.io import load_audio
    from ecmf_edge.bench.stages import first_utterance

    speech = load_audio(asset_path("speech_en.wav"))
    voiced = np.flatnonzero(np.abs(speech) > 0.01)
    pcm = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(16000, np.float32), speech])
    utterance = first_utterance(pcm)
    assert abs(utterance.size - (voiced[-1] - voiced[0])) <= 2 * 320  # within two 20 ms frames
