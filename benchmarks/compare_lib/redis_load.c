/*
 * redis_load: a small closed-loop Redis load generator for benchmarks/compare.
 *
 * Why it exists: redis-benchmark runs one command per test, so it can neither send
 * "SET then WAIT 1 0" as one operation (WAIT is not allowed inside EVAL scripts) nor mix
 * GETs and SETs 10:1 on the same connections. This tool does both, in C, on one thread
 * with epoll, so that the generator is not the bottleneck.
 *
 * Each connection loops for --duration seconds: pick an operation (every (R+1)-th one is a
 * write in the mix) and a uniformly random key from the keys its target server owns, send
 * it, wait for the reply (for a write with --wait, "SET k v" and "WAIT <n> 0" are sent
 * together and the operation completes when both replies arrived: WAIT answers once <n>
 * replicas acknowledged the replication offset that includes the SET), record the latency.
 * Operations still in flight at the deadline are not counted.
 *
 * Keys file: lines "PORT KEY". Connection i talks to the i-th distinct port (round robin)
 * and only uses that port's keys, which is how Redis Cluster routing is done without
 * MOVED redirections (the caller maps keys to masters with CLUSTER NODES).
 *
 * Output: one JSON object on stdout.
 *
 * Build: gcc -O2 -o redis_load redis_load.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int port;
    char **keys;
    size_t nkeys, cap;
} target_t;

typedef struct {
    uint32_t *v;
    size_t n, cap;
} lat_t;

typedef struct {
    int fd;
    int target;
    int alive;
    char *in;
    size_t inlen, incap;
    char *out;
    size_t outlen, outoff;
    int pending;      /* replies still expected for the operation in flight */
    int is_write;
    double started;
    uint64_t counter;
    uint64_t rng;
} conn_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void lat_add(lat_t *l, uint32_t us) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1 << 16;
        l->v = realloc(l->v, l->cap * sizeof(uint32_t));
        if (!l->v) { perror("realloc"); exit(2); }
    }
    l->v[l->n++] = us;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(lat_t *l, double p) { /* l sorted; returns ms */
    if (!l->n) return 0;
    size_t idx = (size_t)((p / 100.0) * l->n + 0.999999);
    if (idx < 1) idx = 1;
    if (idx > l->n) idx = l->n;
    return l->v[idx - 1] / 1000.0;
}

/* Write what the socket takes now; on EAGAIN wait for EPOLLOUT. */
static void flush_out(int epfd, conn_t *c, int idx) {
    while (c->outoff < c->outlen) {
        ssize_t w = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
        if (w > 0) { c->outoff += (size_t)w; continue; }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)idx};
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
            return;
        }
        if (w < 0 && errno == EINTR) continue;
        c->alive = 0;
        return;
    }
}

static void usage(void) {
    fprintf(stderr,
            "usage: redis_load --keys FILE [--host 127.0.0.1] [--duration 10] [--connections 30]\n"
            "                  [--workload write|read|mix] [--read-ratio 10] [--wait 0]\n"
            "                  [--value-size 1024]\n");
    exit(2);
}

/* Parse one RESP reply at buf[0..len). Returns bytes consumed, or 0 if incomplete.
   kind: '+', '-', ':', '$' ; ival: integer value or bulk length (-1 = nil). */
