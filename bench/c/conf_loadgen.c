/* Load generator for the conference bench: N participants talking into the switch's
 * rooms, and what each of them gets back.
 *
 * One socket plays every phone: participant i sends a 20 ms G.711 packet (172 bytes,
 * PT 0) to the switch's port P_i every INTERVAL, and the switch sends participant i its
 * room's mix from P_i back to this socket; the source port tells whose mix a packet is.
 * Sends are paced evenly (packet g, of participant g % N, is due at t0 + g * INTERVAL /
 * N) and batched with sendmmsg; receives use recvmmsg with kernel timestamps
 * (SO_TIMESTAMPNS), so the generator's own scheduling stays out of the measurement.
 *
 * What it measures, in the window after WARMUP: how many mixed packets came back
 * against how many ticks' worth were due (N * window / INTERVAL), and the
 * inter-departure jitter of each participant's stream: for consecutive packets of a
 * participant, |gap - INTERVAL|. On loopback a packet is received during the switch's
 * send call, so the receive timestamps are departure times.
 *
 * Usage: conf_loadgen PORTS_FILE N SECONDS WARMUP INTERVAL_US LOCAL_PORT HOST
 * PORTS_FILE: one switch port per line (the first N are used).
 * Output (stdout, one line of JSON): participants, sent, received, expected, loss,
 * jitter_p50_us, jitter_p99_us, jitter_max_us.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
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

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

struct rx {
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in from[BATCH];
    unsigned char buf[BATCH][2048];
    unsigned char ctl[BATCH][256];
};

static int *index_of_port;  /* switch port -> participant, -1 if none */
static int64_t *last_at;    /* last arrival per participant, ns */
static int64_t *gaps;       /* |gap - interval| of each measured packet, ns */
static size_t ngaps, cap;
static uint64_t received_window;

