#ifndef STRATA_COMPRESSION_H
#define STRATA_COMPRESSION_H
#include <stddef.h>
#include <stdint.h>

/* Kafka's codecs (RecordBatch attribute bits 0-2) over Debian's zlib, snappy, lz4 and zstd.
 * Outputs are malloc'd and must be released with free(). Return 0 on success, or a negative
 * error: -1 unknown codec, -2 corrupt input, -3 output would exceed max_out, -4 out of memory. */
enum { STRATA_CODEC_GZIP = 1, STRATA_CODEC_SNAPPY = 2, STRATA_CODEC_LZ4 = 3, STRATA_CODEC_ZSTD = 4 };

int strata_decompress(int codec, const uint8_t *in, size_t in_len, size_t max_out, uint8_t **out, size_t *out_len);
/* zstd frames decompressed into `out` (room for out_cap bytes), with a context kept per thread:
 * -3 when the output would not fit, -2 when the input is corrupt or truncated. */
/* The decompressed size a zstd frame declares: -1 when it does not say, -2 when it is no frame. */
long long strata_zstd_content_size(const uint8_t *in, size_t in_len);
int strata_zstd_decompress_into(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len);
int strata_compress(int codec, const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len);

#endif
