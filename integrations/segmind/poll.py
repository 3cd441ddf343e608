"""When to poll a queued (v2) Segmind job (all times in seconds).

The official SDK polls every 1.0 s, so a finished job waits 0.5 s on average before anyone
notices. Polling much faster would cost many status requests. Oyez learns instead: a TTS job's
run time grows with the length of its text, so each model keeps an estimate of seconds per
character (and of how far reality strays from it) from the jobs it has seen, and polls densely
only around the predicted completion. With nothing learned yet, polls start fast and back off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CompletionEstimate", "PollPlan"]

# How many polls to spend across the window in which the job is expected to finish.
_POLLS_IN_WINDOW = 12
# Never poll closer together than this, whatever the prediction.
_MIN_GAP_S = 0.08
# Weight of the newest observation in the running estimates.
_ALPHA = 0.3


@dataclass
class CompletionEstimate:
    """Running estimate of one model's job run time: ``seconds_per_char`` * characters.

    ``spread`` is the typical relative error of that prediction (0.1 = ±10 %).
    """

    seconds_per_char: float | None = None
    spread: float = 0.35
    jobs: int = 0

    def predict(self, characters: int) -> float | None:
        if self.seconds_per_char is None:
            return None
        return self.seconds_per_char * max(characters, 1)

    def observe(self, characters: int, earliest_s: float, latest_s: float) -> None:
        """Learn from a finished job: it completed between ``earliest_s`` (the last poll that
        found it pending) and ``latest_s`` (the poll that found it done) after submission."""
        seconds = (earliest_s + latest_s) / 2
        if seconds <= 0:
            return
        rate = seconds / max(characters, 1)
        # The poll interval itself bounds how well this one job was measured.
        uncertainty = (latest_s - earliest_s) / 2 / seconds
        if self.seconds_per_char is None:
            self.seconds_per_char = rate
            self.spread = min(1.0, max(0.1, uncertainty))
        else:
            error = max(abs(rate / self.seconds_per_char - 1), uncertainty / 2)
            self.spread = min(1.0, max(0.05, (1 - _ALPHA) * self.spread + _ALPHA * error))
            self.seconds_per_char = (1 - _ALPHA) * self.seconds_per_char + _ALPHA * rate
        self.jobs += 1


@dataclass
class PollPlan:
    """Successive waits between status polls for one job.

    With a prediction ``expected_s``: one wait to the start of the window in which the job
    should finish (``expected_s`` * (1 ± 1.5 * ``spread``)), a few polls spread across that
    window, then backing off by ``factor`` up to ``max_s``. Without one: ``first_s``, then each
    wait ``factor`` times longer, up to ``max_s``. A rate-limit hint stretches the next wait.
    """

    first_s: float
    factor: float
    max_s: float
    expected_s: float | None = None
    spread: float = 0.35
    _gap: float = field(default=0.0, init=False)
    _window: tuple[float, float] = field(default=(0.0, 0.0), init=False)

    def __post_init__(self) -> None:
        if self.expected_s is None:
            self._gap = self.first_s
            return
        width = 1.5 * self.spread * self.expected_s
        self._window = (max(self.expected_s - width, 0.0), self.expected_s + width)
        self._gap = min(max(_MIN_GAP_S, 2 * width / _POLLS_IN_WINDOW), self.max_s)

    def next_wait(self, elapsed_s: float, retry_after_s: float | None = None) -> float:
        """The wait before the next poll, ``elapsed_s`` after the job was submitted."""
        if self.expected_s is None:
            wait = self._gap
            self._gap = min(self._gap * self.factor, self.max_s)
        else:
            start, end = self._window
            if elapsed_s < start:
                wait = start - elapsed_s
            elif elapsed_s < end:
                wait = self._gap
            else:
                self._gap = min(self._gap * self.factor, self.max_s)
                wait = self._gap
        if retry_after_s is not None:
            wait = max(wait, retry_after_s)
        return max(wait, _MIN_GAP_S)
