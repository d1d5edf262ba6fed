"""Jurisdiction packs composed with a base policy: selection, composition, formalities,
label parameters, retention and takedown (gate/policy/jurisdictions.py)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate.errors import PolicyError
from gate.policy.evaluate import SEVERITY, FaceFacts, RequestFacts, RulePolicyEngine
from gate.policy.jurisdictions import (
    PolicyLibrary,
    PolicySet,
    load_pack,
    load_policy_set,
    parse_jurisdictions,
)
from gate.policy.load import load_policy, parse_policy
from gate.policy.model import FORMALITIES, JURISDICTION_CODES, Policy
from gate.types import CONTENT_CATEGORIES, OPERATIONS

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
DEFAULT = POLICIES / "default.yaml"
PACKS = POLICIES / "jurisdictions"
LIBRARY = PolicyLibrary(DEFAULT)
CREATIVE = PolicyLibrary(POLICIES / "creative-app.yaml")


def _face(identity: str = "self", **kw: object) -> FaceFacts:
    return FaceFacts(face_ref=str(kw.pop("face_ref", "f0")), identity=identity,
                     role=str(kw.pop("role", "source")), **kw)  # type: ignore[arg-type]


def _facts(*faces: FaceFacts, operation: str = "face_swap",
           content: frozenset[str] = frozenset({"general"})) -> RequestFacts:
    return RequestFacts(operation=operation, content=content, app_id="app", faces=faces)


# -- selecting packs ------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "codes"), [
    ("cn,eu", ("cn", "eu")),
    ("eu, CN ,eu", ("cn", "eu")),
    (["us", "us-il"], ("us-il", "us")),
    ("", ()),
    (" , ", ()),
    (None, ()),
    ([], ()),
    ("us-wa,us-tx,us-il,us,eu,cn", JURISDICTION_CODES),
])
def test_codes_are_parsed_into_canonical_order(value: object, codes: tuple[str, ...]) -> None:
    assert parse_jurisdictions(value) == codes  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["cn,xx", "china", "us_il", "eu;cn", ["cn", "EU ", "uk"]])
def test_an_unknown_code_names_itself_and_the_valid_codes(value: str | list[str]) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_jurisdictions(value)
    message = caught.value.message
    assert message.startswith("unknown jurisdiction code '")
    assert message.endswith("valid codes: cn, eu, us-il, us-tx, us-wa, us")
    assert caught.value.field == "jurisdictions"


def test_a_long_unknown_code_is_cut_in_the_message() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_jurisdictions("x" * 500)
    assert len(caught.value.message) < 150


def test_a_code_that_is_not_a_string_is_an_error() -> None:
    with pytest.raises(PolicyError, match="a jurisdiction code is a string"):
        parse_jurisdictions([3])  # type: ignore[list-item]


def test_loading_an_unknown_code_is_a_startup_error() -> None:
    with pytest.raises(PolicyError, match=r"unknown jurisdiction code 'fr'; valid codes: "):
        load_policy_set(DEFAULT, "cn,fr")


def test_every_code_has_a_valid_pack_that_declares_it() -> None:
    for code in JURISDICTION_CODES:
        pack = load_pack(code)
        assert pack.jurisdiction is not None and pack.jurisdiction.code == code


def test_a_state_pack_brings_the_federal_pack() -> None:
    for state in ("us-il", "us-tx", "us-wa"):
        assert LIBRARY.policy_set(state).jurisdictions == (state, "us")
    assert LIBRARY.policy_set("cn").jurisdictions == ("cn",)


def test_the_version_covers_the_base_and_every_pack() -> None:
    base = load_policy(DEFAULT)
    cn, eu = load_pack("cn"), load_pack("eu")
    assert LIBRARY.policy_set("eu,cn").version == (
        f"default@{base.version}+cn@{cn.version}+eu@{eu.version}")
    assert LIBRARY.policy_set("").version == RulePolicyEngine(base).version


def test_sets_are_cached_per_selection() -> None:
    assert LIBRARY.policy_set("cn,eu") is LIBRARY.policy_set(["eu", "cn"])
    assert LIBRARY.policy_set("us-il") is LIBRARY.policy_set("us,us-il")


def test_a_pack_file_declaring_another_code_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cn.yaml").write_text((PACKS / "eu.yaml").read_text(encoding="utf-8"),
                                      encoding="utf-8")
    with pytest.raises(PolicyError, match=r"cn\.yaml: declares jurisdiction 'eu', "
                                          "expected 'cn'"):
        load_pack("cn", tmp_path)


def test_a_missing_pack_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"us\.yaml: cannot read the file"):
        load_policy_set(DEFAULT, "us", packs_dir=tmp_path)


def test_a_base_policy_in_the_packs_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "us.yaml").write_text(DEFAULT.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(PolicyError, match="not a jurisdiction pack"):
        load_pack("us", tmp_path)


def test_a_library_validates_every_pack_at_start_up(tmp_path: Path) -> None:
    for path in PACKS.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    broken = (tmp_path / "us-wa.yaml").read_text(encoding="utf-8")
    (tmp_path / "us-wa.yaml").write_text(broken.replace("days", "dayz", 1)
                                         .replace("formality: informed_consent",
                                                  "formality: informal"), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"us-wa\.yaml:\d+: field 'formalities\[0\]"):
        PolicyLibrary(DEFAULT, packs_dir=tmp_path)
    PolicyLibrary(DEFAULT, packs_dir=tmp_path, preload=False).policy_set("cn")  # unaffected


def test_a_set_refuses_a_pack_as_base_and_duplicate_packs() -> None:
    base, cn = load_policy(DEFAULT), load_pack("cn")
    with pytest.raises(PolicyError, match="is a jurisdiction pack"):
        PolicySet(cn, ())
    with pytest.raises(PolicyError, match="given twice"):
        PolicySet(base, (cn, cn))
    with pytest.raises(PolicyError, match="is not a jurisdiction pack"):
        PolicySet(base, (base,))


# -- the done-when cases --------------------------------------------------------------
def test_cn_an_allowed_face_swap_lists_the_pack_and_its_labels() -> None:
    evaluation = LIBRARY.policy_set("cn").evaluate(_facts(_face("self", age_band="adult")))
    assert evaluation.verdict == "allow"
    assert evaluation.jurisdictions == ("cn",)
    assert {"label_visible", "label_gb45438_metadata"} <= set(evaluation.obligations)
    plan = LIBRARY.policy_set("cn").labels()
    assert plan.visible is not None and plan.metadata is not None
    assert plan.visible.text["zh"] == "AI生成"
    assert plan.metadata.fields == ("Label", "ContentProducer", "ProduceID", "ReservedCode1",
                                    "ContentPropagator", "PropagateID", "ReservedCode2")


def test_us_il_a_grant_without_a_written_release_does_not_cover_the_face() -> None:
    policy_set = LIBRARY.policy_set("us-il")
    assert policy_set.required_formalities("face_swap", ["general"]) == {"written_release"}
    without = _face("consented", subject_status="consenting", age_band="adult")
    evaluation = policy_set.evaluate(_facts(without))
    assert evaluation.verdict == "needs_consent"
    assert [r.rule_id for r in evaluation.reasons] == ["us-il.formality.written_release"]
    released = replace(without, grant_formalities=frozenset({"written_release"}))
    assert policy_set.evaluate(_facts(released)).verdict == "allow"


def test_eu_outputs_carry_the_machine_readable_mark() -> None:
    policy_set = LIBRARY.policy_set("eu")
    for facts in (_facts(operation="txt2img"), _facts(_face("self"))):
        assert "mark_machine_readable" in policy_set.evaluate(facts).obligations
    mark = policy_set.labels().machine_readable
    assert mark is not None and mark.carriers == ("xmp",)
    assert mark.digital_source_type.endswith("/trainedAlgorithmicMedia")


# -- formalities --------------------------------------------------------------------------
@pytest.mark.parametrize(("codes", "adult", "minor"), [
    ("", set(), set()),
    ("us", set(), set()),
    ("cn", {"separate_consent"}, {"separate_consent", "guardian_consent"}),
    ("eu", {"explicit_consent"}, {"explicit_consent", "guardian_consent"}),
    ("us-il", {"written_release"}, {"written_release"}),
    ("us-tx", {"informed_consent"}, {"informed_consent"}),
    ("us-wa", {"informed_consent"}, {"informed_consent"}),
    ("cn,eu,us-il", {"separate_consent", "explicit_consent", "written_release"},
     {"separate_consent", "explicit_consent", "written_release", "guardian_consent"}),
])
def test_required_formalities_are_the_union_of_the_packs(codes: str, adult: set[str],
                                                          minor: set[str]) -> None:
    policy_set = LIBRARY.policy_set(codes)
    for operation in OPERATIONS:
        assert policy_set.required_formalities(operation, {"general"}) == adult
        assert policy_set.required_formalities(operation, ("sexual",), minor=True) == minor
    assert set(FORMALITIES) >= minor


def test_formality_needs_name_their_requirement_and_sources() -> None:
    needs = LIBRARY.policy_set("cn").formality_needs("edit", ["general"], minor=True)
    assert [(n.formality, n.requirement.id, n.requirement.jurisdiction) for n in needs] == [
        ("separate_consent", "cn.formality.separate_consent", "cn"),
        ("guardian_consent", "cn.formality.guardian_consent", "cn")]
    assert all(n.requirement.sources for n in needs)
    assert "PIPL Art. 31" in needs[1].requirement.message


def test_a_requirement_can_be_limited_to_operations_and_content() -> None:
    base = parse_policy("""\
