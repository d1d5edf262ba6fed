"""Every module that keeps rows about a person registers here what erasure must delete
and what an export must show. ``SubjectLifecycle`` runs them all, in the erasure's (or the
export's) transaction, whichever door was used. A new table about people adds its hook
here, and ``tests/consent/test_erasure_everywhere.py`` fails until it does."""

from __future__ import annotations

from gate.consent import links, portal, requests, retention
from gate.consent.store import ErasureHook, ExportHook
from gate.incident import attempts, notify, reports

ERASURE_HOOKS: tuple[ErasureHook, ...] = (links.forget, requests.forget, retention.forget,
                                          portal.forget, attempts.forget, reports.forget,
                                          notify.forget)
EXPORT_HOOKS: tuple[ExportHook, ...] = (requests.export, retention.export, attempts.export,
                                        reports.export, notify.export)
