/*
 * The message-path load generator: senders and receivers on one epoll loop, one thread.
 *
 * Speaks either cpstream's REST API (HTTP/1.1 keep-alive, --proto http) or Redis's
 * RESP (--proto resp, the reliable-queue reference), with the same client code
 * around both, so both sides pay the same client cost.
 *
 * Workload a ("one per request"): S sender connections, each with one request in
 * flight, each sending one message per request to recipient i % R; R receiver
 * connections, receiver j leasing from recipient j (a long poll of --wait s),
 * then acknowledging what it got, one request at a time.
 *
 *   http: POST /api/messages; GET /api/instances/rJ/messages/pending?wait=W;
 *         POST /api/messages/ID/acknowledge {"lease_id": L}
 *   resp: LPUSH q:rJ V; BLMOVE q:rJ processing:rJ RIGHT LEFT W; LREM processing:rJ 1 V
 *
 * Workload b ("batches"): the same with --batch (100) messages per request.
 *
 *   http: POST /api/messages/batch; GET .../pending?wait=W&max=100;
 *         POST /api/messages/acknowledge {"items": [...]}
 *   resp: one LPUSH q:rJ V1 .. V100; one write of BLMOVE ... W followed by 99
 *         LMOVE q:rJ processing:rJ RIGHT LEFT (cpstream's lease-100: wait for the
 *         first, then take what else is there, up to 100; Redis serves a blocked
 *         client's pipelined commands once it is unblocked); LREM processing:rJ -1 V
 *         pipelined for each leased V (-1: from the tail, where the oldest leased
 *         value sits, as cpstream's acknowledge finds a message by id, not by scan).
 *
 * Every message (the HTTP send body and the Redis value are the same JSON text)
 * carries "sent_ns", the CLOCK_MONOTONIC time its send request was written; its
 * send->lease latency is the time the lease response that carried it was read
 * minus that (senders and receivers share this process's clock). Percentiles are
 * nearest-rank.
 *
 * Senders run for --duration s (or until --count messages were issued), then stop;
 * receivers keep going until every message accepted is acknowledged (or --drain s
 * pass), then every connection is closed and one JSON line is printed. --window W
 * (0: none) caps the messages sent to a recipient and not yet acknowledged at W per
 * sender to it (at least one request's worth): a closed loop. Without it the senders
 * run open loop and a backlog builds when they outpace the receivers.
 *
 * Figures: sends_per_s and acks_per_s count messages accepted and acknowledged while
 * the senders ran; msgs_per_s is every message acknowledged over the time from the
 * start to the last acknowledgement (backlog drained); cpu_pct is this process's CPU
 * while the senders ran. A refused request (any other status, or a per-item code,
 * or a RESP error) is counted in errors, and the first one is kept in first_error.
 *
 * HTTP responses are read whole: status line, headers, then a Content-Length body
 * or a chunked one (Twisted Web answers these JSON bodies chunked); anything else
 * than the expected status counts as an error.
 *
 *     gcc -O2 -o bench/results/msgload bench/msgload.c   (bench/messages.py does this)
 *     bench/results/msgload --proto http|resp --port P [--token T] [--workload a|b]
 *         [--senders 4] [--receivers 4] [--duration 5] [--count 0] [--window 0]
 *         [--batch 100] [--wait 5] [--drain 30]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXCONN 512
#define MAXBATCH 1000
#define IDLEN 64

enum { SENDER, RECEIVER };
enum { K_NONE, K_SEND, K_LEASE, K_ACK };

typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

typedef struct {
    int fd, role, idx, queue;
    int kind;        /* the request in flight, K_NONE when idle */
    int n;           /* messages in it (send) or items (ack) */
    int expect;      /* resp: replies still due for it */
    int held_n;      /* messages leased and not yet acknowledged */
    int want_out;    /* EPOLLOUT registered */
    buf_t out, in, body, held; /* held: ids/lease ids (http) or values (resp) */
    size_t outoff;
} conn_t;