policy: b
version: '1'
rules: [{id: allow.any, effect: allow, message: m}]
formalities:
  - {id: f.release, formality: written_release, message: m, operation: [nudify],
     content_any: [sexual]}
""")
    policy_set = PolicySet(base)
    assert policy_set.required_formalities("nudify", ["sexual"]) == {"written_release"}
    assert policy_set.required_formalities("nudify", ["general"]) == frozenset()
    assert policy_set.required_formalities("img2img", ["sexual"]) == frozenset()
    consented = _face("consented", age_band="adult")
    assert policy_set.evaluate(_facts(consented, operation="nudify",
                                      content=frozenset({"sexual"}))).verdict == "needs_consent"
    # the same document alone, through the engine current callers use
    assert RulePolicyEngine(base).evaluate(_facts(consented, operation="img2img")).verdict \
        == "allow"


def test_formalities_apply_to_consented_faces_only() -> None:
    policy_set = LIBRARY.policy_set("cn,eu,us-il")
    for identity in ("self", "unknown"):
        evaluation = policy_set.evaluate(_facts(_face(identity), operation="img2img"))
        assert not [r for r in evaluation.reasons if ".formality." in r.rule_id]


# -- composition: packs only tighten ------------------------------------------------------
FACES = [FaceFacts(face_ref="", identity=i, role=r, subject_status=s, age_band=a,
                   grant_formalities=frozenset(g), subject_minor=m)
         for i, r, s, a, g, m in itertools.product(
             ("self", "consented", "protected", "unknown", "unidentifiable"),
             ("source", "init"), (None, "consenting", "protected"), ("unknown", "adult", "minor"),
             ((), ("separate_consent", "explicit_consent"), FORMALITIES), (False, True))]
SELECTIONS = ["", *JURISDICTION_CODES, "cn,eu", "us-il,us", "cn,eu,us-il,us-tx,us-wa"]


@st.composite
def facts_st(draw: st.DrawFn) -> RequestFacts:
    faces = draw(st.lists(st.sampled_from(FACES), max_size=4))
    return RequestFacts(
        operation=draw(st.sampled_from(OPERATIONS)),
        content=draw(st.frozensets(st.sampled_from(CONTENT_CATEGORIES), min_size=1)),
        app_id="app", faces=tuple(replace(f, face_ref=f"f{i}") for i, f in enumerate(faces)))


@settings(max_examples=150, deadline=None)
@given(facts=facts_st(), selection=st.sampled_from(SELECTIONS[1:]),
       library=st.sampled_from([LIBRARY, CREATIVE]))
def test_packs_never_loosen_the_base_policy(facts: RequestFacts, selection: str,
                                            library: PolicyLibrary) -> None:
    base = library.policy_set("").evaluate(facts)
    composed = library.policy_set(selection).evaluate(facts)
    assert SEVERITY[composed.verdict] >= SEVERITY[base.verdict]
    if composed.verdict == "allow":
        assert set(composed.obligations) >= set(base.obligations)
    else:
        assert composed.obligations == ()
    assert composed.reasons and all(r.effect == composed.verdict for r in composed.reasons)
    assert composed.jurisdictions == library.policy_set(selection).jurisdictions


@settings(max_examples=100, deadline=None)
@given(facts=facts_st(), first=st.sampled_from(SELECTIONS), second=st.sampled_from(SELECTIONS))
def test_adding_packs_is_monotonic_and_order_free(facts: RequestFacts, first: str,
                                                  second: str) -> None:
    one = LIBRARY.policy_set(first).evaluate(facts)
    both = LIBRARY.policy_set(f"{first},{second}").evaluate(facts)
    assert SEVERITY[both.verdict] >= SEVERITY[one.verdict]
    reverse = LIBRARY.policy_set(f"{second},{first}").evaluate(facts)
    assert reverse == both


@settings(max_examples=100, deadline=None)
@given(facts=facts_st(), selection=st.sampled_from(SELECTIONS))
def test_a_consented_face_lacking_a_required_formality_is_never_allowed(
        facts: RequestFacts, selection: str) -> None:
    policy_set = LIBRARY.policy_set(selection)
    evaluation = policy_set.evaluate(facts)
    if evaluation.verdict != "allow":
        return
    for face in facts.faces:
        if face.identity == "consented":
            required = policy_set.required_formalities(facts.operation, facts.content,
                                                       minor=face.minor)
            assert required <= face.grant_formalities


# -- label parameters ------------------------------------------------------------------------
def test_visible_labels_merge_every_text_and_the_strictest_size() -> None:
    visible = LIBRARY.policy_set("cn,eu").labels().visible
    assert visible is not None
    assert dict(visible.text) == {"en": "AI生成 | AI-generated", "zh": "AI生成"}
    assert visible.positions == ("bottom_right", "bottom_left", "top_right", "top_left")
    assert visible.min_text_height_ratio == 0.05
    assert [r.id for r in visible.rules] == ["cn.label.visible", "eu.label.deepfake_disclosure"]
    eu_only = LIBRARY.policy_set("eu").labels().visible
    assert eu_only is not None and eu_only.text["en"] == "AI-generated"
    assert eu_only.min_text_height_ratio == 0.03


BOTH = "AI生成 | AI-generated"


@pytest.mark.parametrize(("locale", "text"), [
    ("zh", "AI生成"), ("zh-CN", "AI生成"), ("zh_Hant_TW", "AI生成"), ("EN", BOTH),
    ("fr-FR", BOTH), (None, BOTH), ("", BOTH),
])
def test_label_text_for_a_locale(locale: str | None, text: str) -> None:
    visible = LIBRARY.policy_set("cn").labels().visible
    assert visible is not None and visible.text_for(locale) == text


@pytest.mark.parametrize(("size", "px"), [((1024, 1024), 52), ((1920, 1080), 54),
                                          ((640, 480), 24), ((10, 10), 1)])
def test_minimum_text_height_in_pixels(size: tuple[int, int], px: int) -> None:
    visible = LIBRARY.policy_set("cn").labels().visible
    assert visible is not None and visible.min_text_height_px(*size) == px
    with pytest.raises(PolicyError):
        visible.min_text_height_px(0, 10)


def test_metadata_label_values_follow_the_standard_order() -> None:
    metadata = LIBRARY.policy_set("cn").labels().metadata
    assert metadata is not None
    values = metadata.values(content_producer="001191234567890123456700001", produce_id="req_1")
    assert list(values) == list(metadata.fields)
    assert values["Label"] == "1" and values["ProduceID"] == "req_1"
    assert values["ContentPropagator"] == values["PropagateID"] == ""
    assert metadata.xmp_namespace == "http://www.tc260.org.cn/ns/AIGC/1.0/"
    with pytest.raises(PolicyError, match="ContentProducer and ProduceID"):
        metadata.values(content_producer="", produce_id="req_1")


def test_no_label_parameters_without_packs_that_define_them() -> None:
    plan = LIBRARY.policy_set("us-il").labels()
    assert (plan.visible, plan.metadata, plan.machine_readable) == (None, None, None)


def _pack(code: str, labels: str) -> Policy:
    return parse_policy(f"""\
