/*
 * The load generator in C: N raw WebSocket clients on one epoll loop, one thread.
 *
 * Same command line and output as bench/loadgen.py, built so that it is never the
 * bottleneck of a fan-out benchmark: level-triggered epoll, one read() of up to
 * 256 KiB per ready socket per turn into one shared buffer, real frame parsing
 * (2, 4 and 10-byte length headers; a partial frame is carried to the next read)
 * and, per frame, one 13-byte compare where the servers put the top-level
 * "timestamp" (last in every event), memmem() only for any other frame.
 *
 * An event is a text frame carrying "timestamp":" that is not a snapshot (a
 * snapshot never has a top-level timestamp, though its nested events may); a
 * resync is a frame carrying "resync":true (a snapshot). In --latency mode each
 * event's latency is the wall-clock time of the read (CLOCK_REALTIME) minus the
 * frame's own timestamp (YYYY-MM-DDTHH:MM:SS.ffffffZ, UTC, stamped at publish on
 * this same machine); percentiles are nearest-rank, as tests/stats.py's "rank".
 *
 * Prints "connected" once every client has its first frame, then one JSON line
 * once every client has --events events (or --timeout passes, or every client
 * still short of them has lost its connection): bench/loadgen.py's fields, plus
 * "reads" (read() calls that returned data while measuring), "events_per_read"
 * and "turns" (epoll_wait calls while measuring). cpu_seconds is getrusage()'s
 * user + system time over the measured phase; nearly all of it is the kernel's
 * (the read() itself and the ACK it sends), so it follows reads, not events.
 * --hold stays connected, reading, until stdin closes (or --timeout passes) and
 * prints nothing more. Connecting is bounded by 60 s (or --timeout if shorter).
 *
 *     gcc -O2 -o bench/results/loadgen bench/loadgen.c   (the harness does this)
 * --port takes a comma-separated list (P1,P2,...): client i connects to the i-th
 * port modulo the list, so one generator spreads its clients over several gateways.
 *
 *     bench/results/loadgen --port P --clients 1000 --events 200 [--latency]
 *         [--path /ws/instances] [--token T] [--timeout 120] [--hold]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define KEY "\"timestamp\":\""
#define KEY_LEN (sizeof(KEY) - 1)
#define STAMP_LEN 27 /* 2026-01-01T00:00:00.000000Z */
#define TAIL_LEN (KEY_LEN + STAMP_LEN + 2) /* ...,"timestamp":"...Z"} */
#define RESYNC "\"resync\":true"
#define SNAPSHOT "{\"type\":\"snapshot\""
#define READ_SIZE (256 * 1024)
#define MAX_FRAME ((uint64_t)1 << 30)
#define MAX_PENDING 32     /* handshakes in flight: keeps the server's accept queue short */
#define CONNECT_LIMIT 60.0 /* seconds for every client to connect, as bench/loadgen.py */
#define STDIN_TAG UINT32_MAX

enum { HANDSHAKE, OPEN, CLOSED };

typedef struct {
    int fd;
    int state;
    int first_frame;
    long events;
    unsigned char *carry; /* the handshake so far, or an incomplete frame */
    size_t carry_len, carry_cap;
} Client;

static Client *clients;
static long n_clients, n_events;
static int latency_mode;
static unsigned char *buf;
static size_t buf_cap;

static long connected_count, pending, complete, lost, lost_incomplete;
static long total_events, resyncs, reads, turns;
static int measuring;
static double last_receipt; /* monotonic seconds of the last read holding an event */
static int64_t *lat_us;
static size_t lat_len, lat_cap;
static char cached_day[10];
static int64_t cached_midnight_us = INT64_MIN;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xrealloc(void *p, size_t size) {
    p = realloc(p, size);
    if (!p) die("out of memory");
    return p;
}

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int64_t realtime_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Days since 1970-01-01 of a civil date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const unsigned char *s, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
    return v;
}

/* Epoch microseconds of YYYY-MM-DDTHH:MM:SS.ffffffZ; the day's midnight is cached. */
static int64_t stamp_us(const unsigned char *s) {
    if (memcmp(s, cached_day, 10) != 0 || cached_midnight_us == INT64_MIN) {
        memcpy(cached_day, s, 10);
        cached_midnight_us =
            days_from_civil(digits(s, 4), digits(s + 5, 2), digits(s + 8, 2)) * 86400000000LL;
    }
    int64_t seconds = digits(s + 11, 2) * 3600 + digits(s + 14, 2) * 60 + digits(s + 17, 2);
    return cached_midnight_us + seconds * 1000000 + digits(s + 20, 6);
}

