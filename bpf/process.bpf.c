/* otelpeers process sensors: exec, fork, exit, and opens of sensitive files.
 *
 * Included after sockets.bpf.c (same ring buffer, same drop counters). Tracepoints only.
 * File opens are filtered here so that only paths matching the configured sensitive
 * prefixes or basenames ever cross to user space.
 */

#ifndef OP_MAX_PREFIXES
#define OP_MAX_PREFIXES 256
#endif
#ifndef OP_MAX_BASENAMES
#define OP_MAX_BASENAMES 256
#endif

BPF_LPM_TRIE(sensitive_prefixes, struct op_path_prefix, __u8, OP_MAX_PREFIXES);
BPF_HASH(sensitive_basenames, struct op_basename, __u8, OP_MAX_BASENAMES);

static __always_inline struct op_proc_event *reserve_proc(__u8 type)
{
    struct op_proc_event *e = events.ringbuf_reserve(sizeof(struct op_proc_event));
    if (!e) {
        count_drop(type);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(*e) - OP_PATH_LEN); /* match is zeroed here too */
    e->path[0] = 0;
    e->type = type;
    e->ts_ns = bpf_ktime_get_ns();
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u64 uid_gid = bpf_get_current_uid_gid();
    e->tgid = pid_tgid >> 32;
    e->pid = (__u32)pid_tgid;
    e->uid = (__u32)uid_gid;
    e->gid = uid_gid >> 32;
    e->cgroup_id = bpf_get_current_cgroup_id();
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    return e;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    struct op_proc_event *e = reserve_proc(OP_EV_EXEC);
    if (!e)
        return 0;
    unsigned short off = args->data_loc_filename & 0xFFFF;
    bpf_probe_read_kernel_str(e->path, sizeof(e->path), (void *)args + off);
    /* Wake the reader at once, not batched like the rest (submit()): the agent reads the new
     * program's /proc entry now, while a short-lived process still exists. Forced: adaptive
     * notification wakes only a reader that has caught up, and with batching it seldom has. */
    events.ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    struct op_proc_event *e = reserve_proc(OP_EV_FORK);
    if (!e)
        return 0;
    e->ppid = e->tgid;
    e->child_pid = args->child_pid;
    submit(e);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    if ((__u32)pid_tgid != (pid_tgid >> 32))
        return 0; /* a thread ended, not the process */
#if OP_NETWORKED_OPENS
    __u32 tgid = pid_tgid >> 32;
    networked.delete(&tgid);
#endif
    struct op_proc_event *e = reserve_proc(OP_EV_EXIT);
    if (e)
        submit(e);
    return 0;
}

/* Bytes of a path read once per open: too big for the stack, so a per-CPU map value. */
struct op_scratch {
    char path[OP_PATH_LEN];
    struct op_path_prefix prefix;
    struct op_basename base;
};
BPF_PERCPU_ARRAY(path_scratch, struct op_scratch, 1);

static __always_inline int on_open(const char *filename, int flags)
{
    __u32 zero = 0;
    struct op_scratch *s = path_scratch.lookup(&zero);
    if (!s)
        return 0;
    /* Zero first: bytes after the string's end then compare as padding, with no branches. */
    __builtin_memset(s->path, 0, sizeof(s->path));
    int len = bpf_probe_read_user_str(s->path, sizeof(s->path), filename);
    if (len <= 1)
        return 0;

    s->prefix.prefixlen = OP_PREFIX_LEN * 8;
    __builtin_memcpy(s->prefix.data, s->path, OP_PREFIX_LEN);
    int hit = sensitive_prefixes.lookup(&s->prefix) != 0;

    if (!hit) {
        /* The basename starts after the last '/': scan back from the end, stop at the first. */
        int start = 0;
        for (int i = 1; i < OP_PATH_LEN; i++) {
            int j = len - 1 - i;
            if (j < 0)
                break;
            if (s->path[j & (OP_PATH_LEN - 1)] == '/') {
                start = j + 1;
                break;
            }
        }
        #pragma unroll
        for (int i = 0; i < OP_BASENAME_LEN - 1; i++)
            s->base.name[i] = s->path[(start + i) & (OP_PATH_LEN - 1)];
        s->base.name[OP_BASENAME_LEN - 1] = 0;
        hit = sensitive_basenames.lookup(&s->base) != 0;
    }
    __u32 match = hit ? OP_OPEN_SENSITIVE : 0;
#if OP_NETWORKED_OPENS
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (networked.lookup(&tgid))
        match |= OP_OPEN_NETWORKED;
#endif
    if (!match)
        return 0;
    struct op_proc_event *e = reserve_proc(OP_EV_FILE_OPEN);
    if (!e)
        return 0;
    e->open_flags = flags;
    e->match = match;
    __builtin_memcpy(e->path, s->path, OP_PATH_LEN);
    submit(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
    return on_open((const char *)args->filename, (int)args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat2)
{
    /* struct open_how is read for its flags; its first member is the u64 flags. */
    __u64 flags = 0;
    bpf_probe_read_user(&flags, sizeof(flags), (void *)args->how);
    return on_open((const char *)args->filename, (int)flags);
}