/* configuration */
static int http = 1, batched = 0, nsend = 4, nrecv = 4, batch = 100, wait_s = 5, port;
static long window_msgs = 0, count_msgs = 0;
static double duration = 5, drain_s = 30;
static const char *token = "";

/* state */
static conn_t conns[MAXCONN];
static int nconn, ep;
static long outstanding[MAXCONN], per_queue_senders[MAXCONN];
static long issued, sent, acked, seq;
static long req_send, req_lease, req_empty, req_ack;
static long err_send, err_lease, err_ack;
static int stopping;
static uint64_t *lat;
static size_t nlat, caplat;
static char first_error[512];

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

/* -- buffers -------------------------------------------------------------------- */

static void reserve(buf_t *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p) die("realloc");
    b->cap = cap;
}

static void put(buf_t *b, const void *data, size_t n) {
    reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void putf(buf_t *b, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) die("vsnprintf");
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        reserve(b, (size_t)n + 1);
    }
}

static void note_error(const char *what, int status, const char *body, size_t len) {
    if (first_error[0]) return;
    snprintf(first_error, sizeof first_error, "%s: %d %.*s", what, status,
             (int)(len > 300 ? 300 : len), body ? body : "");
}

/* -- requests ------------------------------------------------------------------- */

static void arm(conn_t *c, int out) {
    if (c->want_out == out) return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
    c->want_out = out;
}

static void flush(conn_t *c) {
    while (c->outoff < c->out.len) {
        ssize_t w = write(c->fd, c->out.p + c->outoff, c->out.len - c->outoff);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            die("write");
        }
        c->outoff += (size_t)w;
    }
    if (c->outoff == c->out.len) {
        c->out.len = c->outoff = 0;
        arm(c, 0);
    } else {
        arm(c, 1);
    }
}

