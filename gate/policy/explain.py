"""What a policy set applies, with the legal source of each item (``gate policy explain``).

``explain_policy_set`` gives plain data (JSON-ready); ``render_explanation`` the text a
compliance officer reads: the packs, their rules, the obligations with their parameters,
the consent formalities, retention, takedown and the deployment's duties, each followed by
the article it implements and where to read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gate.policy.jurisdictions import Cited, PolicySet, cite
from gate.policy.model import Policy, Source


def _source(source: Source) -> dict[str, Any]:
    return {"title": source.title, "article": source.article, "url": source.url,
            "in_force": source.in_force, "verified": source.verified}


def _cited(item: Cited) -> dict[str, Any]:
    return {"id": item.id, "jurisdiction": item.jurisdiction, "message": item.message,
            "sources": [_source(s) for s in item.sources]}


def _pack_rules(pack: Policy) -> list[dict[str, Any]]:
    code = pack.jurisdiction.code if pack.jurisdiction else None
    return [{"id": r.id, "jurisdiction": code, "effect": r.effect, "scope": r.scope,
             "message": r.message.strip(), "when": r.when.model_dump(exclude_none=True),
             "obligations": list(r.obligations),
             "sources": [_source(pack.sources[s]) for s in r.sources]} for r in pack.rules]


def explain_policy_set(policy_set: PolicySet) -> dict[str, Any]:
    """Everything ``policy_set`` applies beyond the base policy's own rules, as plain data."""
    documents = (policy_set.base, *policy_set.packs)
    obligations: list[dict[str, Any]] = []
    for doc in documents:
        code = doc.jurisdiction.code if doc.jurisdiction else None
        obligations += [{"obligation": ob, "jurisdiction": code,
                         "attached": "every allowed decision"} for ob in doc.obligations]
        obligations += [{"obligation": ob, "jurisdiction": code,
                         "attached": f"allowed decisions where rule {r.id} matches"}
                        for r in doc.rules for ob in r.obligations]
    plan = policy_set.labels()
    labels: dict[str, Any] = {}
    if plan.visible is not None:
        labels["label_visible"] = {
            "text": dict(plan.visible.text), "positions": list(plan.visible.positions),
            "min_text_height_ratio": plan.visible.min_text_height_ratio,
            "rules": [_cited(r) for r in plan.visible.rules]}
    if plan.metadata is not None:
        labels["label_gb45438_metadata"] = {
            "fields": list(plan.metadata.fields), "label_value": plan.metadata.label_value,
            "xmp_namespace": plan.metadata.xmp_namespace,
            "xmp_property": plan.metadata.xmp_property,
            "rules": [_cited(r) for r in plan.metadata.rules]}
    if plan.machine_readable is not None:
        labels["mark_machine_readable"] = {
            "digital_source_type": plan.machine_readable.digital_source_type,
            "carriers": list(plan.machine_readable.carriers),
            "rules": [_cited(r) for r in plan.machine_readable.rules]}
    formalities = [
        {**_cited(cite(doc, f.id, f.message, f.sources)), "formality": f.formality,
         "operations": f.operation or "every operation", "content_any": f.content_any,
         "minors_only": f.minors_only}
        for doc in documents for f in doc.formalities]
    return {
        "version": policy_set.version,
        "base": {"policy": policy_set.base.policy, "version": policy_set.base.version},
        "jurisdictions": [{"code": p.jurisdiction.code, "name": p.jurisdiction.name,
                           "version": p.version, "implies": list(p.jurisdiction.implies)}
                          for p in policy_set.packs if p.jurisdiction is not None],
        "rules": [r for p in policy_set.packs for r in _pack_rules(p)],
        "obligations": obligations,
        "labels": labels,
        "formalities": formalities,
        "retention": {
            "days_since_last_interaction": policy_set.retention_days,
            "days_after_purpose_end": policy_set.retention_days_after_purpose_end,
            "rules": [{**_cited(r.rule), "days": r.days, "since": r.since}
                      for r in policy_set.retention]},
        "takedown": {
            "hours": policy_set.takedown_hours,
            "rules": [{**_cited(t.rule), "hours": t.hours, "scope": t.scope,
                       "applies_from": t.applies_from} for t in policy_set.takedown]},
        "duties": [{**_cited(d.rule), "parameters": dict(d.parameters)}
                   for d in policy_set.duties],
    }