static void drain(int fd, struct rx *r, int64_t win_start, int64_t win_end, int64_t interval) {
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            r->iov[i].iov_base = r->buf[i];
            r->iov[i].iov_len = sizeof r->buf[i];
            memset(&r->msgs[i].msg_hdr, 0, sizeof r->msgs[i].msg_hdr);
            r->msgs[i].msg_hdr.msg_name = &r->from[i];
            r->msgs[i].msg_hdr.msg_namelen = sizeof r->from[i];
            r->msgs[i].msg_hdr.msg_iov = &r->iov[i];
            r->msgs[i].msg_hdr.msg_iovlen = 1;
            r->msgs[i].msg_hdr.msg_control = r->ctl[i];
            r->msgs[i].msg_hdr.msg_controllen = sizeof r->ctl[i];
        }
        int n = recvmmsg(fd, r->msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) return;
        int64_t fallback = now_ns();
        for (int i = 0; i < n; i++) {
            if (r->msgs[i].msg_len < 12) continue;
            int p = index_of_port[ntohs(r->from[i].sin_port)];
            if (p < 0) continue;
            int64_t at = fallback;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&r->msgs[i].msg_hdr); c;
                 c = CMSG_NXTHDR(&r->msgs[i].msg_hdr, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(c), sizeof ts);
                    at = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
                }
            }
            if (at >= win_start && at < win_end) {
                received_window++;
                if (last_at[p] >= win_start && ngaps < cap) {
                    int64_t d = at - last_at[p] - interval;
                    gaps[ngaps++] = d < 0 ? -d : d;
                }
            }
            last_at[p] = at;
        }
        if (n < BATCH) return;
    }
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s PORTS N SECONDS WARMUP INTERVAL_US LOCAL_PORT HOST\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[2]);
    double seconds = atof(argv[3]), warmup = atof(argv[4]);
    int64_t interval = (int64_t)atoll(argv[5]) * 1000;
    const char *host = argv[7];
    if (n <= 0) return 2;

    FILE *f = fopen(argv[1], "r");
    if (!f) { perror(argv[1]); return 2; }
    struct sockaddr_in *dst = calloc(n, sizeof *dst);
    index_of_port = malloc(65536 * sizeof *index_of_port);
    for (int i = 0; i < 65536; i++) index_of_port[i] = -1;
    for (int i = 0; i < n; i++) {
        int port;
        if (fscanf(f, "%d", &port) != 1) {
            fprintf(stderr, "ports file has fewer than %d ports\n", n);
            return 2;
        }
        dst[i].sin_family = AF_INET;
        dst[i].sin_port = htons(port);
        inet_pton(AF_INET, host, &dst[i].sin_addr);
        index_of_port[port] = i;
    }
    fclose(f);

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int on = 1, size = 64 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[6]))};
    inet_pton(AF_INET, host, &local.sin_addr);
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) { perror("bind"); return 2; }

    last_at = calloc(n, sizeof *last_at);
    cap = (size_t)((seconds + 1) * n * (1e9 / (double)interval)) + 1024;
    gaps = malloc(cap * sizeof *gaps);
    static struct rx r;

    /* A quiet mu-law triangle wave: something for the mixer to add up. */
    unsigned char tone[160];
    for (int t = 0; t < 160; t++) {
        int x = (t * 400 * 16 / 8000) % 16;
        tone[t] = (unsigned char)(0xE0 + 2 * (x < 8 ? x : 15 - x));
    }
    uint16_t *seq = calloc(n, sizeof *seq);
    static unsigned char out[BATCH][PKT];
    struct mmsghdr omsg[BATCH];
    struct iovec oiov[BATCH];
    int ocount = 0;

    int64_t t0 = now_ns() + 20000000LL;
    int64_t win_start = t0 + (int64_t)(warmup * 1e9);
    int64_t win_end = win_start + (int64_t)(seconds * 1e9);
    uint64_t g = 0, sent = 0;
    double step = (double)interval / n;

    for (;;) {
        int64_t now = now_ns();
        if (now >= win_end + 100000000LL) break;
        while (now < win_end) {
            int64_t due = t0 + (int64_t)(g * step);
            if (due > now) break;
            int s = (int)(g % n);
            unsigned char *p = out[ocount];
            uint32_t ssrc = htonl(0x10000u + s), ts = htonl((uint32_t)(g / n) * 160u);
            uint16_t sq = htons(seq[s]++);
            p[0] = 0x80;
            p[1] = 0;
            memcpy(p + 2, &sq, 2);
            memcpy(p + 4, &ts, 4);
            memcpy(p + 8, &ssrc, 4);
            memcpy(p + 12, tone, 160);
            oiov[ocount].iov_base = p;
            oiov[ocount].iov_len = PKT;
            memset(&omsg[ocount].msg_hdr, 0, sizeof(struct msghdr));
            omsg[ocount].msg_hdr.msg_name = &dst[s];
            omsg[ocount].msg_hdr.msg_namelen = sizeof dst[s];
            omsg[ocount].msg_hdr.msg_iov = &oiov[ocount];
            omsg[ocount].msg_hdr.msg_iovlen = 1;
            g++;
            sent++;
            if (++ocount == BATCH) {
                sendmmsg(fd, omsg, BATCH, 0);
                ocount = 0;
            }
        }
        if (ocount) {
            sendmmsg(fd, omsg, ocount, 0);
            ocount = 0;
        }
        drain(fd, &r, win_start, win_end, interval);
        int64_t next = t0 + (int64_t)(g * step);
        int64_t wait = next - now_ns();
        if (wait > 200000) {
            struct pollfd pf = {fd, POLLIN, 0};
            struct timespec to = {0, wait > 2000000 ? 2000000 : wait};
            ppoll(&pf, 1, &to, NULL);
        }
    }

    qsort(gaps, ngaps, sizeof *gaps, cmp_i64);
#define PCT(q) (ngaps ? (double)gaps[(size_t)((ngaps - 1) * (q))] / 1000.0 : -1.0)
    double expected = (double)n * seconds * 1e9 / (double)interval;
    double loss = 1.0 - (double)received_window / expected;
    printf("{\"participants\": %d, \"sent\": %llu, \"received\": %llu, \"expected\": %.0f, "
           "\"loss\": %.6f, \"jitter_p50_us\": %.1f, \"jitter_p99_us\": %.1f, "
           "\"jitter_max_us\": %.1f}\n",
           n, (unsigned long long)sent, (unsigned long long)received_window, expected,
           loss < 0 ? 0.0 : loss, PCT(0.5), PCT(0.99), PCT(1.0));
    return 0;
}
