/* otelpeers socket sensors, compiled by bcc at agent start.
 *
 * Every program attaches at the cgroup-v2 root, so it sees every inet socket on the host,
 * in every container and network namespace. The socket cookie is the join key: owners are
 * recorded where the hook runs in process context (sock_create, connect, sendmsg, recvmsg,
 * post_bind) and joined by cookie where it does not (cgroup_skb, sock_ops).
 *
 * Per-packet work stays here: cgroup_skb only adds to counters. A TCP connection is kept in
 * the socket map from connect() or accept to CLOSE and crosses to user space once, complete,
 * when it ends; user space finds long-lived ones by scanning the map. Every connection is also
 * counted per (process, peer) in the aggregate tables, which stay exact when the ring buffer
 * is full. Sizes come from the loader as -D flags (see otelpeers/kernel/loader.py).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/in.h>
#include <uapi/linux/in6.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/if_ether.h>
#include "otelpeers.h"

#ifndef OP_MAX_SOCKETS
#define OP_MAX_SOCKETS 65536
#endif
#ifndef OP_MAX_PEERS
#define OP_MAX_PEERS 65536
#endif
#ifndef OP_MAX_LISTENERS
#define OP_MAX_LISTENERS 4096
#endif
#ifndef OP_MAX_PAIRS
#define OP_MAX_PAIRS 16384
#endif
#ifndef OP_DNS_MAX_PAYLOAD
#define OP_DNS_MAX_PAYLOAD 512
#endif
#ifndef OP_DNS_PORT0
#define OP_DNS_PORT0 53
#define OP_DNS_PORT1 0
#define OP_DNS_PORT2 0
#define OP_DNS_PORT3 0
#endif
#ifndef OP_RINGBUF_PAGES
#define OP_RINGBUF_PAGES 256
#endif

/* One 32-bit context load each: clang would merge neighbours into 64-bit loads of sock_ops
 * fields, which the verifier refuses. */
#define CTX32(x) (*(volatile __u32 *)&(x))

#define OP_AF_INET 2
#define OP_AF_INET6 10
#define OP_TCP_ESTABLISHED 1
#define OP_TCP_SYN_SENT 2
#define OP_TCP_CLOSE 7
#define OP_TCP_CLOSE_WAIT 8
#define OP_TCP_LISTEN 10
#define OP_SOCK_RAW 3

BPF_TABLE("lru_hash", __u64, struct op_sock, sockets, OP_MAX_SOCKETS);
BPF_TABLE("lru_hash", struct op_peer_key, struct op_peer, peers, OP_MAX_PEERS);
BPF_TABLE("lru_hash", struct op_listener_key, struct op_listener, listeners, OP_MAX_LISTENERS);
BPF_TABLE("lru_hash", struct op_tuple_key, __u64, tuples, OP_MAX_SOCKETS / 2 + 1024);
/* Owners user space found (sock_diag + /proc, kernel/owner_resolver.py) for connections adopted at
 * their first packet, where no process context tells: taken when the connection ends. */
BPF_TABLE("lru_hash", __u64, struct op_owner, owners_found, OP_MAX_LISTENERS);
/* Aggregates: two tables taking turns behind agg_current (see struct op_agg_key). */
BPF_TABLE("hash", struct op_agg_key, struct op_agg, agg_a, OP_MAX_PAIRS);
BPF_TABLE("hash", struct op_agg_key, struct op_agg, agg_b, OP_MAX_PAIRS);
BPF_ARRAY_OF_MAPS(agg_current, "agg_a", 1);
BPF_ARRAY(agg_zero, struct op_agg, 1); /* a zeroed value to insert (keeps it off the stack) */
BPF_PERCPU_ARRAY(drops, __u64, OP_DROP_SLOTS);
#ifndef OP_NETWORKED_OPENS
#define OP_NETWORKED_OPENS 0
#endif
#if OP_NETWORKED_OPENS
/* Processes that used the network, for process.file_opens_of_networked_processes. */
BPF_TABLE("lru_hash", __u32, __u8, networked, OP_MAX_SOCKETS);
#endif
BPF_RINGBUF_OUTPUT(events, OP_RINGBUF_PAGES);
#ifndef OP_WAKEUP_EVERY
#define OP_WAKEUP_EVERY 64
#endif
BPF_PERCPU_ARRAY(wakeup_count, __u32, 1);

/* Submit without waking the reader, except every OP_WAKEUP_EVERY records per CPU. The default
 * (adaptive) notification wakes a reader that has caught up, which a fast reader nearly
 * always has: one irq_work and wake-up per record, paid by the process whose packet or
 * syscall ran the program (measured: it halved a connection storm's rate). The reader also
 * reads on its poll timeout, so a quiet host's last records wait at most that long. */
static __always_inline void submit(void *e)
{
    __u32 zero = 0;
    __u64 flags = BPF_RB_NO_WAKEUP;
    __u32 *n = wakeup_count.lookup(&zero);
    if (n && ++*n >= OP_WAKEUP_EVERY) {
        *n = 0;
        flags = BPF_RB_FORCE_WAKEUP;
    }
    events.ringbuf_submit(e, flags);
}

static __always_inline void count_drop(__u32 slot)
{
    __u64 *n = drops.lookup(&slot);
    if (n)
        __sync_fetch_and_add(n, 1); /* per-CPU, but process context can be preempted */
}

static __always_inline struct op_event *reserve(__u8 type)
{
    struct op_event *e = events.ringbuf_reserve(sizeof(struct op_event));
    if (!e) {
        count_drop(type);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(*e));
    e->type = type;
    e->ts_ns = bpf_ktime_get_ns();
    return e;
}

static __always_inline void fill_current_owner(struct op_owner *o)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u64 uid_gid = bpf_get_current_uid_gid();
    o->tgid = pid_tgid >> 32;
    o->pid = (__u32)pid_tgid;
    o->uid = (__u32)uid_gid;
    o->gid = uid_gid >> 32;
    o->cgroup_id = bpf_get_current_cgroup_id();
    bpf_get_current_comm(&o->comm, sizeof(o->comm));
}

/* Packets the kernel sends on its own have the kernel as owner: tgid 0, comm "kernel". */
static __always_inline void fill_kernel_owner(struct op_owner *o)
{
    __builtin_memset(o, 0, sizeof(*o));
    __builtin_memcpy(o->comm, "kernel", 7);
}

/* An entry for a socket seen first outside sock_create (accepted, or older than the agent). */
static __always_inline struct op_sock *new_sock_entry(__u64 cookie, __u64 netns_cookie)
{
    struct op_sock fresh = {};
    fresh.netns_cookie = netns_cookie;
    sockets.update(&cookie, &fresh);
    return sockets.lookup(&cookie);
}

