"""The SDK's own route to OTLP/JSON (protobuf, json_format, ids as hex): the reference the
agent's encoders are tested against."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

from google.protobuf.json_format import MessageToDict

_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId"})


def _hex_ids(node: Any) -> Any:
    # protobuf's JSON mapping writes bytes as base64; OTLP/JSON wants ids as lowercase hex
    if isinstance(node, dict):
        return {k: (base64.b64decode(v).hex() if k in _ID_FIELDS and isinstance(v, str)
                    else _hex_ids(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_hex_ids(x) for x in node]
    return node


def proto_document(message: Any) -> Any:
    """An OTLP protobuf request as the parsed OTLP/JSON document."""
    return json.loads(json.dumps(_hex_ids(MessageToDict(message, use_integers_for_enums=True))))


def protobuf_modules_loaded_by(code: str) -> list[str]:
    """The protobuf and OTLP message modules a fresh interpreter has loaded after code."""
    probe = code + ("\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules"
                    " if m.startswith(('google', 'opentelemetry.proto')))))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()
    return json.loads(out[-1])
