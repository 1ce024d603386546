"""A tiny affect-aware tutor: it notices when the learner looks or sounds worried or sad, and adapts.

Run it on recordings (or live with --camera 0):

    python examples/tutor.py --video lesson.mp4 --audio lesson.wav
    python examples/tutor.py --video lesson.mp4 --no-realtime      # as fast as the machine allows
    python examples/tutor.py --camera 0                             # webcam + default microphone

It uses only the public API of ecmf-edge: ``Recognizer``, ``stream(...)``, ``on_label_change``
and the fields of ``EmotionEvent``. The tutor keeps a short memory of the learner's state
and, when negative affect persists, slows down, offers a hint, or suggests a break.
"""
from __future__ import annotations

import argparse
import sys
from collections import deque
from dataclasses import dataclass, field

from ecmf_edge import EcmfError, EmotionEvent, Recognizer

NEGATIVE = {"worried", "sad"}
STEPS = [
    "Step 1: a fraction a/b means a parts out of b equal parts.",
    "Step 2: to add a/b + c/b, keep b and add the tops: (a + c)/b.",
    "Step 3: with different bottoms, first rewrite both over a common multiple.",
    "Step 4: try it: 1/3 + 1/6 = ?",
]
HINTS = [
    "Hint: picture a pizza cut into b slices; a/b is a of those slices.",
    "Hint: 2/5 + 1/5 is 3 slices out of 5, so 3/5.",
    "Hint: 1/2 is the same as 2/4 and 3/6.",
    "Hint: 1/3 = 2/6, so 1/3 + 1/6 = 2/6 + 1/6.",
]


@dataclass
class Tutor:
    """Reacts to the learner's affect; all decisions come from the events it is shown."""

    # Seconds of negative affect (within the recent window) before the tutor reacts.
    patience_s: float = 1.0
    # Seconds of history the tutor looks back over.
    window_s: float = 3.0
    step: int = 0
    hints_given: int = 0
    log: list[str] = field(default_factory=list)
    _recent: deque = field(default_factory=deque)
    _last_action_t: float = 0.0

    def say(self, t: float, text: str) -> None:
        line = f"[{t:6.1f}s] tutor: {text}"
        self.log.append(line)
        print(line, flush=True)

    def on_event(self, event: EmotionEvent) -> None:
        """Called for every event (10 per second by default)."""
        self._recent.append(event)
        while self._recent and event.timestamp - self._recent[0].timestamp > self.window_s:
            self._recent.popleft()
        if event.timestamp - self._last_action_t < self.window_s:
            return  # give the learner time after each intervention
        negative = [e for e in self._recent if e.label in NEGATIVE and e.confidence >= 0.35]
        seen_s = len(negative) / max(len(self._recent), 1) * (self._recent[-1].timestamp - self._recent[0].timestamp)
        if seen_s >= self.patience_s:
            self._intervene(event, negative)
        elif event.timestamp - self._last_action_t >= 2 * self.window_s and self.step < len(STEPS) - 1:
            self.step += 1
            self._last_action_t = event.timestamp
            self.say(event.timestamp, STEPS[self.step])

    def _intervene(self, event: EmotionEvent, negative: list[EmotionEvent]) -> None:
        self._last_action_t = event.timestamp
        why = max(event.modality_weights, key=event.modality_weights.get) if event.modality_weights else "signals"
        if self.hints_given < 2:
            self.hints_given += 1
            self.say(event.timestamp, f"You seem {negative[-1].label} (mostly from your {why}). {HINTS[self.step]}")
        else:
            self.hints_given = 0
            self.say(event.timestamp, "This is a tricky one. Shall we take a one-minute break and come back to it?")

    def on_label_change(self, event: EmotionEvent) -> None:
        """Called only when the recognised label changes: a compact trace of the session."""
        said = f' (heard: "{event.transcript}")' if event.transcript else ""
        print(f"[{event.timestamp:6.1f}s] learner looks {event.label or 'absent'}"
              f" ({', '.join(event.present) or 'no signal'}){said}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="An affect-aware tutoring loop on ecmf-edge.")
    parser.add_argument("--video", help="video file of the learner")
    parser.add_argument("--audio", help="WAV file of the learner's speech")
    parser.add_argument("--camera", type=int, help="camera index instead of a video file")
    parser.add_argument("--mic", help="microphone (with --camera); default: the system default")
    parser.add_argument("--no-realtime", action="store_true", help="process files as fast as possible")
    parser.add_argument("--bundle", default="default", help="model bundle name or folder")
    parser.add_argument("--llm", action="store_true", help="enrich transcripts with the local LLM's context (off by default)")
    args = parser.parse_args(argv)
    if not (args.video or args.audio or args.camera is not None):
        parser.error("give --video and/or --audio, or --camera")
    tutor = Tutor()
    print(f"[{0:6.1f}s] tutor: {STEPS[0]}", flush=True)
    try:
        with Recognizer(bundle=args.bundle, use_llm=args.llm, on_event=tutor.on_event,
                        on_label_change=tutor.on_label_change) as rec:
            microphone = (args.mic or "default") if args.camera is not None and not args.audio else None
            stream = rec.stream(camera=args.camera, video=args.video, microphone=microphone, audio=args.audio,
                                realtime=not args.no_realtime)
            with stream:
                stream.run()
    except EcmfError as exc:
        print(f"tutor: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"session over: {len(tutor.log)} tutor messages, {tutor.hints_given} hint(s) in the current round")
    return 0


if __name__ == "__main__":
    sys.exit(main())
