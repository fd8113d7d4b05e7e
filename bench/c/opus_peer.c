/*
 * C peer for bench/bench_codecs.py: G.711 <-> Opus transcoding at the settings the
 * Python side uses, so the bench can report how close swcodecs gets to plain C.
 *
 * One call, per 20 ms tick: PCMU payload -> linear -> Opus packet (phone to far end),
 * and that Opus packet -> linear -> PCMU payload (far end to phone). Each call owns one
 * encoder and one decoder, as in the engine.
 *
 * usage: opus_peer CODES_FILE CALLS TICKS BITRATE COMPLEXITY FEC LOSS_PCT OUT_FILE
 *   CODES_FILE holds mu-law codes at 8 kHz (a multiple of 160 bytes); call c starts at
 *   frame c of the file and wraps around. OUT_FILE receives every PCMU payload sent
 *   back to the phones (tick-major, then call), so the bench can check it byte for byte.
 * prints: "<microseconds per call-tick> <total opus bytes>"
 */
#include <opus/opus.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define FRAME 160

static int16_t ulaw_dec[256];
static uint8_t ulaw_enc[65536];

/* The G.711 mu-law rules (ITU-T G.191 style: one's complement of negatives, bias 33). */
static uint8_t ulaw_compress(int lin)
{
    int absno = (lin < 0 ? ((~lin) >> 2) : (lin >> 2)) + 33;
    if (absno > 0x1FFF)
        absno = 0x1FFF;
    int segno = 1;
    for (int i = absno >> 6; i != 0; i >>= 1)
        segno++;
    int code = ((8 - segno) << 4) | (0x0F - ((absno >> segno) & 0x0F));
    return (uint8_t)(lin >= 0 ? code | 0x80 : code);
}

static int16_t ulaw_expand(int code)
{
    int sign = code < 0x80 ? -1 : 1;
    int m = ~code;
    int exponent = (m >> 4) & 7;
    int step = 4 << (exponent + 1);
    return (int16_t)(sign * ((0x80 << exponent) + step * (m & 0x0F) + step / 2 - 132));
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc != 9) {
        fprintf(stderr, "usage: %s CODES CALLS TICKS BITRATE COMPLEXITY FEC LOSS OUT\n", argv[0]);
        return 2;
    }
    int calls = atoi(argv[2]), ticks = atoi(argv[3]), bitrate = atoi(argv[4]);
    int complexity = atoi(argv[5]), fec = atoi(argv[6]), loss = atoi(argv[7]);

    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror("open codes");
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    int nframes = (int)(size / FRAME);
    uint8_t *codes = malloc((size_t)nframes * FRAME);
    if (!codes || fread(codes, FRAME, (size_t)nframes, f) != (size_t)nframes) {
        fprintf(stderr, "short read\n");
        return 1;
    }
    fclose(f);

    for (int c = 0; c < 256; c++)
        ulaw_dec[c] = ulaw_expand(c);
    for (int v = -32768; v < 32768; v++)
        ulaw_enc[(uint16_t)v] = ulaw_compress(v);

    OpusEncoder **enc = calloc((size_t)calls, sizeof *enc);
    OpusDecoder **dec = calloc((size_t)calls, sizeof *dec);
    for (int c = 0; c < calls; c++) {
        int err;
        enc[c] = opus_encoder_create(8000, 1, OPUS_APPLICATION_VOIP, &err);
        if (err != OPUS_OK)
            return 1;
        opus_encoder_ctl(enc[c], OPUS_SET_BITRATE(bitrate));
        opus_encoder_ctl(enc[c], OPUS_SET_COMPLEXITY(complexity));
        opus_encoder_ctl(enc[c], OPUS_SET_INBAND_FEC(fec));
        opus_encoder_ctl(enc[c], OPUS_SET_PACKET_LOSS_PERC(loss));
        opus_encoder_ctl(enc[c], OPUS_SET_DTX(0));
        opus_encoder_ctl(enc[c], OPUS_SET_SIGNAL(OPUS_SIGNAL_VOICE));
        dec[c] = opus_decoder_create(8000, 1, &err);
        if (err != OPUS_OK)
            return 1;
    }

    int16_t pcm[FRAME], back[FRAME];
    uint8_t packet[1275];
    uint8_t *out = malloc((size_t)ticks * calls * FRAME);
    if (!out)
        return 1;
    long long total_bytes = 0;
    double t0 = now();
    for (int t = 0; t < ticks; t++) {
        for (int c = 0; c < calls; c++) {
            const uint8_t *in = codes + (size_t)((t + c) % nframes) * FRAME;
            for (int i = 0; i < FRAME; i++)
                pcm[i] = ulaw_dec[in[i]];
            int n = opus_encode(enc[c], pcm, FRAME, packet, sizeof packet);
            if (n < 0)
                return 1;
            total_bytes += n;
            int m = opus_decode(dec[c], packet, n, back, FRAME, 0);
            if (m != FRAME)
                return 1;
            uint8_t *o = out + ((size_t)t * calls + c) * FRAME;
            for (int i = 0; i < FRAME; i++)
                o[i] = ulaw_enc[(uint16_t)back[i]];
        }
    }
    double elapsed = now() - t0;
    printf("%.3f %lld\n", elapsed * 1e6 / ((double)ticks * calls), total_bytes);
    FILE *of = fopen(argv[8], "wb");
    if (!of || fwrite(out, FRAME, (size_t)ticks * calls, of) != (size_t)ticks * calls) {
        perror("write out");
        return 1;
    }
    fclose(of);
    free(out);
    for (int c = 0; c < calls; c++) {
        opus_encoder_destroy(enc[c]);
        opus_decoder_destroy(dec[c]);
    }
    free(codes);
    free(enc);
    free(dec);
    return 0;
}
