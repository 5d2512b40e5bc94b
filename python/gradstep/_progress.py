"""Progress of a fit as the caller sees it: the record a callback receives, and the text bar
that ``verbose=1`` draws."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Progress:
    """What a ``fit(..., callback=fn)`` callback receives, at most every ~0.1 s and once at the
    end. Arrays have one entry per run and are read-only copies.

    Attributes
    ----------
    iteration : ndarray of int
        Iterations (epochs with ``batch_size``) each run has completed.
    loss : ndarray of float
        Each run's current loss.
    grad_norm : ndarray of float
        The L2 norm of each run's current gradient (full batch; 0 for mini-batch runs); with
        an L1 term, of its minimum-norm subgradient.
    status : tuple of str
        "running", "converged", "max_iter", "diverged", "stalled" or "stopped" per run.
    elapsed : float
        Seconds since the fit started.
    coef, intercept : ndarray or None
        The current weights of every run (as ``FitResult.coef``/``intercept`` of a batched
        fit), given to a ``monitor`` only; None for a ``callback``.
    """

    iteration: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    status: tuple
    elapsed: float
    coef: np.ndarray | None = None
    intercept: np.ndarray | None = None

    @property
    def running(self) -> int:
        """How many runs are still running."""
        return sum(s == "running" for s in self.status)


def read_only(a: np.ndarray) -> np.ndarray:
    out = np.array(a, copy=True)
    out.flags.writeable = False
    return out


class ProgressBar:
    """A one-line text progress bar on stderr (``verbose=1``)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = max(int(total), 1), label

    def __call__(self, progress: Progress) -> None:
        done = int(progress.iteration.max()) if progress.iteration.size else 0
        filled = min(30, int(30 * done / self.total))
        loss = float(np.nanmean(progress.loss)) if progress.loss.size else float("nan")
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} "
            f"loss {loss:.6g} running {progress.running}/{len(progress.status)}"
        )
        if progress.running == 0:
            sys.stderr.write("\n")
        sys.stderr.flush()
