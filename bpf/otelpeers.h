/* otelpeers kernel/user event ABI.
 *
 * One header for every record that crosses the ring buffer. Python mirrors it once, in
 * otelpeers/abi.py, and tests/unit/test_abi.py checks that offsets and sizes agree.
 * Every field is naturally aligned and every pad is explicit, so the layout is the same
 * for clang (BPF target) and for ctypes on x86_64 and arm64.
 */
#ifndef OTELPEERS_H
#define OTELPEERS_H

#define OP_ABI_VERSION 2
#define OP_COMM_LEN 16
#define OP_ADDR_LEN 16

enum op_event_type {
    OP_EV_SOCK_CREATE = 1, /* reserved: sock_create records the owner in a map, no event */
    OP_EV_BIND = 2,        /* cgroup/post_bind4|6: explicit bind, local address known */
    OP_EV_CONNECT = 3,     /* reserved (ABI 1): connect() is kept in the socket map now */
    OP_EV_ESTABLISHED = 4, /* reserved (ABI 1): established is kept in the socket map now */
    OP_EV_TCP_CLOSE = 5,   /* sock_ops: TCP reached CLOSE. The one complete record of a TCP
                            * connection: start time, addresses, owner, volume, TCP info */
    OP_EV_PEER = 6,        /* cgroup_skb: first packet of a non-TCP socket to/from a new peer */
    OP_EV_RELEASE = 7,     /* cgroup/sock_release: the socket is gone (not for TCP sockets
                            * with state callbacks: their OP_EV_TCP_CLOSE ends them). For a
                            * TCP connect() that never sent a SYN, start_ns is set */
    OP_EV_LISTEN = 8,      /* sock_ops TCP_LISTEN_CB: listen(), in the listener's context */
    OP_EV_DNS = 9,         /* cgroup_skb: a DNS packet (struct op_dns_event) */
    OP_EV_EXEC = 10,       /* sched:sched_process_exec (struct op_proc_event) */
    OP_EV_FORK = 11,       /* sched:sched_process_fork */
    OP_EV_EXIT = 12,       /* sched:sched_process_exit, main thread only */
    OP_EV_FILE_OPEN = 13,  /* syscalls:sys_enter_openat|openat2 of a sensitive path */
    OP_EV_KERNEL_REPLY = 14, /* tcp:tcp_send_reset without a socket, icmp:icmp_send: the kernel
                              * answered a packet no socket took (closed port). Owner: the
                              * kernel (OP_F_KERNEL). TCP: old_state = enum sk_rst_reason;
                              * ICMP: old_state = ICMP type, new_state = code. One record per
                              * (peer, local port) and aggregate interval; all counted there */
    OP_EV_MAX = 15,        /* size of the per-type drop counter array */
};

enum op_direction {
    OP_DIR_UNKNOWN = 0,
    OP_DIR_OUTBOUND = 1, /* this host initiated (connect, first packet egress) */
    OP_DIR_INBOUND = 2,  /* the peer initiated (accept, first packet ingress) */
};

/* op_event.flags (also the low byte of op_sock.flags) */
#define OP_F_OWNER 0x1        /* owner fields are valid */
#define OP_F_OWNER_JOINED 0x2 /* owner was joined from the listener, not seen in process context */
#define OP_F_RELEASED 0x4     /* the socket was released before this event */
#define OP_F_ADOPTED 0x8      /* the socket existed before the agent: its entry was seeded by
                               * user space from sock_diag (otelpeers/kernel/adopt.py) */
#define OP_F_KERNEL 0x10      /* the kernel itself sent it (owner tgid 0, comm "kernel") */
#define OP_F_TCP_INFO 0x20    /* tcp_* and srtt_us are valid: sock_ops CLOSE, or an adopted
                               * connection's totals as the kernel had them at the last packet
                               * seen (bpf_tcp_sock in cgroup_skb), counted since its start */

/* Who owns a socket, captured where the hook runs in process context. 40 bytes. */
struct op_owner {
    __u32 tgid;
    __u32 pid;
    __u32 uid;
    __u32 gid;
    __u64 cgroup_id;
    char comm[OP_COMM_LEN];
};

/* Per-socket volume, counted in cgroup_skb. bytes are IP-level bytes as on the wire
 * (headers of every GSO segment included), payload is transport payload. 48 bytes. */
struct op_counters {
    __u64 packets_out;
    __u64 bytes_out;
    __u64 payload_out;
    __u64 packets_in;
    __u64 bytes_in;
    __u64 payload_in;
};