static void http_request(conn_t *c, const char *method, const char *path, const buf_t *body) {
    putf(&c->out, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n", method,
         path, port, token);
    if (body) {
        putf(&c->out, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", body->len);
        put(&c->out, body->p, body->len);
    } else {
        put(&c->out, "\r\n", 2);
    }
}

static void resp_command(buf_t *b, int argc, const char **argv, const size_t *lens) {
    putf(b, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        size_t n = lens ? lens[i] : strlen(argv[i]);
        putf(b, "$%zu\r\n", n);
        put(b, argv[i], n);
        put(b, "\r\n", 2);
    }
}

static buf_t scratch; /* a request body or a message value under construction */

static void message_json(buf_t *b, int sender, int queue, uint64_t t) {
    putf(b,
         "{\"from_instance\":\"s%d\",\"to_instance\":\"r%d\",\"message_type\":\"bench.x\","
         "\"payload\":{\"sent_ns\":%llu,\"n\":%ld}}",
         sender, queue, (unsigned long long)t, seq++);
}

static int may_send(conn_t *c) {
    if (stopping || c->kind != K_NONE) return 0;
    if (count_msgs && issued >= count_msgs) return 0;
    long n = batched ? batch : 1;
    if (count_msgs && issued + n > count_msgs) n = count_msgs - issued;
    if (window_msgs && outstanding[c->queue] + n > window_msgs * per_queue_senders[c->queue])
        return 0;
    return (int)n;
}

static void issue_send(conn_t *c, int n) {
    uint64_t t = now_ns();
    scratch.len = 0;
    if (http) {
        if (batched) put(&scratch, "{\"messages\":[", 13);
        for (int i = 0; i < n; i++) {
            if (i) put(&scratch, ",", 1);
            message_json(&scratch, c->idx, c->queue, t);
        }
        if (batched) put(&scratch, "]}", 2);
        http_request(c, "POST", batched ? "/api/messages/batch" : "/api/messages", &scratch);
    } else {
        /* LPUSH q:rJ V1 .. Vn: the values are laid out in scratch, then referenced */
        static const char *argv[MAXBATCH + 2];
        static size_t lens[MAXBATCH + 2];
        static size_t offs[MAXBATCH + 2];
        char key[32];
        snprintf(key, sizeof key, "q:r%d", c->queue);
        for (int i = 0; i < n; i++) {
            offs[i] = scratch.len;
            message_json(&scratch, c->idx, c->queue, t);
            lens[i + 2] = scratch.len - offs[i];
        }
        argv[0] = "LPUSH";
        lens[0] = 5;
        argv[1] = key;
        lens[1] = strlen(key);
        for (int i = 0; i < n; i++) argv[i + 2] = scratch.p + offs[i];
        resp_command(&c->out, n + 2, argv, lens);
        c->expect = 1;
    }
    c->kind = K_SEND;
    c->n = n;
    issued += n;
    outstanding[c->queue] += n;
    req_send++;
    flush(c);
}

static void issue_lease(conn_t *c) {
    char path[128];
    if (http) {
        if (batched)
            snprintf(path, sizeof path, "/api/instances/r%d/messages/pending?wait=%d&max=%d",
                     c->queue, wait_s, batch);
        else
            snprintf(path, sizeof path, "/api/instances/r%d/messages/pending?wait=%d", c->queue,
                     wait_s);
        http_request(c, "GET", path, NULL);
    } else {
        char q[32], p[40], w[16];
        snprintf(q, sizeof q, "q:r%d", c->queue);
        snprintf(p, sizeof p, "processing:r%d", c->queue);
        snprintf(w, sizeof w, "%d", wait_s);
        const char *blmove[] = {"BLMOVE", q, p, "RIGHT", "LEFT", w};
        const char *lmove[] = {"LMOVE", q, p, "RIGHT", "LEFT"};
        resp_command(&c->out, 6, blmove, NULL);
        int more = batched ? batch - 1 : 0;
        for (int i = 0; i < more; i++) resp_command(&c->out, 5, lmove, NULL);
        c->expect = 1 + more;
    }
    c->kind = K_LEASE;
    c->held.len = 0;
    c->held_n = 0;
    req_lease++;
    flush(c);
}

static void issue_acks(conn_t *c) {
    if (http) {
        scratch.len = 0;
        if (batched) {
            put(&scratch, "{\"items\":[", 10);
            const char *p = c->held.p;
            for (int i = 0; i < c->held_n; i++, p += 2 * IDLEN)
                putf(&scratch, "%s{\"id\":\"%s\",\"lease_id\":\"%s\"}", i ? "," : "", p, p + IDLEN);
            put(&scratch, "]}", 2);
            http_request(c, "POST", "/api/messages/acknowledge", &scratch);
        } else {
            char path[128];
            putf(&scratch, "{\"lease_id\":\"%s\"}", c->held.p + IDLEN);
            snprintf(path, sizeof path, "/api/messages/%s/acknowledge", c->held.p);
            http_request(c, "POST", path, &scratch);
        }
        req_ack++;
    } else {
        char p[40];
        snprintf(p, sizeof p, "processing:r%d", c->queue);
        const char *argv[4] = {"LREM", p, batched ? "-1" : "1", NULL};
        size_t lens[4] = {4, strlen(p), strlen(argv[2]), 0};
        size_t off = 0;
        for (int i = 0; i < c->held_n; i++) {
            uint32_t n;
            memcpy(&n, c->held.p + off, 4);
            argv[3] = c->held.p + off + 4;
            lens[3] = n;
            resp_command(&c->out, 4, argv, lens);
            off += 4 + n;
        }
        c->expect = c->held_n;
        req_ack++;
    }
    c->kind = K_ACK;
    c->n = c->held_n;
    flush(c);
}

/* -- parsing -------------------------------------------------------------------- */

static const char *find(const char *hay, size_t n, const char *needle) {
    return memmem(hay, n, needle, strlen(needle));
}

/* The string value of "key" at or after p (spaces after the colon allowed), copied
 * into out (IDLEN); returns the position after it, or NULL. */
static const char *json_string(const char *p, const char *end, const char *key, char *out) {
    const char *k = find(p, (size_t)(end - p), key);
    if (!k) return NULL;
    k += strlen(key);
    while (k < end && (*k == ' ' || *k == ':')) k++;
    if (k >= end || *k != '"') return NULL;
    k++;
    const char *q = memchr(k, '"', (size_t)(end - k));
    if (!q || q - k >= IDLEN) return NULL;
    memcpy(out, k, (size_t)(q - k));
    out[q - k] = 0;
    return q + 1;
}

static void record_latency(const char *p, const char *end, uint64_t t) {
    const char *k = find(p, (size_t)(end - p), "\"sent_ns\"");
    if (!k) return;
    k += 9;
    while (k < end && (*k == ' ' || *k == ':')) k++;
    uint64_t sent_ns = strtoull(k, NULL, 10);
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 1 << 16;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat) die("realloc");
    }
    lat[nlat++] = t > sent_ns ? t - sent_ns : 0;
}