/* Record the current task as the socket's owner; creates the entry if needed. */
static __always_inline struct op_sock *own_socket(__u64 cookie, __u64 netns_cookie)
{
    struct op_sock *s = sockets.lookup(&cookie);
    if (!s) {
        s = new_sock_entry(cookie, netns_cookie);
        if (!s)
            return 0;
    }
    fill_current_owner(&s->owner);
    s->flags = (s->flags | OP_F_OWNER) & ~OP_F_OWNER_JOINED;
    if (netns_cookie)
        s->netns_cookie = netns_cookie;
#if OP_NETWORKED_OPENS
    __u32 tgid = s->owner.tgid;
    if (!networked.lookup(&tgid)) {
        __u8 one = 1;
        networked.update(&tgid, &one);
    }
#endif
    return s;
}

/* ---- aggregates --------------------------------------------------------------------------- */
static __always_inline struct op_agg *agg_slot(struct op_agg_key *k)
{
    __u32 zero = 0;
    void *m = agg_current.lookup(&zero);
    if (!m)
        return 0;
    struct op_agg *v = bpf_map_lookup_elem(m, k);
    if (v)
        return v;
    struct op_agg *z = agg_zero.lookup(&zero);
    if (z && bpf_map_update_elem(m, k, z, BPF_NOEXIST) == 0)
        v = bpf_map_lookup_elem(m, k);
    else
        v = bpf_map_lookup_elem(m, k); /* inserted meanwhile on another CPU, or table full */
    if (v)
        return v;
    /* Full: the overflow entry keeps the totals exact. */
    __builtin_memset(k, OP_AGG_OVERFLOW_BYTE, sizeof(*k));
    return bpf_map_lookup_elem(m, k);
}

static __always_inline void agg_key_of(struct op_agg_key *k, struct op_sock *s)
{
    __builtin_memset(k, 0, sizeof(*k));
    k->netns_cookie = s->netns_cookie;
    k->tgid = s->owner.tgid;
    k->family = s->family;
    k->protocol = s->protocol;
    k->direction = s->direction;
    k->port = s->direction == OP_DIR_INBOUND ? s->lport : s->rport;
    __builtin_memcpy(k->raddr, s->raddr, OP_ADDR_LEN);
}

static __always_inline void agg_add_counters(struct op_counters *dst, struct op_counters *c)
{
    __sync_fetch_and_add(&dst->packets_out, c->packets_out);
    __sync_fetch_and_add(&dst->bytes_out, c->bytes_out);
    __sync_fetch_and_add(&dst->payload_out, c->payload_out);
    __sync_fetch_and_add(&dst->packets_in, c->packets_in);
    __sync_fetch_and_add(&dst->bytes_in, c->bytes_in);
    __sync_fetch_and_add(&dst->payload_in, c->payload_in);
}

/* A connection (or non-TCP peer flow) started; lost: its record did not fit. */
static __always_inline void agg_open(struct op_agg_key *k, struct op_owner *owner, int lost)
{
    struct op_agg *v = agg_slot(k);
    if (!v)
        return;
    __sync_fetch_and_add(&v->opened, 1);
    if (lost)
        __sync_fetch_and_add(&v->lost, 1);
    v->owner = *owner;
}

/* A TCP connection ended: failed (never established) or closed; lost: its record did not fit. */
static __always_inline void agg_end(struct op_sock *s, int failed, int lost)
{
    struct op_agg_key k;
    agg_key_of(&k, s);
    struct op_agg *v = agg_slot(&k);
    if (!v)
        return;
    __sync_fetch_and_add(failed ? &v->failed : &v->closed, 1);
    agg_add_counters(&v->volume, &s->c);
    if (lost) {
        __sync_fetch_and_add(&v->lost, 1);
        agg_add_counters(&v->lost_volume, &s->c);
    }
    v->owner = s->owner;
}

static __always_inline void agg_open_sock(struct op_sock *s)
{
    struct op_agg_key k;
    agg_key_of(&k, s);
    agg_open(&k, &s->owner, 0);
}

/* post_bind4 may only read the IPv4 fields of bpf_sock and post_bind6 only the IPv6 ones. */
static __always_inline void copy_bound_addr(struct op_event *e, struct bpf_sock *sk, int v6)
{
    e->family = sk->family;
    e->protocol = sk->protocol;
    e->sock_type = sk->type;
    e->lport = sk->src_port;
    if (v6) {
        __u32 *l = (__u32 *)e->laddr;
        l[0] = sk->src_ip6[0]; l[1] = sk->src_ip6[1]; l[2] = sk->src_ip6[2]; l[3] = sk->src_ip6[3];
    } else {
        __u32 ip = sk->src_ip4;
        __builtin_memcpy(e->laddr, &ip, 4);
    }
}

static __always_inline void fill_from_sock(struct op_event *e, __u64 cookie, struct op_sock *s)
{
    e->cookie = cookie;
    if (!s)
        return;
    e->owner = s->owner;
    e->counters = s->c;
    e->netns_cookie = s->netns_cookie;
    e->flags |= s->flags & (OP_F_OWNER | OP_F_OWNER_JOINED | OP_F_RELEASED | OP_F_ADOPTED |
                            OP_F_KERNEL | OP_F_TCP_INFO);
}

/* A connection's own fields (start, direction, the address asked for) into its record. */
static __always_inline void fill_conn(struct op_event *e, struct op_sock *s)
{
    e->start_ns = s->start_ns;
    e->peer_cookie = s->peer_cookie;
    e->direction = s->direction;
    e->family = s->family;
    e->protocol = s->protocol;
    e->sock_type = s->sock_type;
    e->lport = s->lport;
    e->rport = s->rport;
    __builtin_memcpy(e->laddr, s->laddr, OP_ADDR_LEN);
    __builtin_memcpy(e->raddr, s->raddr, OP_ADDR_LEN);
}

/* A TCP connect() that never sent a SYN (failed in connect() itself): its one record. */
static __always_inline void end_unsent_connect(__u64 cookie, struct op_sock *s, __u8 type)
{
    int lost = 1; /* the verifier forbids touching e once submitted, even to test it */
    struct op_event *e = reserve(type);
    if (e) {
        lost = 0;
        fill_from_sock(e, cookie, s);
        fill_conn(e, s);
        e->old_state = OP_TCP_SYN_SENT;
        e->new_state = OP_TCP_CLOSE;
        if (type == OP_EV_RELEASE)
            e->flags |= OP_F_RELEASED;
        submit(e);
    }
    agg_end(s, 1, lost);
    s->flags &= ~OP_S_CONN;
}

