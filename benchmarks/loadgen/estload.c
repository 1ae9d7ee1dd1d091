/*
 * estload: a small HTTP/1.1-over-TLS load generator for kipuka's EST endpoints.
 *
 * Every client slot holds one connection and has one request in flight at a time
 * (closed loop). Each request presents a client certificate and POSTs a
 * pre-generated body (the identity's CSR), so the server sees real mTLS
 * simpleenroll traffic while the generator itself spends almost no CPU: no
 * per-request key generation, no request formatting, one epoll loop per thread.
 *
 * Modes:
 *   keepalive  one TLS connection per slot, reused for every request (slot i
 *              presents identity i % N for its whole life);
 *   handshake  a new TCP connection and a full TLS handshake for every request,
 *              presenting the next identity in turn; no session resumption
 *              (session cache off, SSL_OP_NO_TICKET, no session ever offered).
 *
 * Identities come from a manifest file: one "CERT.pem KEY.pem BODY" line each,
 * BODY being the request body sent as is (base64 DER of a CSR).
 *
 * Only loopback targets are accepted (127.0.0.0/8 or ::1).
 *
 * Build: gcc -O2 -o estload estload.c -lssl -lcrypto -lpthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
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

#define RESP_MAX (64 * 1024)
#define MAX_STATUS 600
#define N_SAMPLES 3

enum { MODE_KEEPALIVE, MODE_HANDSHAKE };
enum { ST_IDLE, ST_CONNECTING, ST_HANDSHAKE, ST_WRITING, ST_READING, ST_WAIT_RETRY };
enum { E_CONNECT, E_TLS, E_IO, E_PARSE, E_TIMEOUT, E_COUNT };
static const char *ERR_NAMES[E_COUNT] = {"connect", "tls", "io", "parse", "timeout"};

typedef struct {
    SSL_CTX *ctx;   /* this identity's certificate and key, loaded once */
    char *req;      /* complete HTTP request: headers + body */
    size_t req_len;
} identity_t;

typedef struct {
    uint64_t status[MAX_STATUS];
    uint64_t errors[E_COUNT];
} counters_t;

struct thread_ctx;

typedef struct {
    int idx;
    int fd;
    int state;
    uint32_t events;        /* epoll interest currently registered (0 = not registered) */
    SSL *ssl;
    identity_t *id;
    size_t wpos;
    char *buf;
    size_t blen;
    size_t hdr_len;         /* 0 until the header block is complete */
    long clen;              /* -1: read to EOF */
    int status;
    int close_after;
    int requests_on_conn;
    uint64_t t_start;       /* ns: start of the current request (connect time in handshake mode) */
    uint64_t retry_at;
    struct thread_ctx *th;
} conn_t;

typedef struct thread_ctx {
    int tid;
    int epfd;
    conn_t *conns;
    int nconns;
    unsigned next_id;
    counters_t window;      /* completed inside the measurement window */
    counters_t total;       /* whole run: warm-up, window and drain */
    uint32_t *lat;          /* latencies (us) of window completions */
    size_t nlat, caplat;
    uint64_t handshakes;
    uint64_t in_flight;
    char samples[N_SAMPLES][256];
    int nsamples;
} thread_ctx_t;

/* --- options and shared state ------------------------------------------------------ */

static struct {
    const char *host;
    int port;
    const char *path;
    const char *host_header;
    const char *manifest;
    const char *cafile;
    int conc;
    int threads;
    double duration;
    double warmup;
    long count;
    double timeout;
    double drain;
    int mode;
    int max_tls;
    int verbose;
} opt = {"127.0.0.1", 0, "/.well-known/est/simpleenroll", "localhost", NULL, NULL, 8, 1, 10.0, 0.0, 0, 30.0, 10.0,
         MODE_KEEPALIVE, 0, 0};

static struct sockaddr_storage target;
static socklen_t target_len;
static identity_t *ids;
static int nids;
static uint64_t t0, t_warm_end, t_deadline;
static atomic_long started;          /* requests started (for -n) */
static atomic_int stopping;          /* 1: start no new request */
static volatile sig_atomic_t interrupted;

