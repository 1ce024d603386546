"""Block-by-block resampling of a live signal to 16 kHz with :func:`ecmf_edge.audio.io.resample`.

Resampling each microphone block on its own would put clicks at every block edge
(the sinc kernel would see zeros beyond it). :class:`StreamingResampler` keeps enough
past input to give every output sample its full kernel, and only emits output samples
whose right-hand context has arrived, so the concatenated output equals resampling
the whole signal at once (up to float rounding).
"""
from __future__ import annotations

from math import gcd

import numpy as np

from ecmf_edge.audio.io import SAMPLE_RATE, resample
from ecmf_edge.errors import InputError

__all__ = ["StreamingResampler"]


class StreamingResampler:
    """Feed blocks at ``rate_in`` into :meth:`process`; get 16 kHz (or ``rate_out``) blocks back."""

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE, half_width: int = 16) -> None:
        """Raises:
            InputError: a rate that is not a positive integer.
        """
        if int(rate_in) <= 0 or int(rate_out) <= 0 or int(rate_in) != rate_in or int(rate_out) != rate_out:
            raise InputError(f"sample rates must be positive integers, got {rate_in} -> {rate_out}")
        self.rate_in, self.rate_out = int(rate_in), int(rate_out)
        g = gcd(self.rate_in, self.rate_out)
        self._period_in, self._period_out = self.rate_in // g, self.rate_out // g
        self._ratio = self.rate_out / self.rate_in
        self._hw = int(half_width)
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # input index of _buf[0]
        self._next_out = 0  # index of the next output sample to emit

    def _aligned_start(self, out_index: int) -> int:
        """Latest input index, on a rate period boundary, from which ``out_index`` gets its full kernel."""
        need = int(np.floor(out_index / self._ratio)) - self._hw + 1
        return max(0, need // self._period_in * self._period_in)

    def process(self, block: np.ndarray) -> np.ndarray:
        """Resample the next block; returns every output sample that is now complete (may be empty)."""
        x = np.asarray(block, dtype=np.float32).reshape(-1)
        if self.rate_in == self.rate_out:
            return x.copy()
        self._buf = np.concatenate([self._buf, x])
        avail_end = self._buf_start + self._buf.size
        # Outputs k are complete when floor(k / ratio) + half_width < avail_end.
        k_end = int(np.floor((avail_end - self._hw - 1) * self._ratio)) + 1
        while k_end > self._next_out and int(np.floor((k_end - 1) / self._ratio)) + self._hw >= avail_end:
            k_end -= 1
        if k_end <= self._next_out:
            return np.zeros(0, dtype=np.float32)
        start = self._aligned_start(self._next_out)
        y = resample(self._buf[start - self._buf_start:], self.rate_in, self.rate_out, self._hw)
        first_out = start // self._period_in * self._period_out
        out = y[self._next_out - first_out: k_end - first_out].astype(np.float32, copy=False)
        self._next_out = k_end
        keep = self._aligned_start(self._next_out)
        if keep > self._buf_start:
            self._buf = self._buf[keep - self._buf_start:].copy()
            self._buf_start = keep
        return out

    def reset(self) -> None:
        """Forget the past input (start of a new, unrelated stream)."""
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0
        self._next_out = 0
