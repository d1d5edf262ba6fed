"""atheris target: the image and video decoders either decode or raise InvalidImage.

    .venv/bin/python tests/fuzz/fuzz_decode.py -max_total_time=600 CORPUS_DIR
(`tests/fuzz/test_fuzz.py` runs it briefly in CI with a seed corpus.)
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from gate.errors import InvalidImage
    from gate.imaging import DecodeLimits, decode_image
    from gate.imaging.video import VideoLimits, decode_video, is_video

LIMITS = DecodeLimits(max_pixels=4_000_000, max_frames=20, target_side_px=256,
                      max_total_pixels=20_000_000)
VIDEO = VideoLimits(max_decoded_frames=200, max_sampled_frames=20, max_decode_s=5.0)


def test_one_input(data: bytes) -> None:
    try:
        if is_video(data):
            decode_video(data, VIDEO)
        else:
            decode_image(data, LIMITS)
    except InvalidImage:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