/* An adopted connection whose owner the kernel could not see: user space may have found it. */
static __always_inline void take_found_owner(__u64 cookie, struct op_sock *s)
{
    if ((s->flags & (OP_F_ADOPTED | OP_F_OWNER)) != OP_F_ADOPTED)
        return;
    struct op_owner *o = owners_found.lookup(&cookie);
    if (!o)
        return;
    s->owner = *o;
    s->flags |= OP_F_OWNER;
    owners_found.delete(&cookie);
}

/* An adopted TCP connection (seeded by user space, older than the agent) is released: its one
 * record. It never had sock_ops state callbacks (they can only be asked for at connect or
 * accept), so the release is its end; the TCP state at that moment is not known (old_state
 * 0), and packets after it (the FIN exchange) are not counted. Its TCP totals are the
 * kernel's as of the last packet seen (copy_tcp_totals), absent if none was seen. */
static __always_inline void end_adopted(__u64 cookie, struct op_sock *s)
{
    take_found_owner(cookie, s);
    int lost = 1;
    struct op_event *e = reserve(OP_EV_TCP_CLOSE);
    if (e) {
        lost = 0;
        fill_from_sock(e, cookie, s);
        fill_conn(e, s);
        e->new_state = OP_TCP_CLOSE;
        e->flags |= OP_F_RELEASED;
        e->srtt_us = s->srtt_us;
        e->tcp_bytes_acked = s->tcp_bytes_acked;
        e->tcp_bytes_received = s->tcp_bytes_received;
        e->tcp_total_retrans = s->tcp_total_retrans;
        submit(e);
    }
    agg_end(s, 0, lost);
}

/* ---- cgroup/sock_create: process context, every new inet socket. Only the map is written:
 * every later event carries the owner, so a creation event would be pure overhead. ---- */
int otelp_sock_new(struct bpf_sock *ctx)
{
    __u64 cookie = bpf_get_socket_cookie(ctx);
    struct op_sock fresh = {};
    fresh.netns_cookie = bpf_get_netns_cookie(ctx);
    fill_current_owner(&fresh.owner);
    fresh.flags = OP_F_OWNER;
    fresh.family = ctx->family;
    fresh.protocol = ctx->protocol;
    fresh.sock_type = ctx->type;
    sockets.update(&cookie, &fresh);
    return 1;
}

/* ---- cgroup/post_bind4|6: process context, explicit bind with the port known ---- */
static __always_inline int on_post_bind(struct bpf_sock *ctx, int v6)
{
    __u64 cookie = bpf_get_socket_cookie(ctx);
    __u64 netns = bpf_get_netns_cookie(ctx);
    struct op_sock *s = own_socket(cookie, netns);

    if (s)
        s->bound_port = ctx->src_port;
    if (ctx->protocol == IPPROTO_TCP && s) {
        struct op_listener_key k = {};
        struct op_listener l = {};
        k.netns_cookie = netns;
        k.port = ctx->src_port;
        l.owner = s->owner;
        l.cookie = cookie;
        listeners.update(&k, &l);
    }
    struct op_event *e = reserve(OP_EV_BIND);
    if (!e)
        return 1;
    fill_from_sock(e, cookie, s);
    copy_bound_addr(e, ctx, v6);
    submit(e);
    return 1;
}

int otelp_bind4(struct bpf_sock *ctx) { return on_post_bind(ctx, 0); }
int otelp_bind6(struct bpf_sock *ctx) { return on_post_bind(ctx, 1); }

/* ---- cgroup/connect4|6: process context, before the connect happens. A TCP connection is
 * kept in the socket map from here on; its one record goes out when it ends. ---- */
static __always_inline int on_connect(struct bpf_sock_addr *ctx, int v6)
{
    __u64 cookie = bpf_get_socket_cookie(ctx);
    struct op_sock *s = own_socket(cookie, bpf_get_netns_cookie(ctx));
    if (!s || ctx->protocol != IPPROTO_TCP)
        return 1; /* UDP: the owner is enough, flows start with packets */
    if ((s->flags & OP_S_CONN) && !(s->flags & OP_S_TCP_TRACKED))
        end_unsent_connect(cookie, s, OP_EV_TCP_CLOSE); /* the earlier attempt never left */
    s->flags = (s->flags | OP_S_CONN) & ~(OP_S_TCP_CLOSED | OP_S_ESTABLISHED);
    s->start_ns = bpf_ktime_get_ns();
    s->peer_cookie = 0;
    s->direction = OP_DIR_OUTBOUND;
    s->family = ctx->family;
    s->protocol = IPPROTO_TCP;
    s->sock_type = ctx->type;
    s->lport = 0;
    s->rport = bpf_ntohs((__u16)ctx->user_port);
    __builtin_memset(s->laddr, 0, OP_ADDR_LEN);
    if (v6) {
        __u32 *r = (__u32 *)s->raddr;
        r[0] = ctx->user_ip6[0]; r[1] = ctx->user_ip6[1];
        r[2] = ctx->user_ip6[2]; r[3] = ctx->user_ip6[3];
    } else {
        __u32 ip = ctx->user_ip4;
        __builtin_memset(s->raddr, 0, OP_ADDR_LEN);
        __builtin_memcpy(s->raddr, &ip, 4);
    }
    agg_open_sock(s);
    return 1;
}

int otelp_conn4(struct bpf_sock_addr *ctx) { return on_connect(ctx, 0); }
int otelp_conn6(struct bpf_sock_addr *ctx) { return on_connect(ctx, 1); }

/* ---- cgroup/sendmsg4|6, recvmsg4|6: UDP in process context; only the owner is updated,
 * peers are discovered from packets in cgroup_skb so that ICMP and raw sockets work too ---- */
static __always_inline int on_udp_msg(struct bpf_sock_addr *ctx)
{
    own_socket(bpf_get_socket_cookie(ctx), bpf_get_netns_cookie(ctx));
    return 1;
}

int otelp_send4(struct bpf_sock_addr *ctx) { return on_udp_msg(ctx); }
int otelp_send6(struct bpf_sock_addr *ctx) { return on_udp_msg(ctx); }
int otelp_recv4(struct bpf_sock_addr *ctx) { return on_udp_msg(ctx); }
int otelp_recv6(struct bpf_sock_addr *ctx) { return on_udp_msg(ctx); }

/* ---- cgroup/sock_release: the socket is gone. Only family, type and protocol of
 * bpf_sock are readable here, so addresses come from the socket map. ---- */