static SSL_CTX *new_ctx(void);

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "estload: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    ERR_print_errors_fp(stderr);
    exit(2);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)n + 1);
    if (fread(data, 1, (size_t)n, f) != (size_t)n) die("cannot read %s", path);
    fclose(f);
    data[n] = 0;
    *len = (size_t)n;
    return data;
}

static void load_identities(void) {
    FILE *f = fopen(opt.manifest, "r");
    if (!f) die("cannot open manifest %s", opt.manifest);
    char line[4096];
    int cap = 64;
    ids = calloc((size_t)cap, sizeof *ids);
    while (fgets(line, sizeof line, f)) {
        char certp[1024], keyp[1024], bodyp[1024];
        if (line[0] == '#' || line[0] == '\n') continue;
        if (sscanf(line, "%1023s %1023s %1023s", certp, keyp, bodyp) != 3) die("bad manifest line: %s", line);
        if (nids == cap) {
            cap *= 2;
            ids = realloc(ids, (size_t)cap * sizeof *ids);
        }
        identity_t *id = &ids[nids++];
        id->ctx = new_ctx();
        if (SSL_CTX_use_certificate_file(id->ctx, certp, SSL_FILETYPE_PEM) != 1) die("cannot load certificate %s", certp);
        if (SSL_CTX_use_PrivateKey_file(id->ctx, keyp, SSL_FILETYPE_PEM) != 1) die("cannot load key %s", keyp);
        if (SSL_CTX_check_private_key(id->ctx) != 1) die("key does not match certificate %s", certp);
        size_t blen;
        char *body = read_file(bodyp, &blen);
        char head[1024];
        int hl = snprintf(head, sizeof head,
                          "POST %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: estload\r\n"
                          "Content-Type: application/pkcs10\r\nContent-Length: %zu\r\n%s\r\n",
                          opt.path, opt.host_header, opt.port, blen,
                          opt.mode == MODE_HANDSHAKE ? "Connection: close\r\n" : "");
        id->req_len = (size_t)hl + blen;
        id->req = malloc(id->req_len);
        memcpy(id->req, head, (size_t)hl);
        memcpy(id->req + hl, body, blen);
        free(body);
    }
    fclose(f);
    if (nids == 0) die("no identity in %s", opt.manifest);
}

static void setup_target(void) {
    struct sockaddr_in *a4 = (struct sockaddr_in *)&target;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&target;
    memset(&target, 0, sizeof target);
    if (inet_pton(AF_INET, opt.host, &a4->sin_addr) == 1) {
        if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127) die("refusing non-loopback target %s", opt.host);
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)opt.port);
        target_len = sizeof *a4;
    } else if (inet_pton(AF_INET6, opt.host, &a6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr)) die("refusing non-loopback target %s", opt.host);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)opt.port);
        target_len = sizeof *a6;
    } else {
        die("target must be a numeric loopback address, got %s", opt.host);
    }
}

static X509_STORE *trust; /* shared by every identity's context when -C is given */