static size_t parse_reply(const char *buf, size_t len, char *kind, long *ival,
                          const char **line, size_t *linelen) {
    const char *eol = memmem(buf, len, "\r\n", 2);
    if (!eol) return 0;
    size_t hdr = (size_t)(eol - buf) + 2;
    *kind = buf[0];
    *line = buf + 1;
    *linelen = (size_t)(eol - buf) - 1;
    *ival = 0;
    if (buf[0] == ':' || buf[0] == '$') *ival = strtol(buf + 1, NULL, 10);
    if (buf[0] == '$' && *ival >= 0) {
        size_t need = hdr + (size_t)*ival + 2;
        if (len < need) return 0;
        return need;
    }
    return hdr;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *keys_path = NULL, *workload = "mix";
    double duration = 10;
    int nconns = 30, ratio = 10, wait_n = 0, value_size = 1024;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        if (!strcmp(argv[i], "--host")) host = argv[++i];
        else if (!strcmp(argv[i], "--keys")) keys_path = argv[++i];
        else if (!strcmp(argv[i], "--duration")) duration = atof(argv[++i]);
        else if (!strcmp(argv[i], "--connections")) nconns = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--workload")) workload = argv[++i];
        else if (!strcmp(argv[i], "--read-ratio")) ratio = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--wait")) wait_n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--value-size")) value_size = atoi(argv[++i]);
        else usage();
    }
    if (!keys_path || nconns < 1 || duration <= 0) usage();
    int period; /* a write every `period` operations; 0 = never */
    if (!strcmp(workload, "write")) period = 1;
    else if (!strcmp(workload, "read")) period = 0;
    else if (!strcmp(workload, "mix")) period = ratio + 1;
    else usage();

    /* keys */
    target_t targets[64];
    int ntargets = 0;
    FILE *kf = fopen(keys_path, "r");
    if (!kf) { perror(keys_path); return 2; }
    char lbuf[1024];
    while (fgets(lbuf, sizeof lbuf, kf)) {
        int port;
        char key[512];
        if (sscanf(lbuf, "%d %511s", &port, key) != 2) continue;
        int t;
        for (t = 0; t < ntargets; t++)
            if (targets[t].port == port) break;
        if (t == ntargets) {
            if (ntargets == 64) { fprintf(stderr, "too many ports\n"); return 2; }
            memset(&targets[t], 0, sizeof targets[t]);
            targets[t].port = port;
            ntargets++;
        }
        target_t *tg = &targets[t];
        if (tg->nkeys == tg->cap) {
            tg->cap = tg->cap ? tg->cap * 2 : 1024;
            tg->keys = realloc(tg->keys, tg->cap * sizeof(char *));
        }
        tg->keys[tg->nkeys++] = strdup(key);
    }
    fclose(kf);
    if (!ntargets) { fprintf(stderr, "no keys\n"); return 2; }

    char *value = malloc(value_size + 1);
    uint64_t seed = 0x9E3779B97F4A7C15ULL ^ (uint64_t)time(NULL) ^ (uint64_t)getpid();
    for (int i = 0; i < value_size; i++) value[i] = 'a' + (char)(xorshift(&seed) % 26);
    value[value_size] = 0;
    char wait_cmd[64];
    int wait_len = snprintf(wait_cmd, sizeof wait_cmd, "*3\r\n$4\r\nWAIT\r\n$%d\r\n%d\r\n$1\r\n0\r\n",
                            (int)snprintf(NULL, 0, "%d", wait_n), wait_n);

    /* connections */
    int ep = epoll_create1(0);
    conn_t *conns = calloc(nconns, sizeof(conn_t));
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        c->target = i % ntargets;
        struct sockaddr_in sa = {0};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(targets[c->target].port);
        inet_pton(AF_INET, host, &sa.sin_addr);
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            fprintf(stderr, "connect to %s:%d: %s\n", host, targets[c->target].port, strerror(errno));
            return 1;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        c->alive = 1;
        c->incap = 65536;
        c->in = malloc(c->incap);
        c->out = malloc(value_size + 1024);
        c->rng = seed ^ ((uint64_t)(i + 1) * 0xD1B54A32D192ED03ULL);
        xorshift(&c->rng);
        c->counter = period > 1 ? xorshift(&c->rng) % period : 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }

    lat_t all = {0}, lw = {0}, lr = {0};
    uint64_t errors = 0, misses = 0, wait_short = 0, conn_errors = 0;
    char first_error[256] = "";
    double start = now(), deadline = start + duration;
    int alive = nconns;