static void record_latency(int64_t us) {
    if (lat_len == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 1 << 16;
        lat_us = xrealloc(lat_us, lat_cap * sizeof *lat_us);
    }
    lat_us[lat_len++] = us;
}

static void close_client(Client *c, int epfd) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = CLOSED;
    free(c->carry);
    c->carry = NULL;
    c->carry_len = c->carry_cap = 0;
}

static void lose(Client *c, int epfd) {
    if (c->state == CLOSED) return;
    if (!c->first_frame) die("connection %ld closed before its first frame", (long)(c - clients));
    lost++;
    if (c->events < n_events) lost_incomplete++;
    close_client(c, epfd);
}

static void keep(Client *c, const unsigned char *data, size_t len) {
    c->carry_len = len;
    if (!len) return;
    if (len > c->carry_cap) {
        c->carry_cap = len < 4096 ? 4096 : len;
        c->carry = xrealloc(c->carry, c->carry_cap);
    }
    memmove(c->carry, data, len);
}

/* One complete frame's payload; returns 1 if it is an event. */
static inline int on_frame(Client *c, int opcode, const unsigned char *p, size_t size, int64_t now) {
    if (!c->first_frame) {
        c->first_frame = 1;
        connected_count++;
        pending--;
    }
    if (opcode != 1 && opcode != 0) return 0; /* only text (and its continuations) */
    const unsigned char *stamp = NULL;
    if (size >= TAIL_LEN && memcmp(p + size - TAIL_LEN, KEY, KEY_LEN) == 0) {
        stamp = p + size - TAIL_LEN + KEY_LEN;
    } else if (!(size >= sizeof(SNAPSHOT) - 1 && memcmp(p, SNAPSHOT, sizeof(SNAPSHOT) - 1) == 0)) {
        const unsigned char *at = memmem(p, size, KEY, KEY_LEN);
        if (at && (size_t)(at - p) + KEY_LEN + STAMP_LEN <= size) stamp = at + KEY_LEN;
    }
    if (!stamp) {
        if (memmem(p, size, RESYNC, sizeof(RESYNC) - 1)) resyncs++;
        return 0;
    }
    if (latency_mode) record_latency(now - stamp_us(stamp));
    if (++c->events == n_events) complete++;
    return 1;
}

/* Whole frames from data[0..len); the rest is carried. Returns the events found, or -1. */
static long parse(Client *c, const unsigned char *data, size_t len, int64_t now) {
    size_t at = 0;
    long found = 0;
    while (len - at >= 2) {
        const unsigned char *h = data + at;
        uint64_t size = h[1] & 0x7f;
        size_t header = 2 + ((h[1] & 0x80) ? 4 : 0);
        if (size == 126) {
            header += 2;
            if (len - at < header) break;
            size = ((uint64_t)h[2] << 8) | h[3];
        } else if (size == 127) {
            header += 8;
            if (len - at < header) break;
            size = 0;
            for (int i = 2; i < 10; i++) size = (size << 8) | h[i];
        }
        if (size > MAX_FRAME) return -1;
        if (len - at < header + size) break;
        found += on_frame(c, h[0] & 0x0f, h + header, (size_t)size, now);
        at += header + size;
    }
    keep(c, data + at, len - at);
    return found;
}

static void on_readable(Client *c, int epfd) {
    size_t have = c->carry_len;
    if (buf_cap < have + READ_SIZE) {
        buf_cap = have + READ_SIZE;
        buf = xrealloc(buf, buf_cap);
    }
    if (have) memcpy(buf, c->carry, have);
    ssize_t n = read(c->fd, buf + have, buf_cap - have);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        lose(c, epfd);
        return;
    }
    int64_t now = latency_mode ? realtime_us() : 0;
    size_t len = have + (size_t)n;
    const unsigned char *data = buf;
    if (c->state == HANDSHAKE) {
        const unsigned char *end = memmem(buf, len, "\r\n\r\n", 4);
        if (!end) {
            keep(c, buf, len);
            return;
        }
        if (len < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0) {
            const unsigned char *eol = memmem(buf, len, "\r\n", 2);
            die("handshake refused: %.*s", (int)(eol - buf), buf);
        }
        c->state = OPEN;
        data = end + 4;
        len -= (size_t)(data - buf);
    }
    long found = parse(c, data, len, now);
    if (found < 0) {
        lose(c, epfd);
        return;
    }
    if (measuring) {
        reads++;
        if (found) {
            total_events += found;
            last_receipt = monotonic();
        }
    }
}

