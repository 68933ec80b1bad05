"""DNS in user space: parse packets the kernel copied (parse), pair queries with responses
(transactions), and remember which name produced which address (cache). Mapping to
OpenTelemetry lives in otelpeers.otel. Nothing is imported here: the detection process takes
only the records it needs, without dnspython."""