#define SEND_NEXT(c)                                                                        \
    do {                                                                                    \
        target_t *tg_ = &targets[(c)->target];                                              \
        const char *k_ = tg_->keys[xorshift(&(c)->rng) % tg_->nkeys];                       \
        int klen_ = (int)strlen(k_);                                                        \
        (c)->counter++;                                                                     \
        (c)->is_write = period == 1 || (period > 1 && (c)->counter % period == 0);          \
        size_t n_;                                                                          \
        if ((c)->is_write) {                                                                \
            n_ = (size_t)sprintf((c)->out, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n", klen_, \
                                 k_, value_size);                                           \
            memcpy((c)->out + n_, value, value_size);                                       \
            n_ += value_size;                                                               \
            memcpy((c)->out + n_, "\r\n", 2);                                               \
            n_ += 2;                                                                        \
            (c)->pending = 1;                                                               \
            if (wait_n > 0) {                                                               \
                memcpy((c)->out + n_, wait_cmd, wait_len);                                  \
                n_ += wait_len;                                                             \
                (c)->pending = 2;                                                           \
            }                                                                               \
        } else {                                                                            \
            n_ = (size_t)sprintf((c)->out, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", klen_, k_); \
            (c)->pending = 1;                                                               \
        }                                                                                   \
        (c)->outlen = n_;                                                                   \
        (c)->outoff = 0;                                                                    \
        (c)->started = now();                                                               \
        flush_out(ep, (c), (int)((c) - conns));                                             \
    } while (0)

    for (int i = 0; i < nconns; i++) SEND_NEXT(&conns[i]);

    struct epoll_event events[256];
    while (alive > 0) {
        double t = now();
        if (t >= deadline) break;
        int timeout_ms = (int)((deadline - t) * 1000) + 1;
        if (timeout_ms > 100) timeout_ms = 100;
        int n = epoll_wait(ep, events, 256, timeout_ms);
        if (n < 0 && errno == EINTR) continue;
        for (int e = 0; e < n; e++) {
            int idx = (int)events[e].data.u32;
            conn_t *c = &conns[idx];
            if (!c->alive) continue;
            if (events[e].events & EPOLLOUT) {
                flush_out(ep, c, idx);
                if (c->outoff >= c->outlen) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)idx};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (!(events[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            for (;;) {
                if (c->incap - c->inlen < 4096) {
                    c->incap *= 2;
                    c->in = realloc(c->in, c->incap);
                }
                ssize_t r = read(c->fd, c->in + c->inlen, c->incap - c->inlen);
                if (r > 0) { c->inlen += (size_t)r; continue; }
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                if (r < 0 && errno == EINTR) continue;
                c->alive = 0; /* closed or failed */
                break;
            }
            size_t off = 0;
            for (;;) {
                char kind;
                long ival;
                const char *line;
                size_t linelen;
                size_t used = parse_reply(c->in + off, c->inlen - off, &kind, &ival, &line, &linelen);
                if (!used) break;
                off += used;
                if (c->pending <= 0) { errors++; continue; } /* unexpected */
                if (kind == '-') {
                    errors++;
                    if (!first_error[0]) {
                        size_t m = linelen < sizeof first_error - 1 ? linelen : sizeof first_error - 1;
                        memcpy(first_error, line, m);
                        first_error[m] = 0;
                    }
                } else if (kind == '$' && ival < 0) {
                    misses++;
                } else if (kind == ':' && c->is_write && c->pending == 1 && wait_n > 0 && ival < wait_n) {
                    wait_short++;
                }
                if (--c->pending == 0) {
                    double done_at = now();
                    if (done_at <= deadline) {
                        uint32_t us = (uint32_t)((done_at - c->started) * 1e6);
                        lat_add(&all, us);
                        lat_add(c->is_write ? &lw : &lr, us);
                    }
                    if (done_at < deadline) SEND_NEXT(c);
                }
            }
            if (off) {
                memmove(c->in, c->in + off, c->inlen - off);
                c->inlen -= off;
            }
            if (!c->alive) {
                conn_errors++;
                alive--;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
            }
        }
    }
    double elapsed = now() - start;
    if (elapsed > duration) elapsed = duration;
    for (int i = 0; i < nconns; i++)
        if (conns[i].alive) close(conns[i].fd);

    qsort(all.v, all.n, sizeof(uint32_t), cmp_u32);
    qsort(lw.v, lw.n, sizeof(uint32_t), cmp_u32);
    qsort(lr.v, lr.n, sizeof(uint32_t), cmp_u32);
    double sum = 0;
    for (size_t i = 0; i < all.n; i++) sum += all.v[i];
    for (char *p = first_error; *p; p++)
        if (*p == '"' || *p == '\\') *p = '\'';
    printf("{\"requests\": %zu, \"duration_s\": %.3f, \"rps\": %.1f, "
           "\"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, \"p999_ms\": %.3f, "
           "\"mean_ms\": %.3f, \"max_ms\": %.3f, "
           "\"writes\": %zu, \"reads\": %zu, "
           "\"write_p50_ms\": %.3f, \"write_p99_ms\": %.3f, \"read_p50_ms\": %.3f, \"read_p99_ms\": %.3f, "
           "\"errors\": %llu, \"first_error\": \"%s\", \"misses\": %llu, \"wait_short\": %llu, "
           "\"connection_errors\": %llu, \"connections\": %d, \"targets\": %d, \"wait\": %d}\n",
           all.n, elapsed, all.n / elapsed, pct(&all, 50), pct(&all, 90), pct(&all, 99),
           pct(&all, 99.9), all.n ? sum / all.n / 1000.0 : 0, all.n ? all.v[all.n - 1] / 1000.0 : 0,
           lw.n, lr.n, pct(&lw, 50), pct(&lw, 99), pct(&lr, 50), pct(&lr, 99),
           (unsigned long long)errors, first_error, (unsigned long long)misses,
           (unsigned long long)wait_short, (unsigned long long)conn_errors, nconns, ntargets, wait_n);
    return 0;
}
