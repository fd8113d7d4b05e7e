/* Load generator for the media bench: N RTP streams through a relay, loss and delay.
 *
 * Two sockets play all the phones: every call i has phone A on socket A sending to the
 * relay's port A_i and phone B on socket B sending to port B_i. The relay (ours or the
 * C peer) forwards A_i -> B_i and B_i -> A_i. Each packet is 172 bytes (12-byte RTP
 * header + 160 bytes of payload, as G.711 at 20 ms) and carries its stream number and
 * send time (CLOCK_REALTIME) in the payload; the kernel receive timestamp
 * (SO_TIMESTAMPNS, same clock) gives the one-way delay through the relay without the
 * generator's own scheduling in the measurement.
 *
 * Streams are paced evenly: packet g of the run (stream g % N) is due at
 * t0 + g * interval / N, sent with sendmmsg in batches of whatever is due.
 *
 * Usage: relay_loadgen PORTS_FILE STREAMS SECONDS WARMUP INTERVAL_US
 *                      LOCAL_A_PORT LOCAL_B_PORT RELAY_HOST
 * PORTS_FILE has one line "A_port B_port" per call; STREAMS uses STREAMS/2 calls.
 * Output (stdout, one line of JSON): sent and received (packets sent in the measurement
 * window, and how many of those came back within 100 ms; later ones are counted in
 * late and as lost), arrived (packets that came back during the
 * window whenever sent: the relay's throughput when it is overloaded), loss, delay
 * percentiles (us), and the added jitter (delay minus the stream's minimum delay)
 * p50/p99/max in us.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PKT 172
#define BATCH 64
#define MAGIC 0x52544c47u
/* A packet this late is as good as lost: a phone's jitter buffer would have played
 * concealment in its place long before. Without this rule a saturated relay with deep
 * socket buffers passes a short run loss-free while its queue grows. */
#define LATE_NS 100000000LL

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int open_sock(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); exit(2); }
    int on = 1, size = 64 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); exit(2); }
    return fd;
}

struct rx {
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    unsigned char buf[BATCH][2048];
    unsigned char ctl[BATCH][256];
};

static int64_t *delays;   /* delay of each measured packet, ns */
static uint32_t *dstream; /* its stream */
static size_t ndelays, cap;
static uint64_t received_window;
static uint64_t late_window;
static uint64_t arrived_window; /* packets arriving in the window, whenever sent */