policy: p-{code}
version: '1'
jurisdiction: {{code: {code}, name: N}}
labels:
{labels}
sources: {{s.one: {{title: T, article: A, url: 'https://example.org/', verified: unconfirmed}}}}
""")


def test_packs_whose_visible_labels_share_no_position_cannot_be_combined() -> None:
    label = ("  visible: {{id: {c}.label, text: {{en: A, zh: B}}, positions: [{p}], "
             "min_text_height_ratio: 0.1, message: m, sources: [s.one]}}")
    left = _pack("cn", label.format(c="cn", p="top_left"))
    right = _pack("eu", label.format(c="eu", p="bottom_right"))
    with pytest.raises(PolicyError, match="allow no common position"):
        PolicySet(load_policy(DEFAULT), (left, right))


def test_packs_whose_marks_disagree_cannot_be_combined() -> None:
    mark = ("  machine_readable: {{id: {c}.mark, digital_source_type: 'https://x.org/{t}', "
            "carriers: [xmp], message: m, sources: [s.one]}}")
    left = _pack("cn", mark.format(c="cn", t="a"))
    right = _pack("eu", mark.format(c="eu", t="b"))
    with pytest.raises(PolicyError, match="disagree on the digital source type"):
        PolicySet(load_policy(DEFAULT), (left, right))


# -- retention, takedown, duties ---------------------------------------------------------------
@pytest.mark.parametrize(("codes", "last", "purpose", "takedown"), [
    ("", None, None, None),
    ("cn", None, None, None),
    ("eu", None, None, None),
    ("us", None, None, 48),
    ("us-il", 1095, 0, 48),
    ("us-tx", None, 365, 48),
    ("us-wa", None, None, 48),
    ("us-il,us-tx", 1095, 0, 48),
])
def test_retention_and_takedown_take_the_shortest(codes: str, last: int | None,
                                                  purpose: int | None,
                                                  takedown: int | None) -> None:
    policy_set = LIBRARY.policy_set(codes)
    assert policy_set.retention_days == last
    assert policy_set.retention_days_after_purpose_end == purpose
    assert policy_set.takedown_hours == takedown


def test_takedown_and_retention_items_cite_their_sources() -> None:
    policy_set = LIBRARY.policy_set("us-il")
    (takedown,) = policy_set.takedown
    assert (takedown.hours, takedown.applies_from) == (48, "2026-05-19")
    assert takedown.rule.sources[0].article.startswith("Sec. 3")
    assert {r.rule.id for r in policy_set.retention} == {
        "us-il.retention.last_interaction", "us-il.retention.purpose_end"}
    duties = {d.rule.id: d for d in policy_set.duties}
    assert duties["us-il.duty.public_retention_schedule"].parameters == {
        "max_days_since_last_interaction": 1095}


# -- the packs as documents ----------------------------------------------------------------
@pytest.mark.parametrize("code", JURISDICTION_CODES)
def test_every_source_of_a_pack_is_cited(code: str) -> None:
    pack = load_pack(code)
    cited = {ref for _, _, refs in pack.cited_items() for ref in refs}
    assert cited == set(pack.sources), set(pack.sources) - cited


@pytest.mark.parametrize("code", JURISDICTION_CODES)
def test_every_pack_says_how_each_source_was_checked(code: str) -> None:
    for source in load_pack(code).sources.values():
        assert source.url.startswith(("https://", "http://"))
        assert source.verified in ("primary_text", "secondary_sources", "unconfirmed")
        if source.verified != "primary_text":
            assert source.note, f"{source.title} {source.article}: say what was not checked"
