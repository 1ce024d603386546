"""``ecmf-edge label``: recorded sessions -> a timeline per file, a summary, and a picture per file.

Files and folders (searched recursively for media files) are played through the same stream
as live input, in fast playback: every frame and audio sample is processed, so a file gives
the same timeline on every run and with any number of workers. A video's own sound is its
audio. Each finished file leaves ``<name>.timeline.csv`` (or ``.jsonl``; ``<name>.people.csv`` with a row
per tracked person and step when faces were seen), ``<name>.png`` and
``<name>.summary.json``; the last one marks the file as done, so a re-run (after Ctrl-C, or
with more files) skips it. A file that fails is recorded with its one-line error and the
others go on. Work is spread over local processes (``workers``) or a Ray cluster
(:mod:`ecmf_edge.batch.ray_executor`).
"""
from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecmf_edge.audio.media import MEDIA_SUFFIXES, probe_media
from ecmf_edge.errors import EcmfError, InputError
from ecmf_edge.modalities import MODALITIES
from ecmf_edge.timeline import SUMMARY_COLUMNS, ClipResult, ClipSummary, check_step, people_columns, timeline_columns

__all__ = ["LabelOptions", "label_clip", "label_paths", "find_media", "FORMATS"]

logger = logging.getLogger("ecmf_edge")

FORMATS = ("csv", "jsonl")
SUMMARY_SUFFIX = ".summary.json"


@dataclass(frozen=True)
class LabelOptions:
    """How recorded files are labelled."""

    # Timeline step, seconds.
    step: float = 1.0
    # Timeline and summary file format: "csv" or "jsonl".
    format: str = "csv"
    # Draw a PNG per file.
    plot: bool = True
    # The Recognizer each worker opens: bundle name or folder, backend, precision, LLM on/off.
    bundle: str = "default"
    backend: str = "onnxruntime"
    precision: str = "fp32"
    use_llm: bool = False
    # A GGUF for the LLM when it is on (None: the default model).
    llm_path: str | None = None
    # ONNX Runtime threads per model inside each worker.
    model_threads: int = 1

    def __post_init__(self) -> None:
        check_step(self.step)
        if self.format not in FORMATS:
            raise InputError(f"format={self.format!r} is invalid: use one of {', '.join(FORMATS)}")


def label_clip(recognizer: Any, path: str | Path, step: float = 1.0, on_event: Callable | None = None) -> ClipResult:
    """Label one recorded file with an open :class:`~ecmf_edge.Recognizer` (see ``Recognizer.label_file``)."""
    return recognizer.label_file(path, step, on_event=on_event)


def find_media(paths: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """(file, output name) for every file given and every media file under every folder given, sorted.
    The output name is the path relative to the folder given (``/`` replaced by ``__``), so files of the
    same name in different folders do not collide.

    Raises:
        InputError: a path that does not exist, or nothing to label.
    """
    found: dict[Path, str] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES):
                found.setdefault(file.resolve(), "__".join(file.relative_to(path).parts))
        elif path.is_file():
            found.setdefault(path.resolve(), path.name)
        else:
            raise InputError(f"{path} does not exist: give media files or folders that hold them")
    if not found:
        raise InputError(f"no media files found ({', '.join(MEDIA_SUFFIXES[:8])} ...): check the paths")
    names: dict[str, int] = {}
    out = []
    for file, name in sorted(found.items(), key=lambda item: item[1]):
        count = names.get(name, 0)
        names[name] = count + 1
        out.append((file, name if count == 0 else f"{name}.{count}"))
    return out


# -- writing ----------------------------------------------------------------------------------------
def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _timeline_text(result: ClipResult, fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(row.to_dict(), ensure_ascii=False) + "\n" for row in result.rows)
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(timeline_columns(result.labels))
    for r in result.rows:
        writer.writerow([r.start, r.end, r.label or "", r.confidence, *(r.probabilities.get(label, "") for label in result.labels),
                         *(r.modality_weights.get(m, "") for m in MODALITIES), "+".join(r.present), r.transcript,
                         r.language, r.text_absent_reason])
    return buffer.getvalue()


