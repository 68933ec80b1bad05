"""Every attribute, span, event and metric name otelpeers emits, in one place.

Names follow the OpenTelemetry semantic conventions where one exists; everything else lives
under the ``otelpeers.`` namespace. docs/telemetry.md describes each one (type and meaning).
Other modules append their constants at the end; nothing here is renamed once released.
"""

from __future__ import annotations

# ---- resource: the owning process, and the host ------------------------------------------
SERVICE_NAME = "service.name"
PROCESS_PID = "process.pid"
PROCESS_PARENT_PID = "process.parent_pid"
PROCESS_EXECUTABLE_NAME = "process.executable.name"
PROCESS_EXECUTABLE_PATH = "process.executable.path"
PROCESS_COMMAND_LINE = "process.command_line"
PROCESS_OWNER = "process.owner"
CONTAINER_ID = "container.id"
HOST_NAME = "host.name"
HOST_ID = "host.id"
HOST_ARCH = "host.arch"
OS_TYPE = "os.type"

UNKNOWN_SERVICE = "unknown"  # service.name of flows whose owning process was never seen

# ---- connection spans: semantic conventions ----------------------------------------------
NETWORK_TRANSPORT = "network.transport"
NETWORK_TYPE = "network.type"
NETWORK_LOCAL_ADDRESS = "network.local.address"
NETWORK_LOCAL_PORT = "network.local.port"
NETWORK_PEER_ADDRESS = "network.peer.address"
NETWORK_PEER_PORT = "network.peer.port"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
CLIENT_ADDRESS = "client.address"
CLIENT_PORT = "client.port"
ERROR_TYPE = "error.type"

# ---- connection spans: otelpeers ---------------------------------------------------------
FLOW_ID = "otelpeers.flow.id"
FLOW_LOCAL_PEER_ID = "otelpeers.flow.local_peer_id"
FLOW_BYTES_SENT = "otelpeers.flow.bytes_sent"
FLOW_BYTES_RECEIVED = "otelpeers.flow.bytes_received"
FLOW_PACKETS_SENT = "otelpeers.flow.packets_sent"
FLOW_PACKETS_RECEIVED = "otelpeers.flow.packets_received"
FLOW_WIRE_BYTES_SENT = "otelpeers.flow.wire_bytes_sent"
FLOW_WIRE_BYTES_RECEIVED = "otelpeers.flow.wire_bytes_received"
FLOW_CLOSE_REASON = "otelpeers.flow.close_reason"
FLOW_COMPLETE = "otelpeers.flow.complete"
SOCKET_COOKIE = "otelpeers.socket.cookie"
NETNS_COOKIE = "otelpeers.netns.cookie"
OWNER_UID = "otelpeers.owner.uid"
OWNER_JOINED = "otelpeers.owner.joined"
TCP_SRTT_US = "otelpeers.tcp.srtt_us"
TCP_RETRANSMITS = "otelpeers.tcp.retransmits"
TCP_BYTES_ACKED = "otelpeers.tcp.bytes_acked"
TCP_BYTES_RECEIVED = "otelpeers.tcp.bytes_received"
LISTENER_ADDRESS = "otelpeers.listener.address"
LISTENER_PORT = "otelpeers.listener.port"
LISTENER_BIND_TIME = "otelpeers.listener.bind_time"  # Unix epoch nanoseconds
LISTENER_LISTEN_TIME = "otelpeers.listener.listen_time"  # Unix epoch nanoseconds

# ---- connection span names (low cardinality) ---------------------------------------------
SPAN_TCP_CONNECT = "tcp connect"
SPAN_TCP_ACCEPT = "tcp accept"
SPAN_UDP_SEND = "udp send"
SPAN_UDP_RECEIVE = "udp receive"
SPAN_ICMP = "icmp"

# ---- instrumentation scope ---------------------------------------------------------------
SCOPE_NAME = "otelpeers"

# ---- metrics -----------------------------------------------------------------------------
METRIC_FLOW_BYTES = "otelpeers.flow.bytes"  # counter, By
METRIC_FLOW_CONNECTIONS = "otelpeers.flow.connections"  # counter, {connection}
METRIC_AGENT_PREFIX = "otelpeers.agent."  # observable counters of agent self-telemetry
NETWORK_IO_DIRECTION = "network.io.direction"  # transmit | receive
FLOW_DIRECTION = "otelpeers.flow.direction"  # outbound | inbound | unknown
PEER_OTHER = "other"  # network.peer.address once the (process, peer) bound is reached

# ---- DNS spans (otelpeers.dns) -----------------------------------------------------------
SPAN_DNS_QUERY = "dns query"
DNS_QUESTION_NAME = "dns.question.name"
DNS_QUESTION_TYPE = "dns.question.type"  # "A", "AAAA", "HTTPS", ...
DNS_RESPONSE_CODE = "dns.response_code"  # "NOERROR", "NXDOMAIN", "SERVFAIL", ... or "TIMEOUT"
DNS_ANSWERS = "dns.answers"  # addresses the answer gave for the question (string[])
DNS_CNAME_CHAIN = "otelpeers.dns.cname_chain"  # question name, then each CNAME target
DNS_TTL_MIN = "otelpeers.dns.ttl_min"
DNS_RETRIES = "otelpeers.dns.retries"
DNS_TRUNCATED = "otelpeers.dns.truncated"
DNS_TXN_ID = "otelpeers.dns.txn_id"
DNS_ID = "otelpeers.dns.id"  # the 16-bit DNS message id
DNS_LINK_KIND = "otelpeers.dns.link"  # on span links: "resolution" | "stub_upstream"
DNS_MATCH = "otelpeers.dns.match"  # on a connection's link: "same_process" | "host"
METRIC_DNS_LOOKUP_DURATION = "dns.lookup.duration"  # histogram, seconds