/* The one event record. 200 bytes. */
struct op_event {
    __u64 ts_ns;        /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    __u64 cookie;       /* socket cookie: the join key everywhere */
    __u64 netns_cookie; /* network namespace cookie, 0 when unknown */
    struct op_owner owner;
    __u8 type;      /* enum op_event_type */
    __u8 family;    /* AF_INET / AF_INET6 */
    __u8 protocol;  /* IPPROTO_TCP / UDP / ICMP / ICMPV6 */
    __u8 sock_type; /* SOCK_STREAM / DGRAM / RAW */
    __u8 direction; /* enum op_direction */
    __u8 flags;     /* OP_F_* */
    __u8 old_state; /* TCP state before (OP_EV_TCP_CLOSE) */
    __u8 new_state; /* TCP state after, or the state at release */
    __u16 lport;    /* host byte order */
    __u16 rport;    /* host byte order; ICMP echo: 0 */
    __u32 srtt_us;  /* TCP smoothed RTT in microseconds (OP_EV_TCP_CLOSE) */
    __u8 laddr[OP_ADDR_LEN]; /* IPv4 in the first 4 bytes when family == AF_INET */
    __u8 raddr[OP_ADDR_LEN];
    struct op_counters counters; /* cumulative, at the time of the event */
    __u64 tcp_bytes_acked;    /* TCP payload sent and acknowledged (sock_ops) */
    __u64 tcp_bytes_received; /* TCP payload received (sock_ops) */
    __u32 tcp_total_retrans;
    __u32 _pad0;
    __u64 start_ns;    /* connections: connect() or accept time (monotonic); 0 otherwise */
    __u64 peer_cookie; /* TCP: the other end's cookie when both ends are on this host */
};

/* A DNS packet: header, then OP_DNS_PAYLOAD_CAP payload bytes of which payload_len are valid.
 * The header is 120 bytes. Only packets to or from the configured DNS ports are copied. */
#define OP_DNS_PAYLOAD_CAP 1024 /* capture_dns masks with CAP - 1: keep a power of two */
_Static_assert(OP_DNS_PAYLOAD_CAP == 1024, "capture_dns masks lengths with 1023");

struct op_dns_event {
    __u64 ts_ns;
    __u64 cookie;
    __u64 netns_cookie;
    struct op_owner owner;
    __u8 type;      /* OP_EV_DNS */
    __u8 family;    /* of the packet */
    __u8 protocol;  /* IPPROTO_UDP or IPPROTO_TCP */
    __u8 direction; /* OP_DIR_OUTBOUND: sent by the socket; OP_DIR_INBOUND: received */
    __u8 flags;
    __u8 _pad0;
    __u16 payload_len; /* bytes valid in payload */
    __u16 lport;
    __u16 rport;
    __u32 wire_len;    /* transport payload length before the cut */
    __u32 tcp_seq;     /* TCP: sequence number of the payload's first byte (reassembly) */
    __u32 _pad1;
    __u8 laddr[OP_ADDR_LEN];
    __u8 raddr[OP_ADDR_LEN];
    __u8 payload[OP_DNS_PAYLOAD_CAP];
};

/* Process lifecycle and sensitive file opens. Like the other records, byte 64 is the type,
 * so user space can tell the three layouts apart from any record. 328 bytes. */
#define OP_PATH_LEN 256

struct op_proc_event {
    __u64 ts_ns;
    __u64 cgroup_id;
    __u32 tgid;
    __u32 pid;
    __u32 ppid;      /* FORK: the parent's tgid */
    __u32 child_pid; /* FORK: the new task's id (a thread id when a thread was made) */
    __u32 uid;
    __u32 gid;
    char comm[OP_COMM_LEN];
    __s32 open_flags; /* FILE_OPEN */
    __u32 match;      /* FILE_OPEN: OP_OPEN_SENSITIVE and/or OP_OPEN_NETWORKED */
    __u8 type;        /* OP_EV_EXEC .. OP_EV_FILE_OPEN, at offset 64 */
    __u8 _pad1[7];
    char path[OP_PATH_LEN]; /* EXEC: the binary; FILE_OPEN: the path as passed to openat */
};

#define OP_OPEN_SENSITIVE 0x1 /* the path matched a sensitive prefix or basename */
#define OP_OPEN_NETWORKED 0x2 /* the opener has used the network (optional mode) */

/* Sensitive-path filter, filled by the loader from config: a longest-prefix trie of path
 * prefixes and a set of basenames. */
#define OP_PREFIX_LEN 64
#define OP_BASENAME_LEN 32

struct op_path_prefix {
    __u32 prefixlen; /* in bits */
    char data[OP_PREFIX_LEN];
};

struct op_basename {
    char name[OP_BASENAME_LEN];
};

/* ---- kernel tables user space reads (batched) ---------------------------------------------- */