int otelp_sock_rel(struct bpf_sock *ctx)
{
    __u64 cookie = bpf_get_socket_cookie(ctx);
    struct op_sock *s = sockets.lookup(&cookie);

    if (s && s->bound_port && ctx->protocol == IPPROTO_TCP) {
        struct op_listener_key k = {};
        k.netns_cookie = s->netns_cookie;
        k.port = s->bound_port;
        struct op_listener *l = listeners.lookup(&k);
        if (l && l->cookie == cookie)
            listeners.delete(&k);
    }
    if (s && (s->flags & OP_S_TCP_TRACKED)) {
        /* Its OP_EV_TCP_CLOSE ends it; a TCP socket still closing keeps counting until then. */
        if (s->flags & OP_S_TCP_CLOSED)
            sockets.delete(&cookie);
        else
            s->flags |= OP_F_RELEASED;
        return 1;
    }
    if (s && (s->flags & (OP_S_CONN | OP_F_ADOPTED)) == (OP_S_CONN | OP_F_ADOPTED) &&
        ctx->protocol == IPPROTO_TCP) {
        end_adopted(cookie, s);
        /* Kept (LRU, untouched from now on) rather than deleted: if an earlier agent asked for
         * state callbacks on this socket, its CLOSE is still to come and must not look like
         * a tracked socket whose entry was evicted. */
        s->flags = (s->flags | OP_S_ENDED | OP_F_RELEASED) & ~(OP_S_CONN | OP_S_ESTABLISHED);
        return 1;
    }
    if (s && (s->flags & OP_S_CONN) && ctx->protocol == IPPROTO_TCP) {
        end_unsent_connect(cookie, s, OP_EV_RELEASE);
        sockets.delete(&cookie);
        return 1;
    }
    struct op_event *e = reserve(OP_EV_RELEASE);
    if (e) {
        fill_from_sock(e, cookie, s);
        e->family = ctx->family;
        e->protocol = ctx->protocol;
        e->sock_type = ctx->type;
        e->flags |= OP_F_RELEASED;
        submit(e);
    }
    sockets.delete(&cookie);
    return 1;
}

/* ---- sock_ops: TCP established (active and passive), CLOSE, listen ---- */
static __always_inline void copy_ops_addrs(struct op_event *e, struct bpf_sock_ops *skops)
{
    e->family = skops->family;
    e->protocol = IPPROTO_TCP;
    e->sock_type = 1; /* SOCK_STREAM */
    e->lport = skops->local_port;
    /* remote_port holds the big-endian port in its upper 16 bits (sock_ops ABI). */
    __u32 rp = skops->remote_port;
    e->rport = bpf_ntohs((__u16)(rp >> 16 ? rp >> 16 : rp));
    if (skops->family == OP_AF_INET) {
        __u32 l4 = skops->local_ip4, r4 = skops->remote_ip4;
        __builtin_memcpy(e->laddr, &l4, 4);
        __builtin_memcpy(e->raddr, &r4, 4);
    } else {
        __u32 *l = (__u32 *)e->laddr, *r = (__u32 *)e->raddr;
        l[0] = CTX32(skops->local_ip6[0]); l[1] = CTX32(skops->local_ip6[1]);
        l[2] = CTX32(skops->local_ip6[2]); l[3] = CTX32(skops->local_ip6[3]);
        r[0] = CTX32(skops->remote_ip6[0]); r[1] = CTX32(skops->remote_ip6[1]);
        r[2] = CTX32(skops->remote_ip6[2]); r[3] = CTX32(skops->remote_ip6[3]);
    }
}

static __always_inline __u16 ops_rport(struct bpf_sock_ops *skops)
{
    __u32 rp = skops->remote_port;
    return bpf_ntohs((__u16)(rp >> 16 ? rp >> 16 : rp));
}

/* The connection's own addresses into the socket map. */
static __always_inline void ops_addrs_to_sock(struct op_sock *s, struct bpf_sock_ops *skops,
                                              int remote)
{
    s->lport = skops->local_port;
    if (skops->family == OP_AF_INET) {
        __u32 l4 = skops->local_ip4;
        __builtin_memset(s->laddr, 0, OP_ADDR_LEN);
        __builtin_memcpy(s->laddr, &l4, 4);
        if (remote) {
            __u32 r4 = skops->remote_ip4;
            __builtin_memset(s->raddr, 0, OP_ADDR_LEN);
            __builtin_memcpy(s->raddr, &r4, 4);
        }
    } else {
        __u32 *l = (__u32 *)s->laddr;
        l[0] = CTX32(skops->local_ip6[0]); l[1] = CTX32(skops->local_ip6[1]);
        l[2] = CTX32(skops->local_ip6[2]); l[3] = CTX32(skops->local_ip6[3]);
        if (remote) {
            __u32 *r = (__u32 *)s->raddr;
            r[0] = CTX32(skops->remote_ip6[0]); r[1] = CTX32(skops->remote_ip6[1]);
            r[2] = CTX32(skops->remote_ip6[2]); r[3] = CTX32(skops->remote_ip6[3]);
        }
    }
    if (remote)
        s->rport = ops_rport(skops);
}

/* 4-tuple key, addresses as IPv4-mapped IPv6 so both families of a local pair agree. */
static __always_inline void tuple_key(struct op_tuple_key *k, struct bpf_sock_ops *skops,
                                      int swap)
{
    __builtin_memset(k, 0, sizeof(*k));
    __u8 *l = swap ? k->raddr : k->laddr, *r = swap ? k->laddr : k->raddr;
    if (skops->family == OP_AF_INET) {
        __u32 l4 = skops->local_ip4, r4 = skops->remote_ip4;
        l[10] = 0xff; l[11] = 0xff;
        r[10] = 0xff; r[11] = 0xff;
        __builtin_memcpy(l + 12, &l4, 4);
        __builtin_memcpy(r + 12, &r4, 4);
    } else {
        __u32 *l32 = (__u32 *)l, *r32 = (__u32 *)r;
        l32[0] = CTX32(skops->local_ip6[0]); l32[1] = CTX32(skops->local_ip6[1]);
        l32[2] = CTX32(skops->local_ip6[2]); l32[3] = CTX32(skops->local_ip6[3]);
        r32[0] = CTX32(skops->remote_ip6[0]); r32[1] = CTX32(skops->remote_ip6[1]);
        r32[2] = CTX32(skops->remote_ip6[2]); r32[3] = CTX32(skops->remote_ip6[3]);
    }
    __u16 lp = skops->local_port, rp = ops_rport(skops);
    k->lport = swap ? rp : lp;
    k->rport = swap ? lp : rp;
}

