"""The listener's admission identity and dedup index, one behaviour at a time.

Written from what mutation testing of `alert_keys` and `DedupIndex` showed the
pipeline tests leave unchecked (bench/mutate.py ... --lines).
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from market_agent.listen.admission import DedupIndex, alert_keys, webhook_record
from market_agent.models import Notification


def note(*alerts: dict[str, Any], status: str = "firing") -> Notification:
    return Notification.model_validate({"status": status, "alerts": list(alerts)})


def test_alert_keys_are_fingerprint_status_and_start_per_alert() -> None:
    group = note(
        {"labels": {"a": "1"}, "fingerprint": "f1", "startsAt": "2026-11-25T10:00:00Z"},
        {"labels": {"a": "2"}, "fingerprint": "f2", "status": "resolved"},
    )
    assert alert_keys(group) == ["f1|firing|2026-11-25T10:00:00+00:00", "f2|resolved|"]
    assert alert_keys(group) == [a.identity(with_status=True) for a in group.alerts]


def test_label_keys_ignore_label_order_and_differ_by_value() -> None:
    one = note({"labels": {"a": "1", "b": "2"}})
    same = note({"labels": {"b": "2", "a": "1"}})
    other = note({"labels": {"a": "1", "b": "3"}})
    assert alert_keys(one) == alert_keys(same)
    assert alert_keys(one) != alert_keys(other)
    assert alert_keys(one)[0].startswith("labels:")


def test_label_keys_are_stable_across_versions() -> None:
    # Journaled keys are compared after a restart (and an upgrade): the hash must not drift.
    assert alert_keys(note({"labels": {"a": "1", "b": "2"}})) == ["labels:5f13efef7cdd95e7|firing|"]


def test_the_journaled_record_names_its_notification_and_keys() -> None:
    group = note({"labels": {"alertname": "X"}}, status="firing")
    fields = {"id": "n1", "source": "webhook", "group_key": "", "status": "firing"}
    from_model = webhook_record(group, "n1", ["k"])
    from_body = webhook_record(group, "n1", ["k"], payload={"as": "received"})
    for record in (from_model, from_body):
        assert {key: record[key] for key in fields} == fields
        assert (record["alertnames"], record["alert_keys"]) == (["X"], ["k"])
    assert from_model["payload"]["alerts"][0]["labels"] == {"alertname": "X"}
    assert from_body["payload"] == {"as": "received"}


def test_lookup_is_none_while_any_key_is_new() -> None:
    index = DedupIndex()
    index.reserve(["a"], None)
    assert index.lookup(["a", "b"]) is None
    assert index.lookup(["b", "a"]) is None
    assert index.lookup(["a"]) == []


def test_lookup_returns_each_in_flight_commit_once() -> None:
    index, first, second = DedupIndex(), Future[Any](), Future[Any]()
    index.reserve(["a", "b"], first)
    index.reserve(["c"], second)
    index.reserve(["d"], None)
    found = index.lookup(["a", "b", "c", "d"])
    assert found is not None
    assert sorted(map(id, found)) == sorted(map(id, [first, second]))


def test_a_key_keeps_the_commit_that_first_claimed_it() -> None:
    index, first, later = DedupIndex(), Future[Any](), Future[Any]()
    index.reserve(["a"], first)
    index.reserve(["a"], later)
    assert index.lookup(["a"]) == [first]


def test_the_index_holds_exactly_max_keys_and_forgets_the_least_recently_seen() -> None:
    index = DedupIndex(max_keys=2)
    index.reserve(["a"], None)
    index.reserve(["b"], None)
    assert len(index) == 2
    assert index.lookup(["a"]) == []  # seen again: now the newest
    index.reserve(["c"], None)
    assert index.lookup(["b"]) is None
    assert index.lookup(["a", "c"]) == []


def test_reserving_a_known_key_refreshes_it() -> None:
    index = DedupIndex(max_keys=2)
    index.reserve(["a"], None)
    index.reserve(["b"], None)
    index.reserve(["a"], None)
    index.reserve(["c"], None)
    assert index.lookup(["a", "c"]) == []
    assert index.lookup(["b"]) is None


def test_settle_committed_keeps_keys_as_on_disk() -> None:
    index, future = DedupIndex(), Future[Any]()
    index.reserve(["a", "b"], future)
    index.settle(["a", "b"], future, committed=True)
    assert index.lookup(["a", "b"]) == []


def test_settle_failed_forgets_only_that_commits_keys() -> None:
    index, failed, other = DedupIndex(), Future[Any](), Future[Any]()
    index.reserve(["old"], None)
    index.reserve(["mine"], failed)
    index.reserve(["theirs"], other)
    index.settle(["old", "mine", "theirs"], failed, committed=False)
    assert index.lookup(["mine"]) is None
    assert index.lookup(["old"]) == []
    assert index.lookup(["theirs"]) == [other]
    assert len(index) == 2
