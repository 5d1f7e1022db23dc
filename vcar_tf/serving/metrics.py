"""Prometheus metrics (prometheus_client), exposed at /monitoring/prometheus/metrics as TF Serving does."""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServingMetrics:
    """One registry per server, so that several servers in one process keep their own counts."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("vcar_serve_requests", "Requests answered, by model, method, protocol and status code",
                                ["model", "method", "protocol", "code"], registry=self.registry)
        self.latency = Histogram("vcar_serve_request_latency_seconds", "Time to answer a request",
                                 ["model", "method", "protocol"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("vcar_serve_in_flight_requests", "Requests being answered", registry=self.registry)
        self.open_streams = Gauge("vcar_serve_open_streams", "Open server-side streams", registry=self.registry)
        self.batch_size = Histogram("vcar_serve_batch_size", "Requests per batch run (--enable_batching)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)

    def observe(self, model, method, protocol, code, seconds):
        self.requests.labels(model, method, protocol, code).inc()
        self.latency.labels(model, method, protocol).observe(seconds)

    def exposition(self):
        """(body bytes, content type) of the metrics page."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
