"""The one drift-state mapping (broker/domain/drift.py) that `strongroom deploy status` and the console's drift
page both show: each state, its sentence and their order, pinned here once. The CLI's adapter (containers
to `Seen`) is tested in tests/unit/cli/deploy/test_status.py, the console's page in
tests/e2e/console/test_console_http.py."""

from __future__ import annotations

import pytest

from broker.domain.drift import Ledger, Rotation, Row, Running, Seen, Verdict, judge

FP_NOW = "hmac-sha256:" + "1" * 64
FP_OLD = "hmac-sha256:" + "2" * 64
LAST = Row("d-1", "v2", FP_NOW, "deployed")


def ledger(
    *,
    last: Row | None = LAST,
    rotated: tuple[Rotation, ...] = (),
    attempt: Row | None = None,
    behind: Row | None = None,
) -> Ledger:
    return Ledger(last, FP_NOW, rotated, attempt, behind)


def runs(version: str | None = "v2", fingerprint: str | None = FP_NOW) -> Seen:
    return Seen(running=Running(version, fingerprint))


def pairs(verdict: Verdict) -> list[tuple[str, str]]:
    return list(zip(verdict.states, verdict.details, strict=True))


@pytest.mark.parametrize("seen", [None, runs()], ids=["ledger only", "inspected"])
def test_current_is_the_only_state_that_is_not_a_problem(seen: Seen | None) -> None:
    verdict = judge(ledger(), seen)
    assert (pairs(verdict), verdict.state, verdict.problem, verdict.describe()) == (
        [("current", "current")],
        "current",
        False,
        "current",
    )


def test_ledger_only_drift_compares_the_ledgers_fingerprint() -> None:
    verdict = judge(ledger(last=Row("d-1", "v2", FP_OLD, "deployed")))
    assert pairs(verdict) == [("drift", "drift: the deployed env differs from what a deploy would give now")]
    assert verdict.problem


def test_inspected_drift_compares_what_runs_not_the_ledger() -> None:
    # The ledger's fingerprint is stale but the running container has today's env: what runs wins.
    assert judge(ledger(last=Row("d-1", "v2", FP_OLD, "deployed")), runs()).states == ("current",)
    assert pairs(judge(ledger(), runs(fingerprint=FP_OLD))) == [
        ("drift", "drift: its env differs from what a deploy would give now")
    ]
    assert pairs(judge(ledger(), runs(version=None, fingerprint=FP_OLD))) == [
        (
            "drift",
            "drift: its env differs from what a deploy would give now and it runs an unlabelled version, "
            "the ledger v2",
        )
    ]


def test_rotated_names_each_key_and_its_versions_after_drift() -> None:
    rotated = (Rotation("APP_SECRET", 1, 2), Rotation("GONE", 3, None))
    verdict = judge(ledger(last=Row("d-1", "v2", FP_OLD, "deployed"), rotated=rotated))
    assert verdict.states == ("drift", "rotated")
    assert verdict.describe() == (
        "drift: the deployed env differs from what a deploy would give now; "
        "rotated: APP_SECRET v1→v2, GONE v3→deleted"
    )


def test_missing_names_up_to_three_stopped_containers() -> None:
    assert pairs(judge(ledger(), Seen())) == [("missing", "missing: no running container")]
    stopped = Seen(stopped=("a", "b", "c", "d"))
    assert pairs(judge(ledger(), stopped)) == [
        ("missing", "missing: no running container (stopped: a, b, c)")
    ]


def test_unreachable_says_so_once_and_keeps_the_rotated_keys() -> None:
    verdict = judge(ledger(rotated=(Rotation("A", 1, 2),)), Seen(error="unreachable: no route\nmore"))
    assert pairs(verdict) == [("unreachable", "unreachable: no route"), ("rotated", "rotated: A v1→v2")]
    assert judge(ledger(), Seen(error="host key CHANGED")).details == ("unreachable: host key CHANGED",)
    assert judge(ledger(), Seen(error="")).details == ("unreachable: no detail",)


def test_never_deployed_is_a_problem_whatever_was_seen() -> None:
    for seen in (None, Seen(), runs()):
        verdict = judge(ledger(last=None), seen)
        assert pairs(verdict) == [("never deployed", "never deployed")] and verdict.problem


def test_a_failed_or_skipped_attempt_after_the_last_success_comes_first() -> None:
    failed = Row("d-2abcdefgh", "v3-0123456789abc", None, "failed", "web1: refused\nmore")
    verdict = judge(ledger(attempt=failed, last=Row("d-1", "v2", FP_OLD, "deployed")))
    assert pairs(verdict) == [
        ("failed", "failed: deploy d-2abcde of v3-012345678 (failed): web1: refused"),
        ("drift", "drift: the deployed env differs from what a deploy would give now"),
    ]
    skipped = judge(ledger(attempt=Row("d-2", "v3", None, "skipped")))
    assert skipped.details == ("failed: deploy d-2 of v3 (skipped): no reason recorded",)
    # The last success itself, or a later success, is no failure.
    assert judge(ledger(attempt=LAST)).states == ("current",)
    assert judge(ledger(attempt=Row("d-9", "v9", None, "deployed"))).states == ("current",)


def test_a_failed_first_attempt_says_both_failed_and_never_deployed() -> None:
    verdict = judge(ledger(last=None, attempt=Row("d-2", "v3", None, "failed", "unreachable")))
    assert verdict.describe() == "failed: deploy d-2 of v3 (failed): unreachable; never deployed"


def test_behind_comes_after_failed_and_before_drift_and_rotated() -> None:
    verdict = judge(
        ledger(
            last=Row("d-1", "v2", FP_OLD, "deployed"),
            attempt=Row("d-2", "v3", None, "failed"),
            behind=Row("d-3abcdefgh", "v3", None, "deployed"),
            rotated=(Rotation("A", 1, 2),),
        )
    )
    assert verdict.states == ("failed", "behind", "drift", "rotated")
    assert verdict.details[1] == "behind: runs v2; v3 was deployed to its role since (deploy d-3abcde)"


def test_a_deploy_still_running_on_the_host_is_deploying_and_a_problem() -> None:
    running = Row("d-4abcdefgh", "v4", None, "running", "the deploy has not reported this host yet")
    verdict = judge(ledger(attempt=running), runs())
    assert pairs(verdict) == [
        ("deploying", "deploying: deploy d-4abcde of v4 has not reported this host yet")
    ]
    assert verdict.problem
    # Before the host's first success too: both said.
    assert judge(ledger(last=None, attempt=running)).states == ("deploying", "never deployed")


def test_an_abandoned_deploy_that_never_reported_the_host_is_a_failed_attempt_with_its_reason() -> None:
    why = "the deploy was abandoned without reporting this host: it may run either version"
    verdict = judge(ledger(attempt=Row("d-5", "v5", None, "abandoned", why)))
    assert pairs(verdict) == [("failed", f"failed: deploy d-5 of v5 (abandoned): {why}")]