static int open_client(Client *c, int port, const char *request, size_t request_len, int epfd,
                       uint32_t index) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("connect to 127.0.0.1:%d: %s", port, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (size_t sent = 0; sent < request_len;) {
        ssize_t n = write(fd, request + sent, request_len - sent);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("write: %s", strerror(errno));
        sent += (size_t)n;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = index};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    c->fd = fd;
    c->state = HANDSHAKE;
    return fd;
}

static void random_key(char out[25]) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char raw[18] = {0};
    if (getentropy(raw, 16) != 0) die("getentropy: %s", strerror(errno));
    for (int i = 0, o = 0; i < 18; i += 3, o += 4) {
        uint32_t v = ((uint32_t)raw[i] << 16) | ((uint32_t)raw[i + 1] << 8) | raw[i + 2];
        out[o] = b64[(v >> 18) & 63];
        out[o + 1] = b64[(v >> 12) & 63];
        out[o + 2] = b64[(v >> 6) & 63];
        out[o + 3] = b64[v & 63];
    }
    out[22] = out[23] = '='; /* 16 bytes: 22 characters and two pads */
    out[24] = 0;
}

static struct epoll_event ready[1024];

/* One epoll turn of at most timeout_ms; returns 1 if stdin closed (in --hold). */
static int turn(int epfd, int timeout_ms) {
    int n = epoll_wait(epfd, ready, (int)(sizeof ready / sizeof *ready), timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return 0;
        die("epoll_wait: %s", strerror(errno));
    }
    int stdin_closed = 0;
    for (int i = 0; i < n; i++) {
        uint32_t tag = ready[i].data.u32;
        if (tag == STDIN_TAG) {
            char sink[4096];
            ssize_t r = read(0, sink, sizeof sink);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) stdin_closed = 1;
            continue;
        }
        Client *c = &clients[tag];
        if (c->state != CLOSED) on_readable(c, epfd);
    }
    return stdin_closed;
}

static int wait_ms(double deadline) {
    double left = deadline - monotonic();
    if (left <= 0) return 0;
    return left > 0.1 ? 100 : (int)(left * 1000) + 1;
}

static int compare_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest value with at least ``fraction`` of the values at or below it. */
static double percentile_ms(double fraction) {
    double at = fraction * (double)lat_len; /* ceil() without libm */
    long rank = (long)at;
    if ((double)rank < at) rank++;
    rank = rank > 0 ? rank - 1 : 0;
    return lat_us[rank] / 1000.0;
}

static void usage(void) {
    die("usage: loadgen --port P[,P...] [--clients N] [--events E] [--latency] [--path PATH] "
        "[--token T] [--timeout S] [--hold]");
}

