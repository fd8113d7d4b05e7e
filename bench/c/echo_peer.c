/* The C peer of the media bench: an RTP relay doing the engine's relay work in C.
 *
 * Same shape as the Python engine's relay path, so the bench compares languages and
 * not designs: one RTP socket per leg (plus its RTCP socket, registered but idle), two
 * legs per call, one level-triggered epoll set; each ready socket is drained with
 * recvmmsg, each packet from the latched address (symmetric RTP: the first source
 * seen, or the configured phone address until then) gets its SSRC replaced and its
 * sequence number and timestamp offset, and the batch leaves the other leg's socket
 * with one sendmmsg toward that leg's phone.
 *
 * Usage: echo_peer HOST BASE_PORT CALLS PORTS_OUT PHONE_A_PORT PHONE_B_PORT
 * Binds each leg's RTP on the next free even port from BASE up (RTCP on port + 1),
 * writes "A_port B_port" per call to PORTS_OUT, then relays until SIGTERM/SIGINT and prints
 * its packet counts.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 32

struct leg {
    int fd, rtcp_fd;
    struct leg *partner;
    struct sockaddr_in dest;   /* where this leg's phone is */
    int latched;
    uint32_t ssrc;             /* our SSRC toward this leg's phone */
    uint16_t seq_off;          /* applied to packets coming *from* this leg's phone */
    uint32_t ts_off;
};

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static int try_bind(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0) { perror("socket"); exit(2); }
    int size = 256 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The next even port at or above *next whose RTP and RTCP ports both bind (another
 * program may hold some ports of the range, as it may for the engine's pool). */
static int bind_pair(const char *host, int *next, int *rtp_fd, int *rtcp_fd) {
    for (int port = *next + (*next & 1); port < 65534; port += 2) {
        int fd = try_bind(host, port);
        if (fd < 0) continue;
        int fd2 = try_bind(host, port + 1);
        if (fd2 < 0) { close(fd); continue; }
        *rtp_fd = fd;
        *rtcp_fd = fd2;
        *next = port + 2;
        return port;
    }
    fprintf(stderr, "ran out of ports\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST BASE_PORT CALLS PORTS_OUT PHONE_A_PORT PHONE_B_PORT\n",
                argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int base = atoi(argv[2]), calls = atoi(argv[3]);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max = 65536; /* allowed when run as root; harmless otherwise */
    setrlimit(RLIMIT_NOFILE, &rl);

    int ep = epoll_create1(0);
    int nlegs = 2 * calls;
    struct leg *legs = calloc(nlegs, sizeof *legs);
    /* Written under a temporary name and renamed once every socket is bound, so the
     * bench can take the file's existence as "ready". */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[4]);
    FILE *out = fopen(tmp, "w");
    int next = base;
    for (int i = 0; i < calls; i++) {
        int ports[2];
        for (int d = 0; d < 2; d++) {
            struct leg *l = &legs[2 * i + d];
            ports[d] = bind_pair(host, &next, &l->fd, &l->rtcp_fd);
            l->partner = &legs[2 * i + (1 - d)];
            l->dest.sin_family = AF_INET;
            l->dest.sin_port = htons(atoi(d ? argv[6] : argv[5]));
            inet_pton(AF_INET, host, &l->dest.sin_addr);
            l->ssrc = 0x5000000u + 2 * i + d;
            l->seq_off = (uint16_t)(7 * i + d);
            l->ts_off = 1000u * i + d;
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
            epoll_ctl(ep, EPOLL_CTL_ADD, l->fd, &ev);
            struct epoll_event ev2 = {.events = EPOLLIN, .data.ptr = NULL};
            epoll_ctl(ep, EPOLL_CTL_ADD, l->rtcp_fd, &ev2);
        }
        fprintf(out, "%d %d\n", ports[0], ports[1]);
    }
    fclose(out);
    rename(tmp, argv[4]);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    static unsigned char buf[BATCH][2048];
    struct mmsghdr msgs[BATCH], outm[BATCH];
    struct iovec iov[BATCH], oiov[BATCH];
    struct sockaddr_in from[BATCH];
    struct epoll_event events[1024];
    unsigned long long rx = 0, tx = 0, dropped = 0;

    while (!stop) {
        int n = epoll_wait(ep, events, 1024, 200);
        for (int e = 0; e < n; e++) {
            struct leg *l = events[e].data.ptr;
            if (!l) continue;
            for (int i = 0; i < BATCH; i++) {
                iov[i].iov_base = buf[i];
                iov[i].iov_len = sizeof buf[i];
                memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
                msgs[i].msg_hdr.msg_name = &from[i];
                msgs[i].msg_hdr.msg_namelen = sizeof from[i];
                msgs[i].msg_hdr.msg_iov = &iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            int got = recvmmsg(l->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
            if (got <= 0) continue;
            rx += got;
            struct leg *p = l->partner;
            int k = 0;
            for (int i = 0; i < got; i++) {
                unsigned char *b = buf[i];
                unsigned len = msgs[i].msg_len;
                if (len < 12 || (b[0] & 0xC0) != 0x80) { dropped++; continue; }
                if (!l->latched) {
                    l->dest = from[i];
                    l->latched = 1;
                } else if (from[i].sin_addr.s_addr != l->dest.sin_addr.s_addr ||
                           from[i].sin_port != l->dest.sin_port) {
                    dropped++;
                    continue;
                }
                uint16_t seq;
                uint32_t ts, ssrc = htonl(p->ssrc);
                memcpy(&seq, b + 2, 2);
                memcpy(&ts, b + 4, 4);
                seq = htons((uint16_t)(ntohs(seq) + l->seq_off));
                ts = htonl(ntohl(ts) + l->ts_off);
                memcpy(b + 2, &seq, 2);
                memcpy(b + 4, &ts, 4);
                memcpy(b + 8, &ssrc, 4);
                oiov[k].iov_base = b;
                oiov[k].iov_len = len;
                memset(&outm[k].msg_hdr, 0, sizeof outm[k].msg_hdr);
                outm[k].msg_hdr.msg_name = &p->dest;
                outm[k].msg_hdr.msg_namelen = sizeof p->dest;
                outm[k].msg_hdr.msg_iov = &oiov[k];
                outm[k].msg_hdr.msg_iovlen = 1;
                k++;
            }
            if (k) {
                int s = sendmmsg(p->fd, outm, k, 0);
                if (s > 0) tx += s;
            }
        }
    }
    printf("{\"rx\": %llu, \"tx\": %llu, \"dropped\": %llu}\n", rx, tx, dropped);
    return 0;
}