static __always_inline void on_active_established(struct bpf_sock_ops *skops, __u64 cookie)
{
    struct op_sock *s = sockets.lookup(&cookie);
    if (!s) {
        s = new_sock_entry(cookie, bpf_get_netns_cookie(skops));
        if (!s)
            return;
    }
    if (!(s->flags & OP_S_CONN)) {
        /* connect() ran before the agent attached: the connection starts being tracked here */
        s->flags |= OP_S_CONN;
        s->start_ns = bpf_ktime_get_ns();
        s->direction = OP_DIR_OUTBOUND;
        s->family = skops->family;
        s->protocol = IPPROTO_TCP;
        s->sock_type = 1;
        ops_addrs_to_sock(s, skops, 1);
        agg_open_sock(s);
    }
    s->flags |= OP_S_TCP_TRACKED | OP_S_ESTABLISHED;
    ops_addrs_to_sock(s, skops, 0);
    struct op_tuple_key k;
    tuple_key(&k, skops, 0);
    tuples.update(&k, &cookie);
}

static __always_inline void on_passive_established(struct bpf_sock_ops *skops, __u64 cookie)
{
    /* Accepted sockets never pass sock_create: own them through the listener. */
    __u64 netns = bpf_get_netns_cookie(skops);
    struct op_sock *s = sockets.lookup(&cookie);
    if (!s) {
        s = new_sock_entry(cookie, netns);
        if (!s)
            return;
    }
    struct op_listener_key lk = {};
    lk.netns_cookie = netns;
    lk.port = skops->local_port;
    struct op_listener *l = listeners.lookup(&lk);
    if (l) {
        s->owner = l->owner;
        s->flags |= OP_F_OWNER | OP_F_OWNER_JOINED;
    }
    s->netns_cookie = netns;
    s->flags |= OP_S_CONN | OP_S_TCP_TRACKED | OP_S_ESTABLISHED;
    s->start_ns = bpf_ktime_get_ns();
    s->direction = OP_DIR_INBOUND;
    s->family = skops->family;
    s->protocol = IPPROTO_TCP;
    s->sock_type = 1;
    ops_addrs_to_sock(s, skops, 1);
    /* Both ends on this host: each learns the other's cookie. */
    struct op_tuple_key tk;
    tuple_key(&tk, skops, 1);
    __u64 *client = tuples.lookup(&tk);
    if (client) {
        __u64 c = *client;
        s->peer_cookie = c;
        struct op_sock *cs = sockets.lookup(&c);
        if (cs)
            cs->peer_cookie = cookie;
    }
    agg_open_sock(s);
}

static __always_inline void on_tcp_close(struct bpf_sock_ops *skops, __u64 cookie)
{
    struct op_sock *s = sockets.lookup(&cookie);
    if (s && (s->flags & OP_S_ENDED)) {
        sockets.delete(&cookie); /* adopted, its record already sent at release */
        return;
    }
    if (!s)
        count_drop(OP_DROP_SOCK_EVICTED); /* state callbacks are on only for sockets we track */
    else
        take_found_owner(cookie, s); /* evicted once, adopted again at its next packet */
    int lost = 1;
    struct op_event *e = reserve(OP_EV_TCP_CLOSE);
    if (e) {
        lost = 0;
        fill_from_sock(e, cookie, s);
        copy_ops_addrs(e, skops);
        if (s) {
            e->start_ns = s->start_ns;
            e->peer_cookie = s->peer_cookie;
            e->direction = s->direction;
        }
        e->old_state = skops->args[0];
        e->new_state = skops->args[1];
        e->srtt_us = skops->srtt_us >> 3;
        e->tcp_bytes_acked = skops->bytes_acked;
        e->tcp_bytes_received = skops->bytes_received;
        e->tcp_total_retrans = skops->total_retrans;
        e->flags |= OP_F_TCP_INFO;
        submit(e);
    }
    if (!s)
        return;
    if (s->flags & OP_S_CONN)
        agg_end(s, skops->args[0] == OP_TCP_SYN_SENT, lost);
    if (s->direction == OP_DIR_OUTBOUND && (s->flags & OP_S_ESTABLISHED)) {
        struct op_tuple_key k;
        tuple_key(&k, skops, 0);
        tuples.delete(&k);
    }
    if (s->flags & OP_F_RELEASED) {
        sockets.delete(&cookie);
    } else {
        /* TCP_TRACKED: an entry adopted at traffic lacked it; its release must not end it
         * a second time. */
        s->flags = (s->flags | OP_S_TCP_CLOSED | OP_S_TCP_TRACKED) &
                   ~(OP_S_CONN | OP_S_ESTABLISHED);
    }
}

/* listen(): in the listening process's context, with the socket's netns. */
static __always_inline void on_listen(struct bpf_sock_ops *skops, __u64 cookie)
{
    __u64 netns = bpf_get_netns_cookie(skops);
    struct op_sock *s = own_socket(cookie, netns);
    struct op_listener_key k = {};
    struct op_listener l = {};
    k.netns_cookie = netns;
    k.port = skops->local_port;
    fill_current_owner(&l.owner);
    l.cookie = cookie;
    listeners.update(&k, &l); /* also for listen() without bind(), which post_bind misses */
    if (s)
        s->bound_port = skops->local_port;
    struct op_event *e = reserve(OP_EV_LISTEN);
    if (!e)
        return;
    fill_from_sock(e, cookie, s);
    copy_ops_addrs(e, skops);
    __builtin_memset(e->raddr, 0, OP_ADDR_LEN);
    e->rport = 0;
    e->new_state = OP_TCP_LISTEN;
    submit(e);
}

int otelp_sockops(struct bpf_sock_ops *skops)
{
    __u32 op = skops->op;
    __u64 cookie = bpf_get_socket_cookie(skops);

    if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
        /* Ask for state callbacks so that a refused connect (SYN_SENT -> CLOSE) is seen. */
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
        struct op_sock *s = sockets.lookup(&cookie);
        if (s)
            s->flags |= OP_S_TCP_TRACKED;
    } else if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
        on_active_established(skops, cookie);
    } else if (op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
        on_passive_established(skops, cookie);
    } else if (op == BPF_SOCK_OPS_STATE_CB && skops->args[1] == OP_TCP_CLOSE) {
        on_tcp_close(skops, cookie);
    } else if (op == BPF_SOCK_OPS_TCP_LISTEN_CB) {
        on_listen(skops, cookie);
    }
    return 1;
}

/* ---- cgroup_skb: volume per socket, and first packet to/from a new non-TCP peer ---- */
#define OP_TH_FIN 0x1
#define OP_TH_ACK 0x2