int main(int argc, char **argv) {
    int ports[16], n_ports = 0, hold = 0;
    const char *path = "/ws/instances", *token = NULL;
    double timeout = 120;
    n_clients = 100;
    n_events = 200;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--latency")) latency_mode = 1;
        else if (!strcmp(a, "--hold")) hold = 1;
        else if (!v) usage();
        else if (!strcmp(a, "--port")) {
            for (const char *p = v; p && *p && n_ports < 16; p = strchr(p, ','), p = p ? p + 1 : p)
                ports[n_ports++] = atoi(p);
            i++;
        }
        else if (!strcmp(a, "--clients")) n_clients = atol(v), i++;
        else if (!strcmp(a, "--events")) n_events = atol(v), i++;
        else if (!strcmp(a, "--path")) path = v, i++;
        else if (!strcmp(a, "--token")) token = v, i++;
        else if (!strcmp(a, "--timeout")) timeout = atof(v), i++;
        else usage();
    }
    for (int k = 0; k < n_ports; k++)
        if (ports[k] <= 0 || ports[k] > 65535) usage();
    if (!n_ports || n_clients <= 0 || n_events < 0 || timeout <= 0) usage();

    struct rlimit files;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        setrlimit(RLIMIT_NOFILE, &files);
    }
    clients = calloc((size_t)n_clients, sizeof *clients);
    buf_cap = READ_SIZE;
    buf = malloc(buf_cap);
    if (!clients || !buf) die("out of memory");
    if (latency_mode) {
        lat_cap = (size_t)n_clients * (size_t)(n_events ? n_events : 1) + 1024;
        lat_us = xrealloc(NULL, lat_cap * sizeof *lat_us);
    }
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1: %s", strerror(errno));

    /* Connect: one connect() at a time, at most MAX_PENDING handshakes unanswered. */
    double connect_deadline = monotonic() + (timeout < CONNECT_LIMIT ? timeout : CONNECT_LIMIT);
    char request[4096];
    for (long i = 0; i < n_clients; i++) {
        char key[25], auth[2048] = "";
        int port = ports[i % n_ports];
        random_key(key);
        if (token) snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
        int len = snprintf(request, sizeof request,
                           "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n%s\r\n",
                           path, port, key, auth);
        if (len < 0 || (size_t)len >= sizeof request) die("upgrade request too long");
        open_client(&clients[i], port, request, (size_t)len, epfd, (uint32_t)i);
        pending++;
        turn(epfd, 0);
        while (pending >= MAX_PENDING) {
            if (monotonic() > connect_deadline) die("timed out connecting");
            turn(epfd, wait_ms(connect_deadline));
        }
    }
    while (connected_count < n_clients) {
        if (monotonic() > connect_deadline) die("timed out waiting for first frames");
        turn(epfd, wait_ms(connect_deadline));
    }
    fputs("connected\n", stdout);
    fflush(stdout);

    if (hold) {
        /* A pipe (as the harness gives): wait for its end. A file or /dev/null: at its end. */
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = STDIN_TAG};
        fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev) == 0) {
            double deadline = monotonic() + timeout;
            while (monotonic() < deadline && !turn(epfd, wait_ms(deadline))) {
            }
        } else if (errno != EPERM) {
            die("epoll_ctl stdin: %s", strerror(errno));
        }
        for (long i = 0; i < n_clients; i++)
            if (clients[i].state != CLOSED) close_client(&clients[i], epfd);
        return 0;
    }

    /* Measure: from here to the last client's last event (or the timeout). */
    lat_len = 0;
    double cpu_before = cpu_seconds();
    double started = monotonic(), deadline = started + timeout;
    measuring = 1;
    int timed_out = 0;
    if (n_events == 0) complete = n_clients;
    while (complete + lost_incomplete < n_clients) {
        if (monotonic() >= deadline) {
            timed_out = 1;
            break;
        }
        turns++;
        turn(epfd, wait_ms(deadline));
    }
    double ended = monotonic();
    double cpu = cpu_seconds() - cpu_before;

    printf("{\"generator\": \"c\", \"clients\": %ld, \"events\": %ld, \"deliveries\": %ld, "
           "\"expected\": %ld, \"resyncs\": %ld, \"lost_connections\": %ld, \"timed_out\": %s, "
           "\"wall\": %.6f, \"last_receipt_after_start\": %.6f, \"cpu_seconds\": %.6f, "
           "\"reads\": %ld, \"turns\": %ld, \"events_per_read\": %.3f",
           n_clients, n_events, total_events, n_clients * n_events, resyncs, lost,
           timed_out ? "true" : "false", ended - started,
           total_events ? last_receipt - started : 0.0, cpu, reads, turns,
           reads ? (double)total_events / reads : 0.0);
    if (lat_len) {
        qsort(lat_us, lat_len, sizeof *lat_us, compare_i64);
        printf(", \"p50_ms\": %.4f, \"p99_ms\": %.4f, \"max_ms\": %.4f", percentile_ms(0.5),
               percentile_ms(0.99), lat_us[lat_len - 1] / 1000.0);
    }
    printf("}\n");
    fflush(stdout);
    for (long i = 0; i < n_clients; i++)
        if (clients[i].state != CLOSED) close_client(&clients[i], epfd);
    return 0;
}