def _people_text(result: ClipResult, fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(row.to_dict(), ensure_ascii=False) + "\n" for row in result.people)
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(people_columns(result.labels))
    for r in result.people:
        writer.writerow([r.start, r.end, r.person, r.label, r.confidence,
                         *(r.probabilities.get(label, "") for label in result.labels), r.seen, r.focus])
    return buffer.getvalue()


def write_clip(result: ClipResult, out: Path, name: str, fmt: str, plot: bool) -> None:
    """Timeline (and the per-person timeline when faces were seen), picture, then the summary record that
    marks the file as done."""
    _atomic_write(out / f"{name}.timeline.{fmt}", _timeline_text(result, fmt))
    if result.people:
        _atomic_write(out / f"{name}.people.{fmt}", _people_text(result, fmt))
    if plot:
        from ecmf_edge.batch.plot import timeline_png

        tmp = out / f"{name}.png.tmp.png"
        timeline_png(result, tmp)
        os.replace(tmp, out / f"{name}.png")
    _atomic_write(out / f"{name}{SUMMARY_SUFFIX}", json.dumps(result.summary.to_dict(), ensure_ascii=False) + "\n")


def _failed(file: Path, name: str, out: Path, error: str) -> ClipSummary:
    summary = ClipSummary(str(file), None, 0.0, dict.fromkeys(MODALITIES, 0.0), 0.0, "", 0.0, status=error)
    _atomic_write(out / f"{name}.error.json", json.dumps(summary.to_dict(), ensure_ascii=False) + "\n")
    return summary