static long count_of(const char *p, size_t n, const char *a, const char *b) {
    long found = 0;
    for (const char *needle = a; needle; needle = needle == a ? b : NULL) {
        const char *q = p, *end = p + n;
        size_t len = strlen(needle);
        while ((q = memmem(q, (size_t)(end - q), needle, len))) found++, q += len;
    }
    return found;
}

/* One whole HTTP response at the head of c->in: 1 (status, body in c->body, *used
 * bytes), 0 when incomplete, -1 when malformed. */
static int http_response(conn_t *c, int *status, size_t *used) {
    char *b = c->in.p;
    size_t n = c->in.len;
    char *hend = memmem(b, n, "\r\n\r\n", 4);
    if (!hend) return 0;
    if (n < 12 || memcmp(b, "HTTP/1.", 7)) return -1;
    *status = atoi(b + 9);
    size_t hlen = (size_t)(hend + 4 - b);
    long clen = -1;
    int chunked = 0;
    for (char *line = memmem(b, hlen, "\r\n", 2) + 2; line < hend;) {
        char *eol = memmem(line, (size_t)(hend + 2 - line), "\r\n", 2);
        if (!strncasecmp(line, "content-length:", 15)) clen = strtol(line + 15, NULL, 10);
        if (!strncasecmp(line, "transfer-encoding:", 18) &&
            memmem(line, (size_t)(eol - line), "chunked", 7))
            chunked = 1;
        line = eol + 2;
    }
    c->body.len = 0;
    if (chunked) {
        size_t pos = hlen;
        for (;;) {
            char *eol = memmem(b + pos, n - pos, "\r\n", 2);
            if (!eol) return 0;
            size_t size = strtoul(b + pos, NULL, 16);
            pos = (size_t)(eol + 2 - b);
            if (size == 0) { /* trailers, then an empty line */
                for (;;) {
                    eol = memmem(b + pos, n - pos, "\r\n", 2);
                    if (!eol) return 0;
                    int empty = eol == b + pos;
                    pos = (size_t)(eol + 2 - b);
                    if (empty) break;
                }
                break;
            }
            if (pos + size + 2 > n) return 0;
            put(&c->body, b + pos, size);
            pos += size + 2;
        }
        *used = pos;
    } else if (clen >= 0) {
        if (hlen + (size_t)clen > n) return 0;
        put(&c->body, b + hlen, (size_t)clen);
        *used = hlen + (size_t)clen;
    } else {
        *used = hlen; /* no body (Twisted always sends one of the two for these) */
    }
    reserve(&c->body, 1);
    c->body.p[c->body.len] = 0;
    return 1;
}

static void send_done(conn_t *c, long ok) {
    sent += ok;
    if (ok < c->n) {
        err_send += c->n - ok;
        outstanding[c->queue] -= c->n - ok;
    }
}

