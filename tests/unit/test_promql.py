"""Parsing Prometheus instant-query answers, including the ways they fail."""

from __future__ import annotations

import math

import pytest

from braid.dataplane.promql import (
    PrometheusQueryError,
    PromSample,
    parse_query_response,
    single_value,
)


def test_vector_samples_keep_labels_value_and_time() -> None:
    samples = parse_query_response(
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [
                    {"metric": {"model": "a", "job": "triton"}, "value": [1700000000.5, "12"]},
                    {"metric": {"model": "b"}, "value": [1700000000.5, "NaN"]},
                ],
            },
        }
    )
    assert samples[0] == PromSample({"model": "a", "job": "triton"}, 12.0, 1700000000.5)
    assert math.isnan(samples[1].value)


def test_empty_vector_means_no_series() -> None:
    samples = parse_query_response(
        {"status": "success", "data": {"resultType": "vector", "result": []}}
    )
    assert samples == []
    assert single_value(samples) is None


def test_scalar_is_one_unlabelled_sample() -> None:
    samples = parse_query_response(
        {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "+Inf"]}}
    )
    assert samples == [PromSample({}, math.inf, 1.0)]
    assert single_value(samples) == math.inf


def test_errors_carry_prometheus_message() -> None:
    with pytest.raises(PrometheusQueryError, match=r"bad_data.*unexpected end of input"):
        parse_query_response(
            {"status": "error", "errorType": "bad_data", "error": "unexpected end of input"}
        )


def test_range_vectors_are_refused_with_a_hint() -> None:
    with pytest.raises(PrometheusQueryError, match="rate"):
        parse_query_response({"status": "success", "data": {"resultType": "matrix", "result": []}})


def test_single_value_refuses_several_series() -> None:
    with pytest.raises(PrometheusQueryError, match="one series"):
        single_value([PromSample({"a": "1"}, 1.0), PromSample({"a": "2"}, 2.0)])
