"""`grctl.tracing.enable_otlp`: spans leave the process over OTLP/HTTP, as a collector receives them.

The receiver is a plain HTTP server on loopback that decodes what the real exporter posts with
the OTLP protobuf definitions (`opentelemetry-proto`), as a collector's OTLP/HTTP receiver does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from grctl import tracing

trace_service_pb2 = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")


class _Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, Any]] = []  # (path, content type, decoded request)
        self.got = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:  # the http.server hook's name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.requests.append((self.path, self.headers.get("Content-Type", ""), request))
        self.server.got.set()
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:  # the base class's signature
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_spans_are_exported_over_otlp_http_with_the_service_name(receiver: _Receiver) -> None:
    port = receiver.server_address[1]
    provider = tracing.enable_otlp(f"http://127.0.0.1:{port}/v1/traces", service_name="orders-api")
    try:
        with tracing.start_span("Order", "order-7", "01RUN") as traceparent:
            assert traceparent is not None and traceparent.startswith("00-")
    finally:
        tracing.disable()
        provider.shutdown()  # flushes the batch processor: the export happens here, before it returns
    assert receiver.got.is_set(), "the exporter posted nothing"
    path, content_type, request = receiver.requests[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    spans = [
        (resource_spans.resource, span)
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    assert [span.name for _, span in spans] == ["grctl.start Order"]
    resource, span = spans[0]
    attributes = {a.key: a.value.string_value for a in span.attributes}
    assert attributes == {"grctl.workflow_type": "Order", "grctl.wf_id": "order-7", "grctl.run_id": "01RUN"}
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "orders-api"
    # The traceparent handed to the start directive names this very span.
    assert traceparent.split("-")[1] == span.trace_id.hex() and traceparent.split("-")[2] == span.span_id.hex()
