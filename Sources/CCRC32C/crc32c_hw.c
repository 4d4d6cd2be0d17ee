// SSE4.2 CRC-32C. The target attribute keeps -msse4.2 off the command line so the
// package needs no unsafeFlags; the caller dispatches on strata_crc32c_hw_available().
#include "crc32c_hw.h"
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>

int strata_crc32c_hw_available(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c & bit_SSE4_2) ? 1 : 0;
}

// One chain of crc32q is bound by the instruction's latency (3 cycles per 8 bytes, ~11 GB/s
// here); three independent chains over three lanes of a stripe run at its throughput, and the
// lanes' CRCs are combined by shifting the first two over the zero bytes that follow them. A
// cold query checks every block it reads (a tenth of a GROUP BY's time went to this).
#include <pthread.h>

enum { LANE = 4096 };  // bytes per lane; a stripe is 3 lanes

// The CRC register as a vector over GF(2): `op` is a 32x32 operator, one column per bit.
static uint32_t gf2_times(const uint32_t *op, uint32_t v) {
    uint32_t sum = 0;
    for (int i = 0; v; i++, v >>= 1)
        if (v & 1) sum ^= op[i];
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *op) {
    for (int i = 0; i < 32; i++) square[i] = gf2_times(op, op[i]);
}

// shift[k][b][v]: the register v << 8b advanced over (k + 1) * LANE zero bytes.
static uint32_t shift[2][4][256];
static pthread_once_t shift_once = PTHREAD_ONCE_INIT;

static void shift_tables(void) {
    uint32_t a[32], b[32];
    a[0] = 0x82F63B78u;  // one zero bit: the reflected polynomial, then a plain shift
    for (int i = 1; i < 32; i++) a[i] = 1u << (i - 1);
    gf2_square(b, a);  // 2 bits
    gf2_square(a, b);  // 4 bits
    gf2_square(b, a);  // 8 bits: one zero byte
    uint32_t *cur = b, *next = a;
    for (int bytes = 1, k = 0; k < 2;) {
        if (bytes == LANE * (k + 1)) {
            for (int byte = 0; byte < 4; byte++)
                for (uint32_t v = 0; v < 256; v++) shift[k][byte][v] = gf2_times(cur, v << (8 * byte));
            k++;
            continue;
        }
        gf2_square(next, cur);  // LANE and 2 * LANE are powers of two
        uint32_t *t = cur; cur = next; next = t;
        bytes *= 2;
    }
}

static inline uint32_t shifted(int k, uint32_t c) {
    return shift[k][0][c & 0xFF] ^ shift[k][1][(c >> 8) & 0xFF] ^ shift[k][2][(c >> 16) & 0xFF] ^ shift[k][3][c >> 24];
}

__attribute__((target("sse4.2")))
uint32_t strata_crc32c_hw(uint32_t crc, const void *buf, size_t len) {
    const unsigned char *p = (const unsigned char *)buf;
    uint64_t c = (uint32_t)~crc;
    if (len >= 3 * LANE) {
        pthread_once(&shift_once, shift_tables);
        while (len >= 3 * LANE) {
            uint64_t c0 = c, c1 = 0, c2 = 0;
            for (size_t i = 0; i < LANE; i += 8) {
                uint64_t v0, v1, v2;
                memcpy(&v0, p + i, 8);
                memcpy(&v1, p + LANE + i, 8);
                memcpy(&v2, p + 2 * LANE + i, 8);
                c0 = _mm_crc32_u64(c0, v0);
                c1 = _mm_crc32_u64(c1, v1);
                c2 = _mm_crc32_u64(c2, v2);
            }
            c = shifted(1, (uint32_t)c0) ^ shifted(0, (uint32_t)c1) ^ (uint32_t)c2;
            p += 3 * LANE;
            len -= 3 * LANE;
        }
    }
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        len -= 8;
    }
    while (len--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

#else
int strata_crc32c_hw_available(void) { return 0; }
uint32_t strata_crc32c_hw(uint32_t crc, const void *buf, size_t len) {
    (void)buf; (void)len; return crc;
}
#endif
