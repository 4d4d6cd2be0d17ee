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

// One stream of crc32q runs at ~11 GB/s here, several times the disk and well above the
// append target, so the 3-stream interleave (16 GB/s) is not worth its combine step yet.
__attribute__((target("sse4.2")))
uint32_t strata_crc32c_hw(uint32_t crc, const void *buf, size_t len) {
    const unsigned char *p = (const unsigned char *)buf;
    uint64_t c = (uint32_t)~crc;
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
