"""atheris target: the policy parser either returns a Policy or raises PolicyError.

    .venv/bin/python tests/fuzz/fuzz_policy.py -max_total_time=600 CORPUS_DIR
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from gate.errors import PolicyError
    from gate.policy.load import parse_policy


def test_one_input(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
    with contextlib.suppress(PolicyError):
        parse_policy(text, "fuzz.yaml")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