static SSL_CTX *new_ctx(void) {
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (!c) die("%s", "SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    if (opt.max_tls) SSL_CTX_set_max_proto_version(c, opt.max_tls);
    /* Full handshakes only: nothing is cached, no ticket is asked for or offered. */
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (trust) {
        SSL_CTX_set1_cert_store(c, trust);
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    }
    return c;
}

static void setup_tls(void) {
    if (opt.cafile) {
        trust = X509_STORE_new();
        if (X509_STORE_load_file(trust, opt.cafile) != 1) die("cannot load CA file %s", opt.cafile);
    }
}

/* --- per-connection state machine --------------------------------------------------- */

static void want(conn_t *c, uint32_t ev) {
    if (c->events == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(c->th->epfd, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e) != 0) {
        perror("epoll_ctl");
        exit(2);
    }
    c->events = ev;
}

static void close_conn(conn_t *c, int send_close_notify) {
    if (c->ssl) {
        if (send_close_notify) SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        if (c->events) epoll_ctl(c->th->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->events = 0;
    c->requests_on_conn = 0;
    c->state = ST_IDLE;
}

static int may_start(void) {
    if (atomic_load(&stopping) || interrupted) return 0;
    if (opt.count > 0) {
        long n = atomic_fetch_add(&started, 1);
        if (n >= opt.count) {
            atomic_store(&stopping, 1);
            return 0;
        }
    } else if (now_ns() >= t_deadline) {
        atomic_store(&stopping, 1);
        return 0;
    }
    return 1;
}

static void start_request(conn_t *c);
static void drive(conn_t *c);

static void fail(conn_t *c, int kind) {
    c->th->total.errors[kind]++;
    uint64_t t = now_ns();
    if (c->t_start >= t_warm_end && t <= t_deadline) c->th->window.errors[kind]++;
    if (c->state != ST_IDLE && c->state != ST_WAIT_RETRY) c->th->in_flight--;
    if (opt.verbose) fprintf(stderr, "estload: slot %d: %s error (state %d, errno %d)\n", c->idx, ERR_NAMES[kind], c->state, errno);
    close_conn(c, 0);
    ERR_clear_error();
    c->state = ST_WAIT_RETRY;
    c->retry_at = t + 10 * 1000000ull; /* back off 10 ms so a dead server is not spun on */
}

static void begin_write(conn_t *c) {
    c->state = ST_WRITING;
    c->wpos = 0;
    c->blen = 0;
    c->hdr_len = 0;
    c->clen = -1;
    c->status = 0;
    c->close_after = 0;
    drive(c);
}

static void open_conn(conn_t *c) {
    c->fd = socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        perror("socket");
        exit(2);
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->events = 0;
    if (opt.mode == MODE_HANDSHAKE) c->id = &ids[c->th->next_id++ % (unsigned)nids];
    else c->id = &ids[c->idx % nids];
    c->ssl = SSL_new(c->id->ctx);
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, opt.host_header);
    if (opt.cafile) SSL_set1_host(c->ssl, opt.host_header);
    SSL_set_connect_state(c->ssl);
    int r = connect(c->fd, (struct sockaddr *)&target, target_len);
    if (r == 0) {
        c->state = ST_HANDSHAKE;
        drive(c);
    } else if (errno == EINPROGRESS) {
        c->state = ST_CONNECTING;
        want(c, EPOLLOUT);
    } else {
        c->state = ST_CONNECTING;
        fail(c, E_CONNECT);
    }
}

static void start_request(conn_t *c) {
    if (!may_start()) {
        close_conn(c, 1);
        return;
    }
    c->th->in_flight++;
    c->t_start = now_ns();
    if (c->ssl == NULL) open_conn(c);
    else begin_write(c);
}

/* Parse what is buffered; returns 1 when a complete response is in, 0 when more is needed, -1 on error. */
static int parse_response(conn_t *c, int eof) {
    if (c->hdr_len == 0) {
        char *end = memmem(c->buf, c->blen, "\r\n\r\n", 4);
        if (!end) return eof ? -1 : (c->blen >= RESP_MAX ? -1 : 0);
        c->hdr_len = (size_t)(end - c->buf) + 4;
        if (c->blen < 12 || strncmp(c->buf, "HTTP/1.", 7) != 0) return -1;
        c->status = atoi(c->buf + 9);
        if (c->status < 100 || c->status >= MAX_STATUS) return -1;
        if (c->buf[7] == '0') c->close_after = 1; /* HTTP/1.0 */
        char *p = memchr(c->buf, '\n', c->hdr_len) + 1;
        while (p < c->buf + c->hdr_len - 2) {
            char *eol = memchr(p, '\n', (size_t)(c->buf + c->hdr_len - p));
            if (!eol) break;
            if (strncasecmp(p, "content-length:", 15) == 0) c->clen = strtol(p + 15, NULL, 10);
            else if (strncasecmp(p, "connection:", 11) == 0 && memmem(p, (size_t)(eol - p), "close", 5))
                c->close_after = 1;
            else if (strncasecmp(p, "transfer-encoding:", 18) == 0) return -1; /* chunked: not expected here */
            p = eol + 1;
        }
    }
    if (c->clen >= 0) {
        if (c->hdr_len + (size_t)c->clen > RESP_MAX) return -1;
        return c->blen >= c->hdr_len + (size_t)c->clen ? 1 : 0;
    }
    if (eof) {
        c->close_after = 1;
        return 1;
    }
    return 0;
}

static void complete(conn_t *c) {
    thread_ctx_t *th = c->th;
    uint64_t t = now_ns();
    th->in_flight--;
    th->total.status[c->status]++;
    if (c->t_start >= t_warm_end && t <= t_deadline) {
        th->window.status[c->status]++;
        if (th->nlat == th->caplat) {
            th->caplat = th->caplat ? th->caplat * 2 : 65536;
            th->lat = realloc(th->lat, th->caplat * sizeof *th->lat);
        }
        uint64_t us = (t - c->t_start) / 1000;
        th->lat[th->nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    }
    if (c->status != 200 && th->nsamples < N_SAMPLES) {
        size_t body = c->blen - c->hdr_len;
        snprintf(th->samples[th->nsamples++], sizeof th->samples[0], "%d %.*s", c->status,
                 (int)(body > 200 ? 200 : body), c->buf + c->hdr_len);
    }
    c->requests_on_conn++;
    if (opt.mode == MODE_HANDSHAKE || c->close_after) close_conn(c, 1);
    start_request(c);
}

static void drive(conn_t *c) {
    for (;;) {
        switch (c->state) {
        case ST_CONNECTING: {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err) {
                errno = err;
                fail(c, E_CONNECT);
                return;
            }
            c->state = ST_HANDSHAKE;
            break;
        }
        case ST_HANDSHAKE: {
            int r = SSL_connect(c->ssl);
            if (r == 1) {
                c->th->handshakes++;
                begin_write(c);
                return;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ) { want(c, EPOLLIN); return; }
            if (e == SSL_ERROR_WANT_WRITE) { want(c, EPOLLOUT); return; }
            if (opt.verbose) ERR_print_errors_fp(stderr);
            fail(c, E_TLS);
            return;
        }
        case ST_WRITING: {
            int r = SSL_write(c->ssl, c->id->req + c->wpos, (int)(c->id->req_len - c->wpos));
            if (r > 0) {
                c->wpos += (size_t)r;
                if (c->wpos < c->id->req_len) continue;
                if (!c->buf) c->buf = malloc(RESP_MAX);
                c->state = ST_READING;
                break;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ) { want(c, EPOLLIN); return; }
            if (e == SSL_ERROR_WANT_WRITE) { want(c, EPOLLOUT); return; }
            fail(c, E_IO);
            return;
        }
        case ST_READING: {
            int r = SSL_read(c->ssl, c->buf + c->blen, (int)(RESP_MAX - c->blen));
            int eof = 0;
            if (r > 0) {
                c->blen += (size_t)r;
            } else {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ) { want(c, EPOLLIN); return; }
                if (e == SSL_ERROR_WANT_WRITE) { want(c, EPOLLOUT); return; }
                if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL) eof = 1;
                else { fail(c, E_IO); return; }
            }
            int p = parse_response(c, eof);
            if (p == 1) { complete(c); return; }
            if (p < 0) { fail(c, eof && c->blen == 0 ? E_IO : E_PARSE); return; }
            if (eof) { fail(c, E_IO); return; }
            break;
        }
        default:
            return;
        }
    }
}