# -- text ---------------------------------------------------------------------------------
def render_explanation(data: dict[str, Any]) -> str:
    """The text of ``gate policy explain`` for ``explain_policy_set``'s data."""
    out: list[str] = [f"policy set: {data['version']}",
                      f"base policy: {data['base']['policy']}@{data['base']['version']}"]
    packs = data["jurisdictions"]
    out.append("jurisdictions: " + (", ".join(f"{p['code']} ({p['name']})" for p in packs)
                                    if packs else "none (the base policy alone)"))
    for pack in packs:
        if pack["implies"]:
            out.append(f"  {pack['code']} implies {', '.join(pack['implies'])}")

    out.append("\nrules (added by the packs; the most severe effect wins):")
    out += _items(data["rules"], lambda r: f"{r['effect']} for "
                  f"{_when(r['when'], r['scope'])}"
                  + (f"; obligations: {', '.join(r['obligations'])}" if r["obligations"]
                     else ""))

    out.append("\nobligations (on allowed decisions):")
    if not data["obligations"]:
        out.append("  none")
    for ob in data["obligations"]:
        origin = ob["jurisdiction"] or "base"
        out.append(f"  {ob['obligation']} ({origin}): {ob['attached']}")

    out.append("\nlabel parameters:")
    labels = data["labels"]
    if not labels:
        out.append("  none")
    if "label_visible" in labels:
        v = labels["label_visible"]
        texts = "; ".join(f"{loc}: {text!r}" for loc, text in v["text"].items())
        out.append(f"  label_visible: text {texts}; positions {', '.join(v['positions'])}; "
                   f"text height >= {v['min_text_height_ratio']:.0%} of the shorter side")
        out += _sources_of(v["rules"])
    if "label_gb45438_metadata" in labels:
        m = labels["label_gb45438_metadata"]
        out.append(f"  label_gb45438_metadata: fields {', '.join(m['fields'])}; "
                   f"Label={m['label_value']!r}; XMP {m['xmp_namespace']} property "
                   f"{m['xmp_property']}")
        out += _sources_of(m["rules"])
    if "mark_machine_readable" in labels:
        mr = labels["mark_machine_readable"]
        out.append(f"  mark_machine_readable: {mr['digital_source_type']} in "
                   f"{', '.join(mr['carriers'])}")
        out += _sources_of(mr["rules"])

    out.append("\nconsent formalities a grant must record:")
    out += _items(data["formalities"], lambda f: f"{f['formality']} for "
                  f"{_list(f['operations'])}" + (f", content {_list(f['content_any'])}"
                                                 if f["content_any"] else "")
                  + (", minors only" if f["minors_only"] else ""))

    retention = data["retention"]
    out.append("\nretention of biometric templates: "
               + _days(retention["days_since_last_interaction"], "after the last interaction")
               + "; " + _days(retention["days_after_purpose_end"], "after the purpose ended"))
    out += _items(retention["rules"], lambda r: f"{r['days']} days after {r['since']}")

    hours = data["takedown"]["hours"]
    out.append("\ntakedown: " + (f"within {hours} hours of a valid request" if hours
                                 else "no deadline set"))
    out += _items(data["takedown"]["rules"], lambda t: f"{t['hours']} h: {t['scope']}"
                  + (f" (from {t['applies_from']})" if t["applies_from"] else ""))

    out.append("\nduties of the deployment:")
    out += _items(data["duties"], lambda d: d["message"] + (
        " (" + ", ".join(f"{k}={v}" for k, v in d["parameters"].items()) + ")"
        if d["parameters"] else ""))
    return "\n".join(out) + "\n"


def _items(items: Sequence[dict[str, Any]], describe: Any) -> list[str]:
    if not items:
        return ["  none"]
    lines: list[str] = []
    for item in items:
        text = describe(item)
        lines.append(f"  {item['id']}: {text}")
        if not text.startswith(item["message"]):
            lines.append(f"      {item['message']}")
        lines += [f"      source: {_source_line(s)}" for s in item["sources"]]
    return lines


def _sources_of(rules: Sequence[dict[str, Any]]) -> list[str]:
    return [f"      {r['id']} source: {_source_line(s)}" for r in rules for s in r["sources"]]


def _source_line(source: dict[str, Any]) -> str:
    verified = {"primary_text": "checked against the text",
                "secondary_sources": "checked against secondary sources",
                "unconfirmed": "NOT confirmed"}[source["verified"]]
    return f"{source['title']}, {source['article']} <{source['url']}> ({verified})"


def _when(when: dict[str, Any], scope: str) -> str:
    every = "every face" if scope == "face" else "every request"
    if not when:
        return every
    return every + " where " + "; ".join(f"{k}={_list(v)}" for k, v in when.items())


def _list(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items() if v is not None)
    return str(value)


def _days(days: int | None, what: str) -> str:
    return f"{days} days {what}" if days is not None else f"no limit set {what}"