static void ack_done(conn_t *c, long ok) {
    acked += ok;
    outstanding[c->queue] -= ok;
    if (ok < c->n) err_ack += c->n - ok;
}

static void on_http(conn_t *c, int status, uint64_t t) {
    const char *body = c->body.p, *end = c->body.p + c->body.len;
    int kind = c->kind;
    c->kind = K_NONE;
    if (kind == K_SEND) {
        long ok = 0;
        if (batched && status == 200)
            ok = count_of(body, c->body.len, "\"code\": 201", "\"code\":201");
        else if (!batched && status == 201)
            ok = 1;
        if (ok < c->n) note_error("send", status, body, c->body.len);
        send_done(c, ok);
    } else if (kind == K_LEASE) {
        if (status != 200) {
            err_lease++;
            note_error("lease", status, body, c->body.len);
        } else {
            const char *p = body;
            char *slot;
            while (c->held_n < MAXBATCH) {
                reserve(&c->held, 2 * IDLEN);
                slot = c->held.p + c->held.len;
                const char *q = json_string(p, end, "\"id\"", slot);
                if (!q) break;
                const char *r = json_string(q, end, "\"lease_id\"", slot + IDLEN);
                if (!r) break;
                record_latency(q, r, t);
                c->held.len += 2 * IDLEN;
                c->held_n++;
                p = r;
            }
        }
        if (c->held_n) {
            issue_acks(c);
        } else {
            req_empty++;
            issue_lease(c);
        }
    } else if (kind == K_ACK) {
        long ok = 0;
        if (batched && status == 200)
            ok = count_of(body, c->body.len, "\"code\": 200", "\"code\":200");
        else if (!batched && status == 200)
            ok = 1;
        if (ok < c->n) note_error("acknowledge", status, body, c->body.len);
        ack_done(c, ok);
        issue_lease(c);
    }
}

/* One RESP reply at p: its length (0 when incomplete, -1 when unexpected); *type is
 * its first byte ('n' for a null), *val and *vlen its value. */
static long resp_reply(const char *p, size_t n, char *type, const char **val, size_t *vlen) {
    if (n < 3) return 0;
    const char *eol = memchr(p, '\r', n);
    if (!eol || (size_t)(eol - p) + 2 > n) return 0;
    long head = eol + 2 - p;
    *type = p[0];
    *val = p + 1;
    *vlen = (size_t)(eol - p - 1);
    switch (p[0]) {
    case '+':
    case '-':
    case ':':
        return head;
    case '_':
        *type = 'n';
        return head;
    case '$':
    case '*': {
        long len = strtol(p + 1, NULL, 10);
        if (len < 0) {
            *type = 'n';
            return head;
        }
        if (p[0] == '*') return len == 0 ? (*type = 'n', head) : -1;
        if ((size_t)(head + len + 2) > n) return 0;
        *val = p + head;
        *vlen = (size_t)len;
        return head + len + 2;
    }
    }
    return -1;
}

static void on_resp(conn_t *c, char type, const char *val, size_t vlen, uint64_t t) {
    if (type == '-') note_error(c->kind == K_SEND ? "LPUSH" : c->kind == K_LEASE ? "lease" : "LREM",
                                0, val, vlen);
    if (c->kind == K_SEND) {
        c->expect--;
        c->kind = K_NONE;
        send_done(c, type == ':' ? c->n : 0);
    } else if (c->kind == K_LEASE) {
        if (type == '$') {
            uint32_t n = (uint32_t)vlen;
            put(&c->held, &n, 4);
            put(&c->held, val, vlen);
            c->held_n++;
            record_latency(val, val + vlen, t);
        } else if (type != 'n') {
            err_lease++;
        }
        if (--c->expect == 0) {
            if (c->held_n) {
                issue_acks(c);
            } else {
                req_empty++;
                c->kind = K_NONE;
                issue_lease(c);
            }
        }
    } else if (c->kind == K_ACK) {
        long ok = type == ':' && vlen == 1 && val[0] == '1';
        acked += ok;
        outstanding[c->queue] -= ok;
        err_ack += !ok;
        if (--c->expect == 0) {
            c->kind = K_NONE;
            issue_lease(c);
        }
    }
}