def _write_summary(summaries: Sequence[ClipSummary], out: Path, fmt: str) -> Path:
    path = out / f"summary.{fmt}"
    if fmt == "jsonl":
        _atomic_write(path, "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in summaries))
        return path
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for s in summaries:
        row = s.to_dict()
        writer.writerow(["" if row[key] is None else row[key] for key in SUMMARY_COLUMNS])
    _atomic_write(path, buffer.getvalue())
    return path


# -- running ----------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def open_recognizer(options: LabelOptions):
    """The Recognizer one worker labels with."""
    from ecmf_edge.recognizer import Recognizer

    llm_options = None
    if options.use_llm and options.llm_path:
        from ecmf_edge.text.llm_context import LlmOptions

        llm_options = LlmOptions(model_path=options.llm_path)
    return Recognizer(backend=options.backend, precision=options.precision, bundle=options.bundle,
                      use_llm=options.use_llm, llm_options=llm_options, model_threads=options.model_threads)


def open_recognizer_or_error(options: LabelOptions):
    """A Recognizer, or the one-line error that stopped it from loading (so that a worker on another
    machine reports it in every file's status row instead of dying unseen)."""
    try:
        return open_recognizer(options)
    except EcmfError as exc:
        return f"cannot load the models: {exc}"


def label_one(recognizer: Any, path: str, step: float, on_event: Callable | None = None) -> dict:
    """{"file": path, "result": ClipResult dict} or {"file": path, "error": one line}."""
    if isinstance(recognizer, str):
        return {"file": path, "error": recognizer}
    try:
        return {"file": path, "result": label_clip(recognizer, path, step, on_event=on_event).to_dict()}
    except EcmfError as exc:
        return {"file": path, "error": str(exc)}
    except Exception as exc:  # one bad file must not stop the others
        return {"file": path, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}


def label_on_ray(files: Sequence[tuple[Path, str]], options, *, address: str | None = None, actors: int = 1,
                 cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0) -> Iterator[tuple[tuple[Path, str], dict]]:
    """Yield ((file, name), {"result": ClipResult dict} or {"error": one line}) as actors finish files.

    Raises:
        DependencyError: Ray is not installed.
        DeviceError: the cluster at ``address`` does not answer.
    """
    from functools import partial

    from ecmf_edge.batch.ray_executor import ray_map

    for index, outcome in ray_map(partial(open_recognizer_or_error, options), partial(label_one, step=options.step),
                                  [str(file) for file, _ in files], address=address, actors=actors,
                                  cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor):
        yield files[index], outcome


def _worker_init(options: LabelOptions) -> None:
    _WORKER["recognizer"] = open_recognizer(options)


def _worker_label(path: str, step: float) -> dict:
    return label_one(_WORKER["recognizer"], path, step)


class LabelledFiles(list):
    """The summary rows of every file of a ``label`` run (a list of :class:`ClipSummary`), and how many of them
    were already done by an earlier run (``skipped``: read back, not labelled again)."""

    def __init__(self, summaries: Iterable[ClipSummary], skipped: int) -> None:
        super().__init__(summaries)
        self.skipped = skipped


def label_paths(paths: Iterable[str | Path], out_dir: str | Path, options: LabelOptions = LabelOptions(), *,
                workers: int = 1, ray_address: str | None = None, use_ray: bool = False,
                cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0, progress: bool = True) -> LabelledFiles:
    """Label every file (see module doc); returns the summary rows of all files, finished ones included
    (``.skipped`` of them were done before this run).

    Raises:
        InputError: bad paths or options.
        ModelError: the bundle cannot be loaded.
        DependencyError: Ray (``use_ray``) or matplotlib (plots) is not installed.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers={workers!r} is invalid: use 1 or more")
    files = find_media(paths)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".ecmf-edge-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write to the output folder {out} ({exc.strerror or type(exc).__name__}): "
                         "choose another --out") from None
    if options.plot:
        from ecmf_edge.batch.plot import require_matplotlib

        require_matplotlib()  # fail before any work, not after the first file
    if use_ray:
        from ecmf_edge.batch.ray_executor import check_address, require_ray

        require_ray()
        check_address(ray_address)  # a cluster that does not answer fails here, before any work
    todo = [(f, n) for f, n in files if not (out / f"{n}{SUMMARY_SUFFIX}").is_file()]
    skipped = len(files) - len(todo)
    if skipped:
        logger.info("%d of %d files already labelled in %s: skipped", skipped, len(files), out)
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="label", unit="file", disable=not progress or not todo)

    def finish(file: Path, name: str, outcome: dict) -> None:
        if "result" in outcome:
            result = ClipResult.from_dict(outcome["result"])
            write_clip(result, out, name, options.format, options.plot)
            (out / f"{name}.error.json").unlink(missing_ok=True)
        else:
            _failed(file, name, out, outcome["error"])
            logger.warning("%s: %s (the other files go on)", file, outcome["error"])
        bar.update(1)

    try:
        if use_ray:
            if todo and not ray_address:
                open_recognizer(options).close()  # a bundle that cannot load fails here, in one line
            for (file, name), outcome in label_on_ray(todo, options, address=ray_address, actors=workers,
                                                      cpus_per_actor=cpus_per_worker, gpus_per_actor=gpus_per_worker):
                finish(file, name, outcome)
        elif workers == 1 or len(todo) <= 1:
            if todo:
                _worker_init(options)
                try:
                    for file, name in todo:
                        with _media_bar(file, progress and len(todo) >= 1) as inner:
                            outcome = label_one(_WORKER["recognizer"], str(file), options.step,
                                                on_event=lambda e, bar=inner: bar.update(round(e.timestamp - bar.n, 1)))
                        finish(file, name, outcome)
                finally:
                    _WORKER.pop("recognizer").close()
        else:
            import multiprocessing

            open_recognizer(options).close()  # a bundle that cannot load fails here, in one line, not in every worker
            context = multiprocessing.get_context("spawn")  # no fork of a process with model threads
            with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init,
                                     initargs=(options,)) as pool:
                futures = {pool.submit(_worker_label, str(file), options.step): (file, name) for file, name in todo}
                for future in as_completed(futures):
                    finish(*futures[future], future.result())
    finally:
        bar.close()
        summaries = [_read_summary(out, file, name) for file, name in files]
        _write_summary([s for s in summaries if s is not None], out, options.format)
    return LabelledFiles((s for s in summaries if s is not None), skipped)


def _media_bar(file: Path, show: bool):
    """A progress bar within one file, in seconds of media (shown for files longer than a minute)."""
    from tqdm import tqdm

    try:
        duration = probe_media(file).duration
    except EcmfError:
        duration = 0.0
    return tqdm(total=round(duration, 1), desc=file.name[:30], unit="s", leave=False, position=1,
                disable=not show or duration < 60, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s media")


def _read_summary(out: Path, file: Path, name: str) -> ClipSummary | None:
    for path in (out / f"{name}{SUMMARY_SUFFIX}", out / f"{name}.error.json"):
        if path.is_file():
            try:
                return ClipSummary.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError, KeyError):
                return None
    return None

