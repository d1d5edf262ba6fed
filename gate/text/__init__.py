"""Prompt screening (sexual / violent intent, English and Chinese) and enrolled-name matching.

Nothing in this package logs, stores or returns prompt text: results are rule ids and
subject ids only. Word lists are data files in ``gate/text/data`` (see
``docs/content-screening.md``).
"""

from gate.text.intent import TextScreen, screen_prompt
from gate.text.names import NameHit, NameMatcher
from gate.text.normalize import normalize_text

__all__ = ["NameHit", "NameMatcher", "TextScreen", "normalize_text", "screen_prompt"]