static void drain(int fd, struct rx *r, int64_t win_start, int64_t win_end) {
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            r->iov[i].iov_base = r->buf[i];
            r->iov[i].iov_len = sizeof r->buf[i];
            memset(&r->msgs[i].msg_hdr, 0, sizeof r->msgs[i].msg_hdr);
            r->msgs[i].msg_hdr.msg_iov = &r->iov[i];
            r->msgs[i].msg_hdr.msg_iovlen = 1;
            r->msgs[i].msg_hdr.msg_control = r->ctl[i];
            r->msgs[i].msg_hdr.msg_controllen = sizeof r->ctl[i];
        }
        int n = recvmmsg(fd, r->msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) return;
        int64_t fallback = now_ns();
        for (int i = 0; i < n; i++) {
            if (r->msgs[i].msg_len != PKT) continue;
            unsigned char *p = r->buf[i] + 12;
            uint32_t magic, stream;
            int64_t sent;
            memcpy(&magic, p, 4);
            memcpy(&stream, p + 4, 4);
            memcpy(&sent, p + 8, 8);
            if (magic != MAGIC) continue;
            int64_t at = fallback;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&r->msgs[i].msg_hdr); c;
                 c = CMSG_NXTHDR(&r->msgs[i].msg_hdr, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(c), sizeof ts);
                    at = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
                }
            }
            if (at >= win_start && at < win_end) arrived_window++;
            if (sent < win_start || sent >= win_end) continue;
            if (at - sent > LATE_NS) {
                late_window++;
                continue;
            }
            received_window++;
            if (ndelays < cap) {
                delays[ndelays] = at - sent;
                dstream[ndelays] = stream;
                ndelays++;
            }
        }
        if (n < BATCH) return;
    }
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s PORTS STREAMS SECONDS WARMUP INTERVAL_US A_PORT B_PORT HOST\n",
                argv[0]);
        return 2;
    }
    const char *ports_file = argv[1];
    int streams = atoi(argv[2]);
    double seconds = atof(argv[3]), warmup = atof(argv[4]);
    int64_t interval = (int64_t)atoll(argv[5]) * 1000;
    const char *host = argv[8];
    int calls = streams / 2;
    streams = calls * 2;
    if (calls <= 0) return 2;

    FILE *f = fopen(ports_file, "r");
    if (!f) { perror(ports_file); return 2; }
    struct sockaddr_in *dst = calloc(streams, sizeof *dst);
    for (int i = 0; i < calls; i++) {
        int pa, pb;
        if (fscanf(f, "%d %d", &pa, &pb) != 2) {
            fprintf(stderr, "ports file has fewer than %d calls\n", calls);
            return 2;
        }
        for (int d = 0; d < 2; d++) {
            struct sockaddr_in *a = &dst[2 * i + d];
            a->sin_family = AF_INET;
            a->sin_port = htons(d ? pb : pa);
            inet_pton(AF_INET, host, &a->sin_addr);
        }
    }
    fclose(f);

    int fds[2] = {open_sock(host, atoi(argv[6])), open_sock(host, atoi(argv[7]))};
    cap = (size_t)((seconds + 1) * streams * (1e9 / (double)interval)) + 1024;
    delays = malloc(cap * sizeof *delays);
    dstream = malloc(cap * sizeof *dstream);
    static struct rx r;

    uint16_t *seq = calloc(streams, sizeof *seq);
    static unsigned char out[2][BATCH][PKT];
    struct mmsghdr omsg[2][BATCH];
    struct iovec oiov[2][BATCH];
    int ocount[2] = {0, 0};

    int64_t t0 = now_ns() + 20000000LL;
    int64_t win_start = t0 + (int64_t)(warmup * 1e9);
    int64_t win_end = win_start + (int64_t)(seconds * 1e9);
    int64_t stop_send = win_end;
    uint64_t g = 0, sent_window = 0;
    double step = (double)interval / streams; /* ns between consecutive packets */

    for (;;) {
        int64_t now = now_ns();
        if (now >= stop_send + 300000000LL) break; /* 300 ms for the last ones to return */
        while (now < stop_send) {
            int64_t due = t0 + (int64_t)(g * step);
            if (due > now) break;
            int s = (int)(g % streams), side = s & 1;
            unsigned char *p = out[side][ocount[side]];
            uint32_t ssrc = htonl(0x10000u + s), ts = htonl((uint32_t)(g / streams) * 160u);
            uint16_t sq = htons(seq[s]++);
            p[0] = 0x80;
            p[1] = 0;
            memcpy(p + 2, &sq, 2);
            memcpy(p + 4, &ts, 4);
            memcpy(p + 8, &ssrc, 4);
            uint32_t magic = MAGIC, stream = (uint32_t)s;
            memcpy(p + 12, &magic, 4);
            memcpy(p + 16, &stream, 4);
            memcpy(p + 20, &now, 8);
            if (now >= win_start) sent_window++;
            oiov[side][ocount[side]].iov_base = p;
            oiov[side][ocount[side]].iov_len = PKT;
            memset(&omsg[side][ocount[side]].msg_hdr, 0, sizeof(struct msghdr));
            omsg[side][ocount[side]].msg_hdr.msg_name = &dst[s];
            omsg[side][ocount[side]].msg_hdr.msg_namelen = sizeof dst[s];
            omsg[side][ocount[side]].msg_hdr.msg_iov = &oiov[side][ocount[side]];
            omsg[side][ocount[side]].msg_hdr.msg_iovlen = 1;
            g++;
            if (++ocount[side] == BATCH) {
                sendmmsg(fds[side], omsg[side], BATCH, 0);
                ocount[side] = 0;
            }
        }
        for (int side = 0; side < 2; side++) {
            if (ocount[side]) {
                sendmmsg(fds[side], omsg[side], ocount[side], 0);
                ocount[side] = 0;
            }
        }
        drain(fds[0], &r, win_start, win_end);
        drain(fds[1], &r, win_start, win_end);
        int64_t next = t0 + (int64_t)(g * step);
        int64_t wait = next - now_ns();
        if (wait > 200000) {
            struct pollfd pf[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
            struct timespec to = {0, wait > 2000000 ? 2000000 : wait};
            ppoll(pf, 2, &to, NULL);
        }
    }

    /* Added jitter: each packet's delay minus the smallest delay of its stream. */
    int64_t *minimum = malloc(streams * sizeof *minimum);
    for (int s = 0; s < streams; s++) minimum[s] = INT64_MAX;
    for (size_t i = 0; i < ndelays; i++)
        if (delays[i] < minimum[dstream[i]]) minimum[dstream[i]] = delays[i];
    int64_t *added = malloc((ndelays + 1) * sizeof *added);
    for (size_t i = 0; i < ndelays; i++) added[i] = delays[i] - minimum[dstream[i]];
    qsort(delays, ndelays, sizeof *delays, cmp_i64);
    qsort(added, ndelays, sizeof *added, cmp_i64);
#define PCT(a, q) (ndelays ? (double)(a)[(size_t)((ndelays - 1) * (q))] / 1000.0 : -1.0)
    double loss = sent_window ? 1.0 - (double)received_window / (double)sent_window : 1.0;
    printf("{\"streams\": %d, \"sent\": %llu, \"received\": %llu, \"late\": %llu, "
           "\"arrived\": %llu, "
           "\"loss\": %.6f, "
           "\"delay_p50_us\": %.1f, \"delay_p99_us\": %.1f, \"delay_max_us\": %.1f, "
           "\"jitter_p50_us\": %.1f, \"jitter_p99_us\": %.1f, \"jitter_max_us\": %.1f}\n",
           streams, (unsigned long long)sent_window, (unsigned long long)received_window,
           (unsigned long long)late_window, (unsigned long long)arrived_window,
           loss < 0 ? 0.0 : loss, PCT(delays, 0.5), PCT(delays, 0.99), PCT(delays, 1.0),
           PCT(added, 0.5), PCT(added, 0.99), PCT(added, 1.0));
    return 0;
}
