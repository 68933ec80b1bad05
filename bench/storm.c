/* Connection storm generator for the otelpeers benchmarks (compiled by bench/storm.py).
 *
 *   storm server ADDR PORT WORKERS close|hold   accept loop in WORKERS processes; "close":
 *        read one byte then close first (the TIME_WAIT lands on the server side, so the
 *        client never runs out of ports); "hold": keep every accepted socket open.
 *        Prints "READY PORT" once listening; runs until killed.
 *   storm client ADDR PORT RATE SECONDS PROCS   short connections: connect, send one byte,
 *        wait for the server's close, close. RATE is conn/s over all PROCS (0: as fast as
 *        possible). Prints one JSON line: attempted, ok, failed, elapsed_s.
 *   storm hold ADDR PORTS COUNT RATE            COUNT idle connections spread over the
 *        comma-separated PORTS, at RATE conn/s (0: unpaced). Prints "HELD n failed", then
 *        keeps them open until stdin closes.
 *
 * C rather than Python so that the generator, not the interpreter, is what the agent sees.
 * Every loop is bounded by a deadline or a count.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_until(double t) {
    double d = t - now_s();
    if (d <= 0) return;
    struct timespec ts = {(time_t)d, (long)((d - (time_t)d) * 1e9)};
    nanosleep(&ts, NULL);
}

static void raise_nofile(void) {
    struct rlimit r = {1048576, 1048576};
    if (setrlimit(RLIMIT_NOFILE, &r) != 0) {
        r.rlim_cur = r.rlim_max = 262144;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

static int parse_addr(const char *ip, int port, struct sockaddr_in *sa) {
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((unsigned short)port);
    return inet_pton(AF_INET, ip, &sa->sin_addr) == 1 ? 0 : -1;
}

static int run_server(const char *ip, int port, int workers, int hold) {
    struct sockaddr_in sa;
    if (parse_addr(ip, port, &sa) != 0) { fprintf(stderr, "bad address %s\n", ip); return 2; }
    raise_nofile();
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(ls, 4096) != 0) {
        perror("bind/listen");
        return 1;
    }
    socklen_t len = sizeof(sa);
    getsockname(ls, (struct sockaddr *)&sa, &len);
    printf("READY %d\n", ntohs(sa.sin_port));
    fflush(stdout);
    signal(SIGPIPE, SIG_IGN);
    for (int w = 1; w < workers; w++)
        if (fork() == 0) break;
    char buf[64];
    for (;;) {
        int c = accept(ls, NULL, NULL);
        if (c < 0) {
            if (errno == EMFILE || errno == ENFILE) sleep_until(now_s() + 0.01);
            continue;
        }
        if (hold) continue;  /* keep it open until the process dies */
        while (read(c, buf, sizeof(buf)) < 0 && errno == EINTR) {}
        close(c);
    }
}

static int one_conn(const struct sockaddr_in *sa) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return -1;
    int ok = -1;
    char b = 'x';
    if (connect(s, (const struct sockaddr *)sa, sizeof(*sa)) == 0 && write(s, &b, 1) == 1) {
        char buf[16];
        ssize_t n;
        while ((n = read(s, buf, sizeof(buf))) > 0) {}
        ok = n == 0 ? 0 : -1;
    }
    close(s);
    return ok;
}

static int run_client(const char *ip, int port, double rate, double seconds, int procs) {
    struct sockaddr_in sa;
    if (parse_addr(ip, port, &sa) != 0) { fprintf(stderr, "bad address %s\n", ip); return 2; }
    signal(SIGPIPE, SIG_IGN);
    int fds[256][2];
    if (procs < 1 || procs > 256) { fprintf(stderr, "procs must be 1..256\n"); return 2; }
    double start = now_s(), deadline = start + seconds;
    for (int p = 0; p < procs; p++) {
        if (pipe(fds[p]) != 0) { perror("pipe"); return 1; }
        if (fork() == 0) {
            long attempted = 0, ok = 0;
            double gap = rate > 0 ? procs / rate : 0, next = start + (rate > 0 ? p / rate : 0);
            while (now_s() < deadline) {
                if (gap > 0) {
                    if (next >= deadline) break;
                    sleep_until(next);
                    next += gap;
                }
                attempted++;
                if (one_conn(&sa) == 0) ok++;
            }
            dprintf(fds[p][1], "%ld %ld\n", attempted, ok);
            _exit(0);
        }
        close(fds[p][1]);
    }
    long attempted = 0, ok = 0;
    for (int p = 0; p < procs; p++) {
        char buf[64] = {0};
        ssize_t n = read(fds[p][0], buf, sizeof(buf) - 1);
        long a = 0, o = 0;
        if (n > 0 && sscanf(buf, "%ld %ld", &a, &o) == 2) { attempted += a; ok += o; }
        close(fds[p][0]);
    }
    while (wait(NULL) > 0) {}
    printf("{\"attempted\": %ld, \"ok\": %ld, \"failed\": %ld, \"elapsed_s\": %.3f}\n",
           attempted, ok, attempted - ok, now_s() - start);
    return 0;
}

static int run_hold(const char *ip, const char *ports, long count, double rate) {
    int plist[64], np = 0;
    char *dup = strdup(ports), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t && np < 64; t = strtok_r(NULL, ",", &save))
        plist[np++] = atoi(t);
    free(dup);
    if (np == 0) { fprintf(stderr, "no ports\n"); return 2; }
    raise_nofile();
    long held = 0, failed = 0;
    double start = now_s();
    for (long i = 0; i < count; i++) {
        if (rate > 0) sleep_until(start + i / rate);
        struct sockaddr_in sa;
        if (parse_addr(ip, plist[i % np], &sa) != 0) return 2;
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) { failed++; continue; }
        if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) held++;
        else { failed++; close(s); }
    }
    printf("HELD %ld %ld\n", held, failed);
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof(buf)) > 0) {}
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "server") == 0)
        return run_server(argv[2], atoi(argv[3]), atoi(argv[4]), strcmp(argv[5], "hold") == 0);
    if (argc == 7 && strcmp(argv[1], "client") == 0)
        return run_client(argv[2], atoi(argv[3]), atof(argv[4]), atof(argv[5]), atoi(argv[6]));
    if (argc == 6 && strcmp(argv[1], "hold") == 0)
        return run_hold(argv[2], argv[3], atol(argv[4]), atof(argv[5]));
    fprintf(stderr, "usage: see the comment at the top of bench/storm.c\n");
    return 2;
}