struct op_l3 {
    __u8 family;
    __u8 protocol;
    __u16 sport; /* host order */
    __u16 dport;
    __u16 hdr_len; /* IP + transport header bytes */
    __u32 tcp_seq; /* host order */
    __u32 tcp_ack; /* host order, valid when tcp_fin_ack has OP_TH_ACK */
    __u8 tcp_fin_ack; /* OP_TH_FIN | OP_TH_ACK of the segment */
    __u8 saddr[OP_ADDR_LEN];
    __u8 daddr[OP_ADDR_LEN];
};

static __always_inline int parse_l3(struct __sk_buff *skb, struct op_l3 *p)
{
    __u32 l4off;
    if (skb->protocol == bpf_htons(ETH_P_IP)) {
        struct iphdr ip;
        if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
            return -1;
        p->family = OP_AF_INET;
        p->protocol = ip.protocol;
        __builtin_memcpy(p->saddr, &ip.saddr, 4);
        __builtin_memcpy(p->daddr, &ip.daddr, 4);
        l4off = ip.ihl * 4;
    } else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr ip6;
        if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0)
            return -1;
        p->family = OP_AF_INET6;
        p->protocol = ip6.nexthdr; /* extension headers are not walked */
        __builtin_memcpy(p->saddr, &ip6.saddr, 16);
        __builtin_memcpy(p->daddr, &ip6.daddr, 16);
        l4off = sizeof(ip6);
    } else {
        return -1;
    }
    p->hdr_len = l4off;
    if (p->protocol == IPPROTO_TCP) {
        struct tcphdr th;
        if (bpf_skb_load_bytes(skb, l4off, &th, sizeof(th)) < 0)
            return 0;
        p->sport = bpf_ntohs(th.source);
        p->dport = bpf_ntohs(th.dest);
        p->hdr_len = l4off + th.doff * 4;
        p->tcp_seq = bpf_ntohl(th.seq);
        p->tcp_ack = bpf_ntohl(th.ack_seq);
        p->tcp_fin_ack = (th.fin ? OP_TH_FIN : 0) | (th.ack ? OP_TH_ACK : 0);
    } else if (p->protocol == IPPROTO_UDP) {
        struct udphdr uh;
        if (bpf_skb_load_bytes(skb, l4off, &uh, sizeof(uh)) < 0)
            return 0;
        p->sport = bpf_ntohs(uh.source);
        p->dport = bpf_ntohs(uh.dest);
        p->hdr_len = l4off + sizeof(uh);
    } else if (p->protocol == IPPROTO_ICMP || p->protocol == IPPROTO_ICMPV6) {
        p->hdr_len = l4off + 8; /* type, code, checksum, rest-of-header */
    }
    return 0;
}

static __always_inline int is_dns_port(__u16 port)
{
    return port && (port == OP_DNS_PORT0 || port == OP_DNS_PORT1 ||
                    port == OP_DNS_PORT2 || port == OP_DNS_PORT3);
}

/* Copy a DNS packet (transport payload, bounded) to user space with its socket cookie. */
static __always_inline void capture_dns(struct __sk_buff *skb, struct op_l3 *p, __u64 cookie,
                                        struct op_sock *s, int egress)
{
    if (!is_dns_port(p->sport) && !is_dns_port(p->dport))
        return;
    __u32 len = skb->len > p->hdr_len ? skb->len - p->hdr_len : 0;
    if (len == 0)
        return; /* TCP handshake and pure ACKs */
    struct op_dns_event *e = events.ringbuf_reserve(sizeof(struct op_dns_event));
    if (!e) {
        count_drop(OP_EV_DNS);
        return;
    }
    e->ts_ns = bpf_ktime_get_ns();
    e->cookie = cookie;
    e->netns_cookie = s ? s->netns_cookie : 0;
    if (s)
        e->owner = s->owner;
    else
        __builtin_memset(&e->owner, 0, sizeof(e->owner));
    e->type = OP_EV_DNS;
    e->family = p->family;
    e->protocol = p->protocol;
    e->direction = egress ? OP_DIR_OUTBOUND : OP_DIR_INBOUND;
    e->flags = s ? (s->flags & (OP_F_OWNER | OP_F_OWNER_JOINED)) : 0;
    e->_pad0 = 0;
    e->wire_len = len;
    e->tcp_seq = p->protocol == IPPROTO_TCP ? p->tcp_seq : 0;
    e->_pad1 = 0;
    if (egress) {
        __builtin_memcpy(e->laddr, p->saddr, OP_ADDR_LEN);
        __builtin_memcpy(e->raddr, p->daddr, OP_ADDR_LEN);
        e->lport = p->sport;
        e->rport = p->dport;
    } else {
        __builtin_memcpy(e->laddr, p->daddr, OP_ADDR_LEN);
        __builtin_memcpy(e->raddr, p->saddr, OP_ADDR_LEN);
        e->lport = p->dport;
        e->rport = p->sport;
    }
    __u32 n = len > OP_DNS_MAX_PAYLOAD ? OP_DNS_MAX_PAYLOAD : len;
    /* Keep the bound visible to the verifier: n - 1 in [0, CAP - 1], so n in [1, CAP]. */
    __u32 m = n - 1;
    asm volatile("%[m] &= 1023" : [m] "+r"(m));
    n = m + 1;
    e->payload_len = 0;
    if (bpf_skb_load_bytes(skb, p->hdr_len, e->payload, n) == 0)
        e->payload_len = n;
    submit(e);
}

#ifndef OP_SKB_NETNS
#define OP_SKB_NETNS 0 /* cgroup_skb may call bpf_get_netns_cookie (probed by the loader) */
#endif

/* A TCP connection the tables do not know: older than the agent and missed by the start-up
 * snapshot (kernel.adopt_existing off, or its walk cut short), or its entry evicted from the
 * LRU. Adopted at its first packet like the snapshot's adoptions (OP_F_ADOPTED, its release
 * sends its one record): start = now, bytes from this packet on. Inbound, with the server's
 * owner, when a listener of its namespace has the local port (where the kernel tells the
 * namespace here, OP_SKB_NETNS); else the direction is not known and user space looks for
 * the owner (kernel/owner_resolver.py). */
