"""Prometheus metrics on a registry of the app's own (so several apps in one process
never collide). Labels are verdicts, rule ids, stages, routes and statuses: never
identities, subject ids, app ids, user ids or request ids.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from gate.types import Decision

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                      10.0)


class Metrics:
    """The sidecar's metrics; ``render()`` gives the Prometheus text format."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # process-wide: no *_created
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter("gate_decisions_total", "Decisions by endpoint and verdict.",
                                 ["endpoint", "verdict"], registry=r)
        self.rules = Counter("gate_decision_rules_total",
                             "Rules that decided, by rule id and verdict.",
                             ["rule_id", "verdict"], registry=r)
        self.stage_latency = Histogram("gate_stage_latency_seconds",
                                       "Engine stage latency (Decision.latency_ms).",
                                       ["stage"], buckets=_LATENCY_BUCKETS_S, registry=r)
        self.http_requests = Counter("gate_http_requests_total", "HTTP requests.",
                                     ["route", "method", "status"], registry=r)
        self.http_latency = Histogram("gate_http_request_duration_seconds",
                                      "HTTP request duration.", ["route"],
                                      buckets=_LATENCY_BUCKETS_S, registry=r)
        self.ready = Gauge("gate_ready_check", "Readiness checks (1 ok, 0 failing).",
                           ["check"], registry=r)
        self.models_loaded = Gauge("gate_models_loaded", "1 when the models are loaded.",
                                   registry=r)
        self.check_timeouts = Counter("gate_check_timeouts_total",
                                      "Decisions that overran the engine's deadline "
                                      "(denied, core.fail_closed).", registry=r)

        self.reports_open = Gauge("gate_reports_open", "Takedown reports not yet acted on.",
                                  registry=r)
        self.reports_overdue = Gauge("gate_reports_overdue",
                                     "Open takedown reports past their deadline.", registry=r)
        self.report_action = Histogram(
            "gate_report_time_to_action_seconds",
            "From a takedown report's intake to its resolution.", ["status"],
            buckets=(600, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 48 * 3600,
                     72 * 3600, 7 * 24 * 3600), registry=r)

        self.notifications = Gauge("gate_notifications",
                                   "Attempt notifications by state (every replica).",
                                   ["state"], registry=r)
        self.notifier_events = Gauge("gate_notifier_events",
                                     "This process's notifier: aggregated, sent, failed "
                                     "tries, dead letters, failed rounds.", ["event"],
                                     registry=r)

    def observe_notifier(self, backlog: Mapping[str, int], events: Mapping[str, int]) -> None:
        for state, n in backlog.items():
            self.notifications.labels(state).set(n)
        for event, n in events.items():
            self.notifier_events.labels(event).set(n)

    def observe_reports(self, counts: Mapping[str, int]) -> None:
        self.reports_open.set(counts.get("open", 0))
        self.reports_overdue.set(counts.get("overdue", 0))

    def observe_decision(self, endpoint: str, decision: Decision) -> None:
        self.decisions.labels(endpoint, decision.verdict).inc()
        if any(r.rule_id == "core.fail_closed" and "(timeout)" in r.message
               for r in decision.reasons):
            self.check_timeouts.inc()
        for rule_id in dict.fromkeys(decision.rule_ids):
            self.rules.labels(rule_id, decision.verdict).inc()
        for stage, ms in decision.latency_ms.items():
            self.stage_latency.labels(stage).observe(ms / 1000.0)

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_latency.labels(route).observe(seconds)

    def observe_readiness(self, checks: Mapping[str, bool]) -> None:
        for name, ok in checks.items():
            self.ready.labels(name).set(1.0 if ok else 0.0)
        self.models_loaded.set(1.0 if checks.get("models") else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
