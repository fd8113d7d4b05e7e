/* Reference conference mixer for the mixer bench: straightforward C mix-minus.
 *
 * For every room: sum the int16 frames of its participants into an int32 total, then
 * give every participant total - own, clipped to int16. Muted participants (a 0/1 byte
 * per participant) contribute nothing and still hear. Rooms are contiguous runs of
 * participants, as in the Python mixer's layout, so both read the same memory.
 *
 * Usage: mixer_ref IN OUT ITERATIONS
 * IN: int32 P, int32 R, int32 N, int32 room_size[R], uint8 muted[P], int16 pcm[P][N]
 * OUT: int16 heard[P][N] from the last iteration. Prints the seconds per iteration
 * (best of the runs) on stdout.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void mix(int32_t rooms, const int32_t *size, const uint8_t *muted, int32_t n,
                const int16_t *pcm, int16_t *out, int32_t *total) {
    const int16_t *in = pcm;
    const uint8_t *mute = muted;
    int16_t *o = out;
    for (int32_t r = 0; r < rooms; r++) {
        int32_t k = size[r];
        memset(total, 0, n * sizeof *total);
        for (int32_t p = 0; p < k; p++) {
            if (mute[p]) continue;
            const int16_t *x = in + (size_t)p * n;
            for (int32_t t = 0; t < n; t++) total[t] += x[t];
        }
        for (int32_t p = 0; p < k; p++) {
            const int16_t *x = in + (size_t)p * n;
            int16_t *y = o + (size_t)p * n;
            int m = mute[p];
            for (int32_t t = 0; t < n; t++) {
                int32_t v = total[t] - (m ? 0 : x[t]);
                y[t] = v > 32767 ? 32767 : v < -32768 ? -32768 : (int16_t)v;
            }
        }
        in += (size_t)k * n;
        o += (size_t)k * n;
        mute += k;
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s IN OUT ITERATIONS\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    int32_t hdr[3];
    if (fread(hdr, sizeof hdr[0], 3, f) != 3) return 2;
    int32_t p = hdr[0], rooms = hdr[1], n = hdr[2];
    int32_t *size = malloc(rooms * sizeof *size);
    uint8_t *muted = malloc(p);
    int16_t *pcm = malloc((size_t)p * n * sizeof *pcm);
    int16_t *out = malloc((size_t)p * n * sizeof *out);
    int32_t *total = malloc(n * sizeof *total);
    if (fread(size, sizeof *size, rooms, f) != (size_t)rooms || fread(muted, 1, p, f) != (size_t)p ||
        fread(pcm, sizeof *pcm, (size_t)p * n, f) != (size_t)p * n) {
        fprintf(stderr, "short input\n");
        return 2;
    }
    fclose(f);
    int iterations = atoi(argv[3]);
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        for (int i = 0; i < iterations; i++) mix(rooms, size, muted, n, pcm, out, total);
        double dt = (now() - t0) / iterations;
        if (dt < best) best = dt;
    }
    FILE *g = fopen(argv[2], "wb");
    if (!g) { perror(argv[2]); return 2; }
    fwrite(out, sizeof *out, (size_t)p * n, g);
    fclose(g);
    printf("%.9f\n", best);
    return 0;
}
