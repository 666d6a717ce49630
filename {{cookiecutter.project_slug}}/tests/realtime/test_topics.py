"""MQTT topic rules, checked on the spec's examples and against a reference model written differently."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from {{ cookiecutter.package_name }}.realtime import (
    InvalidSubscription,
    InvalidTopic,
    TopicIndex,
    matches,
    topic_matches,
    validate_filter,
    validate_topic,
)
from {{ cookiecutter.package_name }}.realtime.brokers.memory import glob_match
from {{ cookiecutter.package_name }}.realtime.topics import escape_glob, filter_to_glob

VALID_FILTER = re.compile(r"#|(\+|[^/+#]*)(/(\+|[^/+#]*))*(/#)?", re.DOTALL)


def reference_matches(topic: str, topic_filter: str) -> bool:
    """MQTT matching as one regular expression per filter."""
    if topic.startswith("$") and topic_filter[0] in "+#":
        return False
    pattern = ""
    for position, level in enumerate(topic_filter.split("/")):
        if level == "#":
            pattern = pattern + "(/.*)?" if position else ".*"
            break
        pattern += ("/" if position else "") + ("[^/]*" if level == "+" else re.escape(level))
    return re.fullmatch(pattern, topic, re.DOTALL) is not None


def reference_valid_filter(text: str) -> bool:
    return bool(text) and "\x00" not in text and VALID_FILTER.fullmatch(text) is not None


LEVELS = ["a", "b", "", "$s", "x y", "*", "[x]", "?", "\\"]
topic_levels = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=5)
topics = topic_levels.map("/".join).filter(bool)
filters = st.builds(
    lambda levels, tail: "/".join(levels + tail),
    st.lists(st.sampled_from([*LEVELS, "+"]), min_size=0, max_size=4),
    st.sampled_from([[], ["#"]]),
).filter(bool)


@pytest.mark.parametrize(
    ("topic", "topic_filter", "expected"),
    [
        ("sport/tennis/player1", "sport/tennis/player1/#", True),
        ("sport/tennis/player1/ranking", "sport/tennis/player1/#", True),
        ("sport/tennis/player1/score/wimbledon", "sport/tennis/player1/#", True),
        ("sport", "sport/#", True),
        ("sportx", "sport/#", False),
        ("sport/tennis/player1", "sport/tennis/+", True),
        ("sport/tennis/player1/ranking", "sport/tennis/+", False),
        ("sport", "sport/+", False),
        ("sport/", "sport/+", True),
        ("/finance", "+/+", True),
        ("/finance", "/+", True),
        ("/finance", "+", False),
        ("a//b", "a/+/b", True),
        ("a", "#", True),
        ("/", "#", True),
        ("a/$b", "a/+", True),
        ("$SYS/monitor/Clients", "#", False),
        ("$SYS/monitor/Clients", "+/monitor/Clients", False),
        ("$SYS/monitor/Clients", "$SYS/#", True),
        ("$SYS/monitor/Clients", "$SYS/monitor/+", True),
        ("a", "a", True),
        ("a/b", "a", False),
        ("a", "a/b", False),
    ],
)
def test_matching_follows_the_mqtt_examples(topic: str, topic_filter: str, expected: bool) -> None:
    assert topic_matches(topic, topic_filter) is expected
    assert matches(topic, {topic_filter, "unrelated/+"}) is expected
    index: TopicIndex[str] = TopicIndex()
    index.add(topic_filter, "subscriber")
    assert index.match(topic) == ({"subscriber"} if expected else set())


@pytest.mark.parametrize(
    "topic_filter", ["a", "+", "#", "a/#", "+/+", "/", "//", "a//b", "+/#", "$SYS/#", "a b/c"]
)
def test_valid_filters_are_accepted(topic_filter: str) -> None:
    validate_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter", ["", "a+", "a/b#", "#/a", "a/#/b", "++", "a/+b", "a\x00b", "\ud800", "x" * 65536]
)
def test_invalid_filters_raise_invalid_subscription(topic_filter: str) -> None:
    with pytest.raises(InvalidSubscription) as raised:
        validate_filter(topic_filter)
    assert raised.value.code == "invalid_topic"


@pytest.mark.parametrize("topic", ["", "a/+", "#", "a/#", "a\x00", "é" * 40000])
def test_invalid_topic_names_raise_invalid_topic(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        validate_topic(topic)


@given(st.text(alphabet="ab/+#$ \x00", max_size=12))
def test_filter_validation_agrees_with_the_reference(text: str) -> None:
    try:
        validate_filter(text)
    except InvalidSubscription:
        assert not reference_valid_filter(text)
    else:
        assert reference_valid_filter(text)


@given(topics, filters)
def test_matching_agrees_with_the_reference(topic: str, topic_filter: str) -> None:
    assert topic_matches(topic, topic_filter) is reference_matches(topic, topic_filter)


@given(st.lists(filters, max_size=30), st.lists(topics, min_size=1, max_size=10), st.data())
def test_the_index_finds_exactly_the_matching_subscriptions(
    subscriptions: list[str], probes: list[str], data: st.DataObject
) -> None:
    index: TopicIndex[int] = TopicIndex()
    for number, topic_filter in enumerate(subscriptions):
        index.add(topic_filter, number)
    removed = data.draw(
        st.sets(st.sampled_from(range(len(subscriptions))) if subscriptions else st.nothing())
    )
    for number in removed:
        index.discard(subscriptions[number], number)
    for topic in probes:
        expected = {
            number
            for number, topic_filter in enumerate(subscriptions)
            if number not in removed and reference_matches(topic, topic_filter)
        }
        assert index.match(topic) == expected
    assert len(index) == len({subscriptions[n] for n in range(len(subscriptions)) if n not in removed})


@given(topics, filters, st.sampled_from(["svc", "a*b", "[p]?", "back\\slash"]))
def test_the_broker_glob_never_misses_a_match(topic: str, topic_filter: str, prefix: str) -> None:
    glob = escape_glob(f"{prefix}:topic:") + filter_to_glob(topic_filter)
    if reference_matches(topic, topic_filter):
        assert glob_match(glob, f"{prefix}:topic:{topic}")


@given(st.text(max_size=20))
def test_an_escaped_glob_matches_only_its_text(text: str) -> None:
    assert glob_match(escape_glob(text), text)
    assert not glob_match(escape_glob(text), text + "x")


def test_the_index_forgets_empty_branches() -> None:
    index: TopicIndex[str] = TopicIndex()
    assert index.add("a/+/c", "one") is True
    assert index.add("a/+/c", "two") is False
    assert index.discard("a/+/c", "one") is False
    assert index.discard("a/+/c", "two") is True
    assert index.discard("a/+/c", "two") is False
    assert len(index) == 0
    assert index.match("a/b/c") == set()


def test_matching_ten_thousand_subscriptions_is_not_a_scan() -> None:
    index: TopicIndex[int] = TopicIndex()
    subscriptions = [f"orders/{number}/status" for number in range(9_000)]
    subscriptions += [f"users/{number}/#" for number in range(990)]
    subscriptions += ["orders/+/status"] * 5 + ["#"] * 5
    for number, topic_filter in enumerate(subscriptions):
        index.add(topic_filter, number)
    probes = [f"orders/{number}/status" for number in range(0, 9_000, 9)]

    started = time.perf_counter()
    for topic in probes:
        assert len(index.match(topic)) == 11
    indexed = (time.perf_counter() - started) / len(probes)

    sample = probes[:20]
    started = time.perf_counter()
    for topic in sample:
        assert sum(topic_matches(topic, topic_filter) for topic_filter in subscriptions) == 11
    scanned = (time.perf_counter() - started) / len(sample)

    print(
        f"\n10,000 subscriptions: index {indexed * 1e6:.1f} us per topic, linear scan {scanned * 1e6:.0f} us"
    )
    assert indexed * 50 < scanned
