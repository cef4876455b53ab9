"""Prometheus metrics: one registry and the metric objects every stage updates.

Input: nothing. Output: module-level metric objects (import and `.inc()` / `.set()` /
`.observe()`), exposed by the web role at /metrics. Side effects: none beyond the registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

queue_depth = Gauge(
    "relay_queue_depth", "Deliveries in the queue by state", ["state"], registry=REGISTRY
)
deliveries_total = Counter(
    "relay_deliveries_total", "Delivery attempts by outcome", ["outcome"], registry=REGISTRY
)
delivery_seconds = Histogram(
    "relay_delivery_seconds",
    "Duration of one delivery attempt",
    ["transport"],
    registry=REGISTRY,
)
smtp_sessions = Gauge("relay_smtp_sessions_open", "Open inbound SMTP sessions", registry=REGISTRY)
smtp_sessions_total = Counter(
    "relay_smtp_sessions_total", "Inbound SMTP sessions accepted", registry=REGISTRY
)
messages_accepted_total = Counter(
    "relay_messages_accepted_total", "Messages accepted (250 after commit)", registry=REGISTRY
)
intake_seconds = Histogram(
    "relay_intake_seconds", "Time from end of DATA to commit", registry=REGISTRY
)
event_buffer_size = Gauge(
    "relay_event_buffer_size", "Tracking events waiting to be written", registry=REGISTRY
)
events_total = Counter(
    "relay_tracking_events_total", "Tracking events received", ["type"], registry=REGISTRY
)
events_dropped_total = Counter(
    "relay_tracking_events_dropped_total",
    "Tracking events dropped (buffer full or store down)",
    registry=REGISTRY,
)
event_flush_seconds = Histogram(
    "relay_event_flush_seconds", "Time to write one batch of tracking events", registry=REGISTRY
)
http_request_seconds = Histogram(
    "relay_http_request_seconds", "API request latency", ["route"], registry=REGISTRY
)
webhooks_total = Counter(
    "relay_webhook_posts_total", "Webhook POSTs by result", ["result"], registry=REGISTRY
)