static void on_readable(conn_t *c) {
    reserve(&c->in, 256 * 1024);
    ssize_t r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        die("read");
    }
    if (r == 0) {
        fprintf(stderr, "msgload: the server closed a %s connection\n",
                c->role == SENDER ? "sender" : "receiver");
        exit(2);
    }
    c->in.len += (size_t)r;
    uint64_t t = now_ns();
    size_t off = 0;
    if (http) {
        for (;;) {
            if (c->kind == K_NONE) break;
            int status;
            size_t used;
            /* responses are parsed from the start of c->in: consume before the next */
            int rc = http_response(c, &status, &used);
            if (rc < 0) {
                fprintf(stderr, "msgload: malformed HTTP response\n");
                exit(2);
            }
            if (rc == 0) break;
            memmove(c->in.p, c->in.p + used, c->in.len - used);
            c->in.len -= used;
            on_http(c, status, t);
        }
    } else {
        while (c->expect > 0) {
            char type;
            const char *val;
            size_t vlen;
            long used = resp_reply(c->in.p + off, c->in.len - off, &type, &val, &vlen);
            if (used < 0) {
                fprintf(stderr, "msgload: unexpected RESP reply %c\n", c->in.p[off]);
                exit(2);
            }
            if (used == 0) break;
            off += (size_t)used;
            on_resp(c, type, val, vlen, t);
        }
        memmove(c->in.p, c->in.p + off, c->in.len - off);
        c->in.len -= off;
    }
}

/* -- setup and the loop ----------------------------------------------------------- */

