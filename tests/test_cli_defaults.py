"""The command line states no defaults of its own: with no flags, every command's options equal the option
classes' defaults, and `--help` shows those defaults, read from the classes."""
from __future__ import annotations

import dataclasses

import pytest

from ecmf_edge.cli import build_parser
from ecmf_edge.cli.common import default_of, given, llm_options, ray_options, with_default


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_run_and_serve_pass_only_what_was_given():
    from ecmf_edge.capture.microphone import MicrophoneOptions
    from ecmf_edge.cli.run import recognizer_options, stream_options
    from ecmf_edge.recognizer import RecognizerOptions
    from ecmf_edge.stream.options import StreamOptions

    for command in ("run", "serve"):
        args = parse(command)
        assert stream_options(args) == StreamOptions()
        # unattended runs ride out a replugged microphone: the one setting the command adds
        assert recognizer_options(args) == RecognizerOptions(microphone_options=MicrophoneOptions(max_reconnects=3))
    args = parse("run", "--fusion-hz", "5", "--face-hz", "0", "--focus", "2", "--calibrate", "3", "--backend", "onnxruntime",
                 "--no-text")
    assert stream_options(args) == StreamOptions(fusion_hz=5.0, face_path_hz=None, focus=2, calibrate_s=3.0)
    chosen = recognizer_options(args)
    assert chosen.backend == "onnxruntime" and chosen.text is False and chosen.stream == stream_options(args)
    assert stream_options(parse("run", "--face-hz", "15")).face_path_hz == 15.0


def test_label_options_are_label_options_defaults():
    from ecmf_edge.batch.label import LabelOptions
    from ecmf_edge.cli.label import label_options

    assert label_options(parse("label", "clips/")) == LabelOptions()
    assert label_options(parse("label", "clips/", "--backend", "auto", "--step", "0.5")) == LabelOptions(step=0.5)
    chosen = label_options(parse("label", "clips/", "--llm", "--format", "jsonl", "--no-plot"))
    assert chosen == LabelOptions(format="jsonl", plot=False, use_llm=True)


def test_features_and_llm_flags_are_the_option_classes_defaults():
    from ecmf_edge.cli.media import feature_options
    from ecmf_edge.features import FeatureOptions
    from ecmf_edge.text.llm_context import LlmOptions

    args = parse("features", "--out", "f.npz")
    assert feature_options(args) == FeatureOptions()
    assert llm_options(args) == LlmOptions()
    assert llm_options(parse("transcribe", "--audio", "a.wav", "--llm")) == LlmOptions()
    args = parse("features", "--out", "f.npz", "--fps", "2", "--llm", "m.gguf", "--llm-max-tokens", "12")
    assert feature_options(args) == FeatureOptions(sample_fps=2.0)
    assert llm_options(args) == LlmOptions(model_path="m.gguf", max_tokens=12)


def test_train_options_are_the_trainers_defaults():
    pytest.importorskip("torch")
    from ecmf_edge.batch.ray_executor import RayOptions
    from ecmf_edge.cli.train import fusion_options
    from ecmf_edge.train.fusion.head import HeadConfig
    from ecmf_edge.train.fusion.train import TrainOptions

    args = parse("train")
    assert fusion_options(args) == (HeadConfig(), TrainOptions())
    assert ray_options(args) is None
    assert ray_options(parse("train", "--ray")) == RayOptions()
    assert fusion_options(parse("train", "--epochs", "3", "--layers", "2")) == (HeadConfig(layers=2), TrainOptions(epochs=3))


@pytest.mark.parametrize("command, owner, field, shown", [
    (["run"], "ecmf_edge.stream.options:StreamOptions", "fusion_hz", "--fusion-hz FUSION_HZ"),
    (["run"], "ecmf_edge.stream.options:StreamOptions", "max_people", "--max-people MAX_PEOPLE"),
    (["serve"], "ecmf_edge.recognizer:RecognizerOptions", "precision", "--precision {fp32,fp16,int8}"),
    (["label"], "ecmf_edge.batch.label:LabelOptions", "step", "--step STEP"),
    (["features"], "ecmf_edge.features:FeatureOptions", "sample_fps", "--fps FPS"),
    (["features"], "ecmf_edge.text.llm_context:LlmOptions", "max_tokens", "--llm-max-tokens LLM_MAX_TOKENS"),
    (["train"], "ecmf_edge.train.fusion.head:HeadConfig", "d_model", "--d-model D_MODEL"),
])
def test_help_shows_the_classes_defaults(capsys, command, owner, field, shown):
    value = default_of(owner, field)
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert shown in text
    after = text[text.rindex(shown):]  # the option's help, not the usage line
    assert f"(default: {value:g})" in after[:300] if isinstance(value, float) else f"(default: {value})" in after[:300]


def test_defaults_are_read_from_fields_and_keywords():
    @dataclasses.dataclass(frozen=True)
    class Options:
        rate: float = 2.5
        names: tuple = dataclasses.field(default_factory=lambda: ("a",))

    def run(x, *, workers: int = 3) -> None: ...

    assert default_of(Options, "rate") == 2.5 and default_of(Options, "names") == ("a",)
    assert default_of(run, "workers") == 3
    with pytest.raises(AttributeError):
        default_of(run, "x")
    assert with_default("rate", Options, "rate") % {} == "rate (default: 2.5)"
    assert with_default("where", "no_such_module_xyz:Options", "path") % {} == "where (default: Options.path)"
    import argparse

    args = argparse.Namespace(a=None, b=0, c="x")
    assert given(args, a="alpha", b="beta", c="gamma") == {"beta": 0, "gamma": "x"}