static __always_inline void adopt_at_traffic(struct __sk_buff *skb, struct op_sock *s,
                                             struct op_l3 *p, int egress)
{
    s->flags |= OP_F_ADOPTED | OP_S_CONN | OP_S_ESTABLISHED;
    s->start_ns = bpf_ktime_get_ns();
    s->family = p->family;
    s->protocol = IPPROTO_TCP;
    s->sock_type = 1;
    if (egress) {
        __builtin_memcpy(s->laddr, p->saddr, OP_ADDR_LEN);
        __builtin_memcpy(s->raddr, p->daddr, OP_ADDR_LEN);
        s->lport = p->sport;
        s->rport = p->dport;
    } else {
        __builtin_memcpy(s->laddr, p->daddr, OP_ADDR_LEN);
        __builtin_memcpy(s->raddr, p->saddr, OP_ADDR_LEN);
        s->lport = p->dport;
        s->rport = p->sport;
    }
#if OP_SKB_NETNS
    s->netns_cookie = bpf_get_netns_cookie(skb);
#endif
    struct op_listener_key lk = {};
    lk.netns_cookie = s->netns_cookie;
    lk.port = s->lport;
    struct op_listener *l = listeners.lookup(&lk);
    if (l) {
        s->owner = l->owner;
        s->flags |= OP_F_OWNER | OP_F_OWNER_JOINED;
        s->direction = OP_DIR_INBOUND;
    }
}

/* An adopted connection has no sock_ops CLOSE to report the kernel's TCP totals (they include
 * what passed before the agent): keep them as they are after this packet. Only adopted sockets
 * pay this. Ingress runs before TCP has processed the segment, so what it will add is added
 * here the way TCP adds it (tcp_rcv_nxt_update, tcp_snd_una_update: sequence space moved,
 * FIN included); a segment TCP then drops or queues out of order is put right by the next. */
static __always_inline void copy_tcp_totals(struct op_sock *s, struct bpf_sock *sk,
                                            struct op_l3 *p, __u64 payload, int egress)
{
    struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
    if (!tp)
        return;
    __u64 acked = tp->bytes_acked;
    __u64 received = tp->bytes_received;
    if (!egress) {
        __u32 end = p->tcp_seq + (__u32)payload + ((p->tcp_fin_ack & OP_TH_FIN) ? 1 : 0);
        __s32 moved = (__s32)(end - tp->rcv_nxt);
        if ((__s32)(p->tcp_seq - tp->rcv_nxt) <= 0 && moved > 0)
            received += moved;
        __s32 newly = (__s32)(p->tcp_ack - tp->snd_una);
        if ((p->tcp_fin_ack & OP_TH_ACK) && newly > 0 && (__s32)(p->tcp_ack - tp->snd_nxt) <= 0)
            acked += newly;
    }
    s->tcp_bytes_acked = acked;
    s->tcp_bytes_received = received;
    s->tcp_total_retrans = tp->total_retrans;
    s->srtt_us = tp->srtt_us >> 3;
    s->flags |= OP_F_TCP_INFO;
}

static __always_inline int count_skb(struct __sk_buff *skb, int egress)
{
    struct bpf_sock *sk = skb->sk;
    if (!sk)
        return 1;
    sk = bpf_sk_fullsock(sk);
    if (!sk)
        return 1;
    __u32 proto = sk->protocol;
    /* SYN / SYN-ACK on a listener belong to the connection being made, not the listener. */
    if (proto == IPPROTO_TCP && sk->state == OP_TCP_LISTEN)
        return 1;

    struct op_l3 p = {};
    if (parse_l3(skb, &p) < 0)
        return 1;

    __u64 cookie = bpf_get_socket_cookie(skb);
    __u32 segs = skb->gso_segs;
    if (segs == 0)
        segs = 1;
    __u64 len = skb->len;
    __u64 payload = len > p.hdr_len ? len - p.hdr_len : 0;
    __u64 wire = payload + (__u64)segs * p.hdr_len;

    struct op_sock *s = sockets.lookup(&cookie);
    if (!s) {
        s = new_sock_entry(cookie, 0);
        if (!s)
            return 1;
        /* A raw socket that never passed sock_create and was not found at start: one of the
         * kernel's own (the per-CPU ICMP/ICMPv6 reply sockets that send echo replies and ICMP
         * errors, NDISC, MLD). Raw sockets of processes pass sock_create (docs/process-context.md
         * says where this guess can be wrong). */
        if (sk->type == OP_SOCK_RAW) {
            fill_kernel_owner(&s->owner);
            s->flags |= OP_F_OWNER | OP_F_KERNEL;
        } else if (proto == IPPROTO_TCP && p.protocol == IPPROTO_TCP &&
                   (sk->state == OP_TCP_ESTABLISHED || sk->state == OP_TCP_CLOSE_WAIT)) {
            adopt_at_traffic(skb, s, &p, egress);
        }
    }
    __u64 now = bpf_ktime_get_coarse_ns();
    s->last_ns = now;
    if (egress) {
        __sync_fetch_and_add(&s->c.packets_out, segs);
        __sync_fetch_and_add(&s->c.bytes_out, wire);
        __sync_fetch_and_add(&s->c.payload_out, payload);
    } else {
        __sync_fetch_and_add(&s->c.packets_in, segs);
        __sync_fetch_and_add(&s->c.bytes_in, wire);
        __sync_fetch_and_add(&s->c.payload_in, payload);
    }
    if (p.protocol == IPPROTO_UDP || p.protocol == IPPROTO_TCP)
        capture_dns(skb, &p, cookie, s, egress);
    if (proto == IPPROTO_TCP) {
        /* ENDED: released, its record sent; the FIN exchange after it has no reader. */
        if ((s->flags & (OP_F_ADOPTED | OP_S_ENDED)) == OP_F_ADOPTED)
            copy_tcp_totals(s, sk, &p, payload, egress);
        return 1;
    }

    /* Non-TCP: per-peer volume, and an event the first time a peer is seen. */
    struct op_peer_key k = {};
    k.cookie = cookie;
    k.protocol = p.protocol;
    k.family = p.family;
    if (egress) {
        __builtin_memcpy(k.raddr, p.daddr, OP_ADDR_LEN);
        k.rport = p.dport;
    } else {
        __builtin_memcpy(k.raddr, p.saddr, OP_ADDR_LEN);
        k.rport = p.sport;
    }
    struct op_peer *pv = peers.lookup(&k);
    if (!pv) {
        struct op_peer zero = {};
        if (peers.insert(&k, &zero) != 0) {
            count_drop(OP_DROP_PEER_TABLE_FULL);
            return 1;
        }
        pv = peers.lookup(&k);
        int lost = 1;
        struct op_event *e = reserve(OP_EV_PEER);
        if (e) {
            lost = 0;
            fill_from_sock(e, cookie, s);
            e->direction = egress ? OP_DIR_OUTBOUND : OP_DIR_INBOUND;
            e->family = p.family;
            e->protocol = p.protocol;
            e->sock_type = sk->type;
            __builtin_memcpy(e->raddr, k.raddr, OP_ADDR_LEN);
            e->rport = k.rport;
            if (egress) {
                __builtin_memcpy(e->laddr, p.saddr, OP_ADDR_LEN);
                e->lport = p.sport;
            } else {
                __builtin_memcpy(e->laddr, p.daddr, OP_ADDR_LEN);
                e->lport = p.dport;
            }
            submit(e);
        }
        struct op_agg_key ak = {};
        ak.netns_cookie = s->netns_cookie;
        ak.tgid = s->owner.tgid;
        ak.port = p.dport; /* egress: the peer's port; ingress: ours */
        ak.family = p.family;
        ak.protocol = p.protocol;
        ak.direction = egress ? OP_DIR_OUTBOUND : OP_DIR_INBOUND;
        __builtin_memcpy(ak.raddr, k.raddr, OP_ADDR_LEN);
        agg_open(&ak, &s->owner, lost);
        if (!pv)
            return 1;
    }
    pv->last_ns = now;
    struct op_counters *pc = &pv->c;
    if (egress) {
        __sync_fetch_and_add(&pc->packets_out, segs);
        __sync_fetch_and_add(&pc->bytes_out, wire);
        __sync_fetch_and_add(&pc->payload_out, payload);
    } else {
        __sync_fetch_and_add(&pc->packets_in, segs);
        __sync_fetch_and_add(&pc->bytes_in, wire);
        __sync_fetch_and_add(&pc->payload_in, payload);
    }
    return 1;
}

