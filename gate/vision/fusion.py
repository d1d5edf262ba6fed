"""A second opinion for borderline similarities: SFace and dlib, fused.

SFace decides alone whenever its similarity to a subject is clearly below or clearly
above the decision thresholds. Inside ``band`` (calibrated: docs/accuracy.md) the
subject's score is replaced by the impostor-normalised sum of SFace's and dlib's
similarities, mapped back onto SFace's cosine scale so that ``match_threshold`` and
``allow_threshold`` keep their impostor rates:

    z = ((s - mu_s) / sd_s + (d - mu_d) / sd_d) / 2;   fused = a + b * z

``mu``/``sd`` are the impostor means and spreads of each model; ``a``/``b`` make the
fused score's impostor rate at 0.36 and 0.40 equal SFace's own there. All six numbers
were fitted on pairs of ../shared/faces (``benchmarks/recognition.py --study dlib``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ScoreFusion:
    """Fused SFace + dlib similarity on SFace's scale, asked only inside ``band``."""

    mu_s: float
    sd_s: float
    mu_d: float
    sd_d: float
    a: float
    b: float
    band: tuple[float, float]  # SFace similarities (inclusive) that ask dlib

    def in_band(self, sface: float) -> bool:
        return self.band[0] <= sface <= self.band[1]

    def fuse(self, sface: float, dlib: float) -> float:
        """The fused similarity (SFace's cosine scale) of one face-subject pair."""
        z = ((sface - self.mu_s) / self.sd_s + (dlib - self.mu_d) / self.sd_d) / 2.0
        return float(self.a + self.b * z)

    def rescore(self, sface: np.ndarray, dlib: np.ndarray) -> np.ndarray:
        """Scores with the band's pairs fused; pairs outside the band keep SFace's."""
        s = np.asarray(sface, dtype=np.float64)
        fused = self.a + self.b * (((s - self.mu_s) / self.sd_s +
                                    (np.asarray(dlib, np.float64) - self.mu_d) / self.sd_d) / 2)
        out: np.ndarray = np.where((s >= self.band[0]) & (s <= self.band[1]), fused, s)
        return out