# ---- resource: process context from /proc (otelpeers.process) ----------------------------
PROCESS_USER_ID = "process.user.id"  # effective uid
PROCESS_USER_NAME = "process.user.name"
PROCESS_REAL_USER_ID = "process.real_user.id"
PROCESS_REAL_USER_NAME = "process.real_user.name"
PROCESS_VPID = "process.vpid"  # pid inside the process's own pid namespace (containers)
PROCESS_CREATION_TIME = "process.creation.time"  # ISO 8601
PROCESS_LINUX_CGROUP = "process.linux.cgroup"  # one line of /proc/PID/cgroup
CONTAINER_RUNTIME_NAME = "container.runtime.name"
PROCESS_GROUP_ID = "otelpeers.process.group.id"  # effective gid (no semconv name yet)
PROCESS_GROUP_NAME = "otelpeers.process.group.name"
PROCESS_EXE_SHA256 = "otelpeers.process.exe_sha256"
PROCESS_ANCESTRY = "otelpeers.process.ancestry"  # executable names, parent first (string[])
PROCESS_ANCESTRY_PIDS = "otelpeers.process.ancestry_pids"  # their pids, same order (int[])
PROCESS_CONTEXT = "otelpeers.process.context"  # "procfs" | "exited" (kernel facts only)
PROCESS_CGROUP_ID = "otelpeers.process.cgroup_id"  # kernel cgroup id of the socket's owner
NETNS_INODE = "otelpeers.netns.inode"
PIDNS_INODE = "otelpeers.pidns.inode"
MNTNS_INODE = "otelpeers.mntns.inode"

# ---- connection spans: what DNS and file access say about the flow (lead) ------------------
DNS_RESOLVED = "otelpeers.dns.resolved"  # false: no resolution produced the peer address
EVENT_SENSITIVE_FILE = "otelpeers.file.sensitive_open"  # span event: a file opened before
FILE_PATH = "file.path"
FILE_OPEN_FLAGS = "otelpeers.file.open_flags"
METRIC_DNS_QUERIES = "otelpeers.dns.queries"  # counter: transactions by rcode and qtype

# ---- detections (log records, span events, counter) ---------------------------------------
EVENT_DETECTION = "otelpeers.detection"  # log record event_name and span event name
SECURITY_RULE_NAME = "security_rule.name"
SECURITY_RULE_CATEGORY = "security_rule.category"
SECURITY_RULE_UUID = "security_rule.uuid"
SECURITY_RULE_RULESET = "security_rule.ruleset"
SECURITY_RULE_VERSION = "security_rule.version"
SECURITY_RULE_DESCRIPTION = "security_rule.description"
SECURITY_RULE_REFERENCE = "security_rule.reference"
DETECTION_ID = "otelpeers.detection.id"
DETECTION_SCORE = "otelpeers.detection.score"  # 0..1
DETECTION_SEVERITY = "otelpeers.detection.severity"  # low | medium | high | critical
DETECTION_SUMMARY = "otelpeers.detection.summary"
DETECTION_REPEATS = "otelpeers.detection.repeats"  # suppressed repeats since the last one
DETECTION_ACTOR = "otelpeers.detection.actor"  # the key detectors keep state by
DETECTION_ACTOR_KIND = "otelpeers.detection.actor.kind"  # process | address
DETECTION_PEER_CIDR = "otelpeers.detection.peer.cidr"  # rules about many targets
DETECTION_EVIDENCE_PREFIX = "otelpeers.detection.evidence."  # + evidence key
SOURCE_ADDRESS = "source.address"
SOURCE_PORT = "source.port"
METRIC_DETECTIONS = "otelpeers.detections"  # counter: by rule and severity

# ---- metrics per peer pair (docs/telemetry.md, metrics) ------------------------------------
METRIC_FLOW_PACKETS = "otelpeers.flow.packets"  # counter, {packet}
METRIC_FLOW_DURATION = "otelpeers.flow.duration"  # histogram, s
METRIC_FLOW_SIZE = "otelpeers.flow.size"  # histogram, By (sent + received, per connection)
METRIC_TCP_SRTT = "otelpeers.tcp.srtt"  # histogram, s
METRIC_PEERS_NEW = "otelpeers.peers.new"  # counter, {peer}
FLOW_STATE = "otelpeers.flow.state"  # opened | failed | closed

# ---- existing sockets (issue 11, docs/existing-sockets.md) ---------------------------------
FLOW_ADOPTED = "otelpeers.flow.adopted"  # true: the connection existed before the agent
# On the link from a part of a connection that ended at an agent's stop (close_reason shutdown)
# to the connection's usual span, which the part that sees it end (a later agent's) has.
FLOW_LINK_KIND = "otelpeers.flow.link"  # "continued_by"
OWNER_KERNEL = "otelpeers.owner.kernel"  # true: the kernel itself sent it (RST, ICMP error)
KERNEL_SERVICE = "kernel"  # service.name and process.executable.name of the kernel owner

# ---- summary records (issue 10, docs/telemetry.md "Kernel source") ----------------------
# > 0: the span stands for that many connections of one pair and interval whose own records
# the kernel could not deliver (counted exactly by its aggregates)
FLOW_SUMMARY = "otelpeers.flow.summary"