int otelp_skb_egr(struct __sk_buff *skb) { return count_skb(skb, 1); }
int otelp_skb_ingr(struct __sk_buff *skb) { return count_skb(skb, 0); }

/* ---- packets the kernel sends on its own: a RST for a closed TCP port, an ICMP error (UDP
 * port unreachable). No socket sent them, and the task running when they are made is
 * unrelated (softirq), so the owner is the kernel itself: tgid 0, comm "kernel". One inbound
 * flow per (peer, local port) and aggregate interval gets a record; every reply is counted in
 * the aggregates (opened, failed). The network namespace is not in these tracepoints' args:
 * netns_cookie 0. ---- */
static __always_inline void kernel_reply(__u8 family, __u8 protocol, __u8 *laddr, __u16 lport,
                                         __u8 *raddr, __u16 rport, __u8 why, __u8 detail)
{
    struct op_agg_key k;
    __builtin_memset(&k, 0, sizeof(k));
    k.port = lport;
    k.family = family;
    k.protocol = protocol;
    k.direction = OP_DIR_INBOUND;
    __builtin_memcpy(k.raddr, raddr, OP_ADDR_LEN);
    struct op_agg *v = agg_slot(&k);
    int first = 1;
    if (v) {
        first = v->opened == 0 || k.family == OP_AGG_OVERFLOW_BYTE; /* racy: at worst two */
        __sync_fetch_and_add(&v->opened, 1);
        __sync_fetch_and_add(&v->failed, 1);
        fill_kernel_owner(&v->owner);
    }
    if (!first)
        return;
    struct op_event *e = reserve(OP_EV_KERNEL_REPLY);
    if (!e) {
        if (v)
            __sync_fetch_and_add(&v->lost, 1);
        return;
    }
    fill_kernel_owner(&e->owner);
    e->flags = OP_F_OWNER | OP_F_KERNEL;
    e->family = family;
    e->protocol = protocol;
    e->sock_type = protocol == IPPROTO_TCP ? 1 : (protocol == IPPROTO_UDP ? 2 : 3);
    e->direction = OP_DIR_INBOUND;
    e->old_state = why;
    e->new_state = detail;
    e->lport = lport;
    e->rport = rport;
    e->start_ns = e->ts_ns;
    __builtin_memcpy(e->laddr, laddr, OP_ADDR_LEN);
    __builtin_memcpy(e->raddr, raddr, OP_ADDR_LEN);
    submit(e);
}

/* saddr/daddr are a struct sockaddr_in or sockaddr_in6 (port in network order). */
static __always_inline int sockaddr_of(const __u8 *sa, __u8 *addr, __u16 *port)
{
    __u16 fam = sa[0] | (sa[1] << 8);
    *port = (sa[2] << 8) | sa[3];
    if (fam == OP_AF_INET) {
        __builtin_memcpy(addr, sa + 4, 4);
        return OP_AF_INET;
    }
    if (fam == OP_AF_INET6) {
        __builtin_memcpy(addr, sa + 8, 16);
        return OP_AF_INET6;
    }
    return 0;
}

/* Built only where the tracepoint has the fields used here (Linux 6.10 and later for the reset's
 * sockaddr and reason fields): otelpeers/kernel/loader.py reads its format and sets the flag. */
#if OP_KERNEL_RST
/* bcc copies the tracepoint's field types; this kernel enum (include/net/rstreason.h) is in no
 * header included here: complete it (an int-sized enum, as the format's 4 bytes say). */
enum sk_rst_reason { OP_SK_RST_NOT_SPECIFIED = 0, OP_SK_RST_NO_SOCKET = 1 };

TRACEPOINT_PROBE(tcp, tcp_send_reset)
{
    if (args->skaddr)
        return 0; /* a socket's own reset: its connection record (sock_ops CLOSE) tells it */
    __u8 laddr[OP_ADDR_LEN] = {}, raddr[OP_ADDR_LEN] = {};
    __u16 lport = 0, rport = 0;
    /* The reset answers args->skb: saddr is this host's side, daddr the peer's. */
    int fam = sockaddr_of(args->saddr, laddr, &lport);
    if (!fam || sockaddr_of(args->daddr, raddr, &rport) != fam)
        return 0;
    kernel_reply(fam, IPPROTO_TCP, laddr, lport, raddr, rport, (__u8)args->reason, 0);
    return 0;
}
#endif /* OP_KERNEL_RST */

#if OP_KERNEL_ICMP
TRACEPOINT_PROBE(icmp, icmp_send)
{
    /* IPv4 only (no such tracepoint for ICMPv6). The offending packet's source is the peer;
     * ports are set only when it was UDP. */
    __u8 laddr[OP_ADDR_LEN] = {}, raddr[OP_ADDR_LEN] = {};
    __builtin_memcpy(laddr, args->daddr, 4);
    __builtin_memcpy(raddr, args->saddr, 4);
    __u16 lport = args->dport, rport = args->sport;
    __u8 proto = (lport || rport) ? IPPROTO_UDP : IPPROTO_ICMP;
    kernel_reply(OP_AF_INET, proto, laddr, lport, raddr, rport, (__u8)args->type,
                 (__u8)args->code);
    return 0;
}
#endif /* OP_KERNEL_ICMP */