static int connect_to(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
        die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double rank_ms(double fraction) {
    if (!nlat) return -1;
    size_t i = (size_t)(fraction * (double)nlat + 0.999999999);
    i = i ? i - 1 : 0;
    if (i >= nlat) i = nlat - 1;
    return lat[i] / 1e6;
}

static void usage(void) {
    fprintf(stderr, "usage: msgload --proto http|resp --port P [--token T] [--workload a|b]\n"
                    "  [--senders 4] [--receivers 4] [--duration 5] [--count 0] [--window 0]\n"
                    "  [--batch 100] [--wait 5] [--drain 30]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        i++;
        if (!strcmp(a, "--proto")) http = !strcmp(v, "http") ? 1 : !strcmp(v, "resp") ? 0 : -1;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--token")) token = v;
        else if (!strcmp(a, "--workload")) batched = !strcmp(v, "b");
        else if (!strcmp(a, "--senders")) nsend = atoi(v);
        else if (!strcmp(a, "--receivers")) nrecv = atoi(v);
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--count")) count_msgs = atol(v);
        else if (!strcmp(a, "--window")) window_msgs = atol(v);
        else if (!strcmp(a, "--batch")) batch = atoi(v);
        else if (!strcmp(a, "--wait")) wait_s = atoi(v);
        else if (!strcmp(a, "--drain")) drain_s = atof(v);
        else usage();
    }
    if (http < 0 || !port || nsend < 1 || nrecv < 1 || nsend + nrecv > MAXCONN || batch < 1 ||
        batch > MAXBATCH || duration <= 0)
        usage();
    if (!batched) batch = 1;
    if (window_msgs && window_msgs < batch) window_msgs = batch; /* one request at least */
    signal(SIGPIPE, SIG_IGN);
    ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    for (int i = 0; i < nsend + nrecv; i++) {
        conn_t *c = &conns[nconn++];
        c->role = i < nsend ? SENDER : RECEIVER;
        c->idx = i < nsend ? i : i - nsend;
        c->queue = c->idx % nrecv;
        if (c->role == SENDER) per_queue_senders[c->queue]++;
        c->fd = connect_to();
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    }

    uint64_t t0 = now_ns(), t_end = t0 + (uint64_t)(duration * 1e9), t_stop = 0, t_last = t0;
    double cpu0 = cpu_s(), cpu_stop = 0;
    long sent_stop = 0, acked_stop = 0, req_stop = 0;
    for (int i = 0; i < nconn; i++)
        if (conns[i].role == RECEIVER) issue_lease(&conns[i]);
    int timed_out = 0;
    struct epoll_event evs[64];
    for (;;) {
        uint64_t now = now_ns();
        if (!stopping && (now >= t_end || (count_msgs && issued >= count_msgs))) {
            stopping = 1;
            t_stop = now;
            cpu_stop = cpu_s();
            sent_stop = sent;
            acked_stop = acked;
            req_stop = req_send + req_lease + req_ack;
        }
        if (stopping) {
            int busy = 0;
            for (int i = 0; i < nsend; i++) busy |= conns[i].kind != K_NONE;
            if (!busy && acked >= sent) break;
            if (now >= t_stop + (uint64_t)(drain_s * 1e9)) {
                timed_out = 1;
                break;
            }
        } else {
            for (int i = 0; i < nsend; i++) {
                int n = may_send(&conns[i]);
                if (n) issue_send(&conns[i], n);
            }
        }
        uint64_t deadline = stopping ? t_stop + (uint64_t)(drain_s * 1e9) : t_end;
        int ms = deadline > now ? (int)((deadline - now) / 1000000) + 1 : 0;
        if (ms > 100) ms = 100;
        int n = epoll_wait(ep, evs, 64, ms);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT) flush(c);
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                long before = acked;
                on_readable(c);
                if (acked != before) t_last = now_ns();
            }
        }
    }
    uint64_t t_done = now_ns();
    double cpu_done = cpu_s();
    for (int i = 0; i < nconn; i++) close(conns[i].fd);

    qsort(lat, nlat, sizeof *lat, cmp_u64);
    double window = (t_stop - t0) / 1e9, total = (t_last - t0) / 1e9;
    printf("{\"proto\": \"%s\", \"workload\": \"%s\", \"senders\": %d, \"receivers\": %d, "
           "\"batch\": %d, \"window\": %ld, \"duration_s\": %.3f, \"total_s\": %.3f, "
           "\"drain_s\": %.3f, \"drain_timed_out\": %s, "
           "\"sent\": %ld, \"acked\": %ld, \"unacked\": %ld, "
           "\"sends_per_s\": %.1f, \"acks_per_s\": %.1f, \"msgs_per_s\": %.1f, "
           "\"requests_per_s\": %.1f, \"backlog_at_stop\": %ld, "
           "\"requests\": {\"send\": %ld, \"lease\": %ld, \"empty_lease\": %ld, \"ack\": %ld}, "
           "\"errors\": {\"send\": %ld, \"lease\": %ld, \"ack\": %ld}, "
           "\"latency_ms\": {\"n\": %zu, \"p50\": %.3f, \"p99\": %.3f, \"max\": %.3f}, "
           "\"cpu_pct\": %.1f, \"cpu_pct_total\": %.1f, \"first_error\": \"",
           http ? "http" : "resp", batched ? "b" : "a", nsend, nrecv, batch, window_msgs, window,
           total, (t_done - t_stop) / 1e9, timed_out ? "true" : "false", sent, acked,
           sent - acked, sent_stop / window, acked_stop / window,
           total > 0 ? acked / total : 0.0, req_stop / window, sent_stop - acked_stop, req_send,
           req_lease, req_empty, req_ack, err_send, err_lease, err_ack, nlat, rank_ms(0.50),
           rank_ms(0.99), rank_ms(1.0), 100 * (cpu_stop - cpu0) / window,
           100 * (cpu_done - cpu0) / ((t_done - t0) / 1e9));
    for (const char *p = first_error; *p; p++)
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if ((unsigned char)*p >= 0x20) putchar(*p);
    printf("\"}\n");
    return 0;
}