/* op_sock.flags above the OP_F_* byte: kernel state, never copied into events. */
#define OP_S_TCP_TRACKED 0x100 /* sock_ops state callbacks are on for this socket */
#define OP_S_TCP_CLOSED 0x200  /* sock_ops saw CLOSE */
#define OP_S_CONN 0x400        /* a TCP connection: connect() called, or accepted */
#define OP_S_ESTABLISHED 0x800 /* the connection reached ESTABLISHED */
#define OP_S_ENDED 0x1000      /* an adopted connection was released and its record sent: a
                                * later sock_ops CLOSE (state callbacks asked for by an earlier
                                * agent) only removes the entry */

/* What the kernel keeps per socket (sockets map, keyed by socket cookie). User space scans it
 * in batches for connections that live long enough to be reported while open. 192 bytes. */
struct op_sock {
    struct op_owner owner;
    struct op_counters c;
    __u64 netns_cookie;
    __u64 start_ns;    /* connection start (connect() or accept), monotonic */
    __u64 peer_cookie; /* the other end of a connection made on this host */
    __u64 last_ns;     /* last packet, coarse monotonic clock (changed since the last scan?) */
    __u32 flags;       /* OP_F_* and OP_S_* */
    __u16 bound_port;  /* from post_bind or listen: to drop the listener entry at release */
    __u16 lport;       /* connections: local port (host order) once established */
    __u16 rport;       /* connections: the port connect() asked for, or the client's port */
    __u8 family;
    __u8 protocol;
    __u8 sock_type;
    __u8 direction;    /* enum op_direction */
    __u8 _pad0[2];
    __u8 laddr[OP_ADDR_LEN];
    __u8 raddr[OP_ADDR_LEN]; /* connect(): the address asked for; accepted: the client */
    /* Adopted connections only (OP_F_TCP_INFO): the kernel's own totals since the connection
     * began, before the agent too, refreshed at every packet the agent sees. */
    __u64 tcp_bytes_acked;
    __u64 tcp_bytes_received;
    __u32 tcp_total_retrans;
    __u32 srtt_us;
};

/* Non-TCP sockets can talk to many peers; volume is also kept per (socket, peer). */
struct op_peer_key {
    __u64 cookie;
    __u8 raddr[OP_ADDR_LEN];
    __u16 rport;
    __u8 protocol;
    __u8 family;
    __u32 _pad0;
};

struct op_peer {
    struct op_counters c;
    __u64 last_ns; /* coarse monotonic clock of the last packet */
};

struct op_listener_key {
    __u64 netns_cookie;
    __u16 port;
    __u16 _pad0;
    __u32 _pad1;
};

struct op_listener {
    struct op_owner owner;
    __u64 cookie;
};

/* Outbound established TCP connections by 4-tuple, so that the accepting end on this host
 * finds its client (addresses as IPv4-mapped IPv6 for AF_INET). */
struct op_tuple_key {
    __u8 laddr[OP_ADDR_LEN];
    __u8 raddr[OP_ADDR_LEN];
    __u16 lport;
    __u16 rport;
    __u32 _pad0;
};

/* Exact accounting per (netns, owner, peer, server port, direction, transport), whatever the
 * ring buffer drops. Two such hash maps take turns behind a one-slot array of maps: user space
 * swaps them every interval (the kernel waits for running programs on that update) and reads
 * and empties the one no program can reach any more. port is the server's: the peer's for
 * outbound, the local one for inbound. 40 bytes. */
struct op_agg_key {
    __u64 netns_cookie;
    __u32 tgid;
    __u16 port;
    __u8 family;
    __u8 protocol;
    __u8 direction;
    __u8 _pad0[7];
    __u8 raddr[OP_ADDR_LEN];
};

/* When the table is full, counts go to this key (every byte 0xff), inserted by user space. */
#define OP_AGG_OVERFLOW_BYTE 0xff

struct op_agg {
    struct op_owner owner;         /* the last owner seen for the pair */
    __u64 opened;                  /* connections started (connect, accept, first packet) */
    __u64 failed;                  /* TCP connections that ended before established */
    __u64 closed;                  /* TCP connections that ended after established */
    __u64 lost;                    /* per-connection records the ring buffer could not take */
    struct op_counters volume;     /* TCP: volume of the connections that ended */
    struct op_counters lost_volume; /* the part of volume whose records were lost */
};

/* Per-CPU drop counters are indexed by event type; these extra slots count other losses. */
#define OP_DROP_PEER_TABLE_FULL OP_EV_MAX      /* (socket, peer) not tracked: table full */
#define OP_DROP_SOCK_EVICTED (OP_EV_MAX + 1)   /* a tracked TCP socket's entry was evicted */
#define OP_DROP_SLOTS (OP_EV_MAX + 2)

#endif /* OTELPEERS_H */
