#ifndef STRATA_CRC32C_HW_H
#define STRATA_CRC32C_HW_H
#include <stddef.h>
#include <stdint.h>

/// 1 when the CPU has the SSE4.2 crc32 instruction (x86_64), else 0.
int strata_crc32c_hw_available(void);

/// CRC-32C (Castagnoli) of `len` bytes, continuing from `crc` (0 to start).
/// Only call when strata_crc32c_hw_available() returned 1.
uint32_t strata_crc32c_hw(uint32_t crc, const void *buf, size_t len);

#endif