static void *run_thread(void *arg) {
    thread_ctx_t *th = arg;
    struct epoll_event evs[256];
    for (int i = 0; i < th->nconns; i++) start_request(&th->conns[i]);
    uint64_t timeout_ns = (uint64_t)(opt.timeout * 1e9);
    uint64_t drain_until = 0;
    uint64_t last_scan = now_ns();
    for (;;) {
        if (opt.count == 0 && !atomic_load(&stopping) && now_ns() >= t_deadline) atomic_store(&stopping, 1);
        if (atomic_load(&stopping) || interrupted) {
            if (!drain_until) drain_until = now_ns() + (uint64_t)(opt.drain * 1e9);
            int busy = 0;
            for (int i = 0; i < th->nconns; i++) {
                conn_t *c = &th->conns[i];
                if (c->state == ST_WAIT_RETRY) c->state = ST_IDLE;
                if (c->state != ST_IDLE) busy = 1;
            }
            if (!busy || now_ns() > drain_until || interrupted > 1) break;
        }
        int n = epoll_wait(th->epfd, evs, 256, 10);
        for (int i = 0; i < n; i++) drive((conn_t *)evs[i].data.ptr);
        uint64_t t = now_ns();
        if (t - last_scan >= 10 * 1000000ull) {
            last_scan = t;
            for (int i = 0; i < th->nconns; i++) {
                conn_t *c = &th->conns[i];
                if (c->state == ST_WAIT_RETRY && t >= c->retry_at) {
                    c->state = ST_IDLE;
                    start_request(c);
                } else if (c->state != ST_IDLE && c->state != ST_WAIT_RETRY && t - c->t_start > timeout_ns) {
                    fail(c, E_TIMEOUT);
                }
            }
        }
    }
    for (int i = 0; i < th->nconns; i++) {
        conn_t *c = &th->conns[i];
        if (c->state != ST_IDLE && c->state != ST_WAIT_RETRY) {
            th->total.errors[E_TIMEOUT]++; /* still in flight when the drain ended */
            th->in_flight--;
        }
        close_conn(c, 0);
    }
    return NULL;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(uint32_t *v, size_t n, double p) {
    if (n == 0) return 0;
    size_t i = (size_t)(p / 100.0 * (double)n);
    if (i >= n) i = n - 1;
    return v[i] / 1000.0;
}

static void on_signal(int sig) {
    (void)sig;
    interrupted++;
    atomic_store(&stopping, 1);
}

static void usage(void) {
    fprintf(stderr,
            "usage: estload -p PORT -i MANIFEST [options]\n"
            "  -a ADDR        target address, loopback only (default 127.0.0.1)\n"
            "  -p PORT        target port\n"
            "  -u PATH        request path (default /.well-known/est/simpleenroll)\n"
            "  -N NAME        Host header, SNI and verified name (default localhost)\n"
            "  -i FILE        manifest: one 'CERT.pem KEY.pem BODY' line per identity\n"
            "  -C FILE        CA bundle to verify the server with (default: no verification)\n"
            "  -m MODE        keepalive (default) or handshake (new TLS connection per request)\n"
            "  -c N           concurrent clients (default 8)\n"
            "  -t N           threads (default 1)\n"
            "  -d SECONDS     measured duration (default 10)\n"
            "  -w SECONDS     warm-up before the measured window (default 0)\n"
            "  -n COUNT       stop after COUNT requests instead of a duration\n"
            "  -T SECONDS     per-request timeout (default 30)\n"
            "  -D SECONDS     how long in-flight requests may finish after the end (default 10)\n"
            "  -V 1.2|1.3     highest TLS version offered (default 1.3)\n"
            "  -v             verbose errors\n");
    exit(2);
}

int main(int argc, char **argv) {
    int ch;
    while ((ch = getopt(argc, argv, "a:p:u:N:i:C:m:c:t:d:w:n:T:D:V:vh")) != -1) {
        switch (ch) {
        case 'a': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'u': opt.path = optarg; break;
        case 'N': opt.host_header = optarg; break;
        case 'i': opt.manifest = optarg; break;
        case 'C': opt.cafile = optarg; break;
        case 'm':
            if (strcmp(optarg, "keepalive") == 0) opt.mode = MODE_KEEPALIVE;
            else if (strcmp(optarg, "handshake") == 0) opt.mode = MODE_HANDSHAKE;
            else usage();
            break;
        case 'c': opt.conc = atoi(optarg); break;
        case 't': opt.threads = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'n': opt.count = atol(optarg); break;
        case 'T': opt.timeout = atof(optarg); break;
        case 'D': opt.drain = atof(optarg); break;
        case 'V':
            if (strcmp(optarg, "1.2") == 0) opt.max_tls = TLS1_2_VERSION;
            else if (strcmp(optarg, "1.3") == 0) opt.max_tls = TLS1_3_VERSION;
            else usage();
            break;
        case 'v': opt.verbose = 1; break;
        default: usage();
        }
    }
    if (!opt.port || !opt.manifest || opt.conc < 1 || opt.threads < 1) usage();
    if (opt.threads > opt.conc) opt.threads = opt.conc;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    setup_target();
    setup_tls();
    load_identities();

    thread_ctx_t *ths = calloc((size_t)opt.threads, sizeof *ths);
    conn_t *conns = calloc((size_t)opt.conc, sizeof *conns);
    for (int t = 0; t < opt.threads; t++) {
        ths[t].tid = t;
        ths[t].epfd = epoll_create1(EPOLL_CLOEXEC);
        ths[t].next_id = (unsigned)t * 7919u;
    }
    /* contiguous slices of the slot array, one per thread */
    int per = opt.conc / opt.threads, extra = opt.conc % opt.threads, k = 0;
    for (int t = 0; t < opt.threads; t++) {
        int n = per + (t < extra);
        ths[t].conns = &conns[k];
        ths[t].nconns = n;
        for (int i = 0; i < n; i++, k++) {
            conns[k].idx = k;
            conns[k].fd = -1;
            conns[k].th = &ths[t];
        }
    }

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    t0 = now_ns();
    if (opt.count > 0) {
        t_warm_end = t0;
        t_deadline = UINT64_MAX;
    } else {
        t_warm_end = t0 + (uint64_t)(opt.warmup * 1e9);
        t_deadline = t_warm_end + (uint64_t)(opt.duration * 1e9);
    }
    pthread_t *tids = calloc((size_t)opt.threads, sizeof *tids);
    for (int t = 0; t < opt.threads; t++) pthread_create(&tids[t], NULL, run_thread, &ths[t]);
    for (int t = 0; t < opt.threads; t++) pthread_join(tids[t], NULL);
    uint64_t t_end = now_ns();
    getrusage(RUSAGE_SELF, &ru1);

    /* merge */
    counters_t win = {0}, tot = {0};
    size_t nlat = 0;
    uint64_t handshakes = 0;
    for (int t = 0; t < opt.threads; t++) {
        for (int s = 0; s < MAX_STATUS; s++) {
            win.status[s] += ths[t].window.status[s];
            tot.status[s] += ths[t].total.status[s];
        }
        for (int e = 0; e < E_COUNT; e++) {
            win.errors[e] += ths[t].window.errors[e];
            tot.errors[e] += ths[t].total.errors[e];
        }
        nlat += ths[t].nlat;
        handshakes += ths[t].handshakes;
    }
    uint32_t *lat = malloc((nlat ? nlat : 1) * sizeof *lat);
    size_t off = 0;
    double sum = 0;
    for (int t = 0; t < opt.threads; t++) {
        memcpy(lat + off, ths[t].lat, ths[t].nlat * sizeof *lat);
        off += ths[t].nlat;
    }
    for (size_t i = 0; i < nlat; i++) sum += lat[i];
    qsort(lat, nlat, sizeof *lat, cmp_u32);

    double window_s;
    if (opt.count > 0) window_s = (double)(t_end - t0) / 1e9;
    else window_s = (double)((t_end < t_deadline ? t_end : t_deadline) - t_warm_end) / 1e9;
    uint64_t ok = win.status[200], done = 0, errs = 0;
    for (int s = 0; s < MAX_STATUS; s++) done += win.status[s];
    for (int e = 0; e < E_COUNT; e++) errs += win.errors[e];
    errs += done - ok;
    uint64_t tot_ok = tot.status[200], tot_done = 0, tot_err = 0;
    for (int s = 0; s < MAX_STATUS; s++) tot_done += tot.status[s];
    for (int e = 0; e < E_COUNT; e++) tot_err += tot.errors[e];
    tot_err += tot_done - tot_ok;
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    double wall = (double)(t_end - t0) / 1e9;

    const char *mode = opt.mode == MODE_KEEPALIVE ? "keepalive" : "handshake";
    printf("estload: %s, %d clients, %d thread(s), %.1f s window (%.1f s wall)\n", mode, opt.conc, opt.threads,
           window_s, wall);
    printf("  requests  %llu in window (%llu ok), %.1f ok/s\n", (unsigned long long)done, (unsigned long long)ok,
           ok / window_s);
    printf("  latency   p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  mean %.2f ms\n", pct(lat, nlat, 50),
           pct(lat, nlat, 90), pct(lat, nlat, 99), nlat ? lat[nlat - 1] / 1000.0 : 0.0, nlat ? sum / nlat / 1000.0 : 0.0);
    printf("  errors   ");
    if (!errs) printf(" none");
    for (int s = 0; s < MAX_STATUS; s++)
        if (s != 200 && win.status[s]) printf(" http_%d=%llu", s, (unsigned long long)win.status[s]);
    for (int e = 0; e < E_COUNT; e++)
        if (win.errors[e]) printf(" %s=%llu", ERR_NAMES[e], (unsigned long long)win.errors[e]);
    printf("\n  whole run %llu responses, %llu with 200, %llu errors; %llu TLS handshakes\n",
           (unsigned long long)tot_done, (unsigned long long)tot_ok, (unsigned long long)tot_err,
           (unsigned long long)handshakes);
    printf("  estload CPU %.2f s (%.0f%% of one core)\n", cpu, 100.0 * cpu / wall);
    for (int t = 0; t < opt.threads; t++)
        for (int s = 0; s < ths[t].nsamples; s++) printf("  sample error: %s\n", ths[t].samples[s]);

    /* one machine-readable line */
    printf("RESULT {\"mode\":\"%s\",\"clients\":%d,\"threads\":%d,\"window_s\":%.3f,\"wall_s\":%.3f,"
           "\"completed\":%llu,\"ok\":%llu,\"rps\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"max_ms\":%.3f,\"mean_ms\":%.3f,\"errors\":%llu,\"error_detail\":{",
           mode, opt.conc, opt.threads, window_s, wall, (unsigned long long)done, (unsigned long long)ok, ok / window_s,
           pct(lat, nlat, 50), pct(lat, nlat, 90), pct(lat, nlat, 99), nlat ? lat[nlat - 1] / 1000.0 : 0.0,
           nlat ? sum / nlat / 1000.0 : 0.0, (unsigned long long)errs);
    const char *sep = "";
    for (int s = 0; s < MAX_STATUS; s++)
        if (s != 200 && win.status[s]) {
            printf("%s\"http_%d\":%llu", sep, s, (unsigned long long)win.status[s]);
            sep = ",";
        }
    for (int e = 0; e < E_COUNT; e++)
        if (win.errors[e]) {
            printf("%s\"%s\":%llu", sep, ERR_NAMES[e], (unsigned long long)win.errors[e]);
            sep = ",";
        }
    printf("},\"total_responses\":%llu,\"total_ok\":%llu,\"total_errors\":%llu,\"handshakes\":%llu,"
           "\"client_cpu_s\":%.3f,\"client_cpu_pct\":%.1f}\n",
           (unsigned long long)tot_done, (unsigned long long)tot_ok, (unsigned long long)tot_err,
           (unsigned long long)handshakes, cpu, 100.0 * cpu / wall);
    return 0;
}
