"""A /metrics body read the way Prometheus reads it: every sample by name and labels."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

Series = tuple[str, frozenset[tuple[str, str]]]


def parse_metrics(text: str) -> dict[Series, float]:
    """Every sample of a /metrics body, keyed by name and labels, read by Prometheus' parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: Mapping[Series, float], name: str, **labels: str) -> float | None:
    """The sample `name` with exactly these `labels`, or None when there is none."""
    return metrics.get((name, frozenset(labels.items())))


def labels_of(metrics: Mapping[Series, float], name: str) -> list[dict[str, str]]:
    """The label sets of every sample called `name`."""
    return [dict(labels) for sample_name, labels in metrics if sample_name == name]
