"""Every label value the metrics pre-bind is one the code emits; the runbooks name only those."""

from __future__ import annotations

import re
from pathlib import Path

from broadcaster.metrics import INTENT_STATUSES, RESEND_REASONS
from broadcaster.tx.reasons import ResendReason

REPO = Path(__file__).resolve().parents[2]


def test_the_pre_bound_resend_reasons_are_exactly_the_ones_the_tx_side_sends_with() -> None:
    assert set(RESEND_REASONS) == {reason.value for reason in ResendReason}
    # Every ResendReason is used somewhere in broadcaster/tx (an enum member nobody sends with
    # would be a pre-bound label that never moves).
    sources = "\n".join(p.read_text() for p in (REPO / "broadcaster/tx").glob("*.py"))
    for reason in ResendReason:
        used = f"ResendReason.{reason.name}" in sources or f'"{reason.value}"' in sources
        assert used, f"ResendReason.{reason.name} is never sent with"


def test_the_alert_runbooks_name_only_label_values_the_code_emits() -> None:
    text = (REPO / "config/alerts.yml").read_text()
    for value in re.findall(r'reason="?\\?"?([a-z_]+)', text):
        assert value in RESEND_REASONS, value
    quoted = re.findall(r'"([a-z_]+)" means', text)
    assert quoted and set(quoted) <= set(RESEND_REASONS), quoted
    for value in re.findall(r'status="([a-z_]+)"', text):
        assert value in INTENT_STATUSES, value


def test_the_pre_bound_intent_statuses_are_ones_the_api_or_the_service_counts() -> None:
    api = "\n".join(p.read_text() for p in sorted((REPO / "broadcaster/api").glob("*.py")))
    told = set(re.findall(r'_on_(?:intent|refused)\("([a-z_]+)"\)', api))
    service = (REPO / "broadcaster/service.py").read_text()
    counted = set(
        re.findall(r'"([a-z]+)"', service.split("_COUNTED_STATUSES = ")[1].split("\n")[0])
    )
    assert set(INTENT_STATUSES) == told | counted


def test_the_orderflow_results_are_exactly_the_ones_the_sender_reports() -> None:
    """``bundles_total{result}`` takes only :data:`broadcaster.rpc.orderflow.RESULTS`, and every
    one of them is reported somewhere in the sender."""
    from broadcaster.rpc.orderflow import RESULTS

    source = (REPO / "broadcaster/rpc/orderflow.py").read_text()
    reported = set(re.findall(r'(?:report\([^)]*|return) "([a-z]+)"', source))
    assert reported == set(RESULTS), reported
    dashboard = (REPO / "config/grafana-dashboard.json").read_text()
    for value in re.findall(r'result=\\"([a-z]+)', dashboard):
        assert value in RESULTS, value


def test_the_bad_block_reasons_are_exactly_the_ones_the_body_checker_refuses_with() -> None:
    """``audit_bad_blocks_total{reason}`` takes only :data:`broadcaster.audit.body.BODY_REFUSALS`,
    and every one of them is raised somewhere in the checker (``unverified``: counted by the
    block reader when no endpoint's answer could be proven)."""
    from broadcaster.audit.body import BODY_REFUSALS

    source = (REPO / "broadcaster/audit/body.py").read_text()
    raised = set(re.findall(r'BodyRefused\(\s*"([a-z_]+)"', source))
    counted = set(
        re.findall(
            r'on_refused\(url, "([a-z_]+)"\)', (REPO / "broadcaster/audit/chain.py").read_text()
        )
    )
    assert raised | counted == set(BODY_REFUSALS), (raised, counted)
    assert "unverified" in counted


def test_the_alerts_name_only_signer_error_kinds_the_counter_counts() -> None:
    from broadcaster.metrics import SIGNER_ERROR_KINDS

    text = (REPO / "config/alerts.yml").read_text()
    named = {
        k
        for group in re.findall(r'signer_errors_total\{kind=~"([a-z_|]+)"', text)
        for k in group.split("|")
    }
    listed = re.findall(r"by kind: ([a-z_, ]+)\.\.\.", text)
    assert named and listed
    named |= {k.strip() for k in listed[0].split(",")}
    assert named <= set(SIGNER_ERROR_KINDS), named - set(SIGNER_ERROR_KINDS)


def test_the_inclusion_bad_block_reasons_are_the_body_checkers_and_not_in_body() -> None:
    """``inclusion_bad_blocks_total{reason}`` takes :data:`broadcaster.tx.reasons.
    INCLUSION_REFUSALS`: the body checker's reasons (spelled out on the tx side, which does not
    import the audit package) and ``not_in_body``, which the inclusion tracker counts."""
    from broadcaster.audit.body import BODY_REFUSALS
    from broadcaster.tx.reasons import INCLUSION_REFUSALS, NOT_IN_BODY

    assert set(INCLUSION_REFUSALS) == {*BODY_REFUSALS, NOT_IN_BODY}
    source = (REPO / "broadcaster/tx/inclusion.py").read_text()
    assert source.count("self.observer.bad_block(NOT_IN_BODY)") == 2
    assert "self.observer.bad_block(why)" in source  # the checker's, reported as refused
