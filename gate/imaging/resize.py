"""Fast, alias-free downscaling for detector inputs.

``cv2.INTER_AREA`` with a non-integer ratio costs ~2.7 ms for 1024->640 on this class of
CPU; halving with a Gaussian pyramid and finishing with bilinear interpolation (ratio
below 2, where bilinear does not alias) gives the detector the same input quality for
~0.4 ms. See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import numpy as np


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``size`` (width, height); pyramid halving when shrinking >= 2x."""
    import cv2

    width, height = size
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    while w >= 2 * width and h >= 2 * height:
        image = cv2.pyrDown(image)
        h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    return np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))
