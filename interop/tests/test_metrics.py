"""Prometheus metrics at GET /metrics, checked against exactly what was sent."""

from __future__ import annotations

import math

import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from support import PHOTOS, PROTOCOLS, corrupt_images, expect_error, expect_ok, image_bytes, send

K = 3  # successful requests per protocol
J = 2  # bad requests on each of BAD_ON
BAD_ON = ("tfs_grpc", "tfs_rest")
HISTOGRAMS = (
    "accel_request_duration_seconds",
    "accel_queue_wait_seconds",
    "accel_preprocess_seconds",
    "accel_inference_seconds",
)


def scrape(server) -> list[tuple[str, dict, float]]:
    r = requests.get(server.url + "/metrics", timeout=10)
    assert r.status_code == 200, f"GET /metrics: {r.status_code}"
    ctype = r.headers.get("content-type", "")
    assert ctype.startswith(("text/plain", "application/openmetrics-text")), f"/metrics content-type {ctype!r}"
    try:
        families = list(text_string_to_metric_families(r.text))
    except Exception as e:
        raise AssertionError(f"/metrics does not parse as Prometheus text: {e}\n{r.text[:1000]}") from None
    if ctype.startswith("application/openmetrics-text"):
        try:  # the stricter parser must accept it too
            list(openmetrics_families(r.text))
        except Exception as e:
            raise AssertionError(f"/metrics is served as OpenMetrics but does not parse as such: {e}") from None
    return [(s.name, dict(s.labels), s.value) for f in families for s in f.samples]


def total(samples, name, **labels) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items()))


def test_counts_match_requests_sent(start_server):
    srv = start_server("--model", "shuffle")
    for protocol in PROTOCOLS:
        for i in range(K):
            photo = PHOTOS[i % len(PHOTOS)]
            expect_ok(send(srv, protocol, [image_bytes(photo)]), [photo], srv)
    for protocol in BAD_ON:
        for _ in range(J):
            expect_error(send(srv, protocol, [corrupt_images()["random-bytes"]]), "INVALID_ARGUMENT", 400, None, srv)

    samples = scrape(srv)
    names = {n for n, _, _ in samples}
    assert "accel_requests_total" in names, f"no accel_requests_total among {sorted(names)[:40]}"

    for protocol in PROTOCOLS:
        ok = total(samples, "accel_requests_total", service="shuffle", protocol=protocol, code="OK")
        assert ok == K, f"accel_requests_total{{service=shuffle,protocol={protocol},code=OK}} = {ok}, sent {K}"
        bad_sent = J if protocol in BAD_ON else 0
        bad = total(samples, "accel_requests_total", service="shuffle", protocol=protocol, code="INVALID_ARGUMENT")
        assert bad == bad_sent, (
            f"accel_requests_total{{protocol={protocol},code=INVALID_ARGUMENT}} = {bad}, sent {bad_sent}"
        )
        every = total(samples, "accel_requests_total", service="shuffle", protocol=protocol)
        assert every == K + bad_sent, f"accel_requests_total{{protocol={protocol}}} over all codes = {every}, sent {K + bad_sent}"

    good = K * len(PROTOCOLS)
    sent = good + J * len(BAD_ON)
    for hist in HISTOGRAMS:
        count = total(samples, f"{hist}_count", service="shuffle")
        inf = total(samples, f"{hist}_bucket", service="shuffle", le="+Inf")
        assert count == good, f"{hist}_count{{service=shuffle}} = {count}, {good} requests succeeded"
        assert math.isclose(inf, count), f"{hist}: bucket le=+Inf {inf} != _count {count}"
        assert total(samples, f"{hist}_sum", service="shuffle") >= 0
    duration = total(samples, "accel_request_duration_seconds_count", service="shuffle")
    assert good <= duration <= sent, (
        f"accel_request_duration_seconds_count{{service=shuffle}} = {duration}; {good} succeeded of {sent} sent"
    )

    # A scrape is not a request of any protocol.
    again = scrape(srv)
    for protocol in PROTOCOLS:
        before = total(samples, "accel_requests_total", protocol=protocol)
        after = total(again, "accel_requests_total", protocol=protocol)
        assert before == after, f"scraping /metrics changed accel_requests_total{{protocol={protocol}}}: {before} -> {after}"
