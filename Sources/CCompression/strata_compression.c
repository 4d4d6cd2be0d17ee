// Decompression of Kafka record batches: gzip (zlib, gzip wrapper), snappy (raw, or Kafka's
// Java "xerial" framing), lz4 (frame format, KIP-57) and zstd (frames, possibly without a content
// size). Every output is bounded by max_out so a small hostile batch cannot expand without limit.
#include "strata_compression.h"
#include <lz4frame.h>
#include <pthread.h>
#include <snappy-c.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

typedef struct { uint8_t *data; size_t len, cap, max; } buf_t;

static int buf_reserve(buf_t *b, size_t extra) {
    if (b->len + extra > b->max) return -3;
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    if (cap > b->max) cap = b->max;
    uint8_t *p = realloc(b->data, cap);
    if (!p) return -4;
    b->data = p;
    b->cap = cap;
    return 0;
}

static int gunzip(const uint8_t *in, size_t n, buf_t *b) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, 16 + MAX_WBITS) != Z_OK) return -4;
    s.next_in = (Bytef *)in;
    s.avail_in = (uInt)n;
    int rc = Z_OK;
    while (rc != Z_STREAM_END) {
        int r = buf_reserve(b, 64 * 1024);
        if (r) { inflateEnd(&s); return r; }
        s.next_out = b->data + b->len;
        s.avail_out = (uInt)(b->cap - b->len);
        rc = inflate(&s, Z_NO_FLUSH);
        b->len = b->cap - s.avail_out;
        if (rc == Z_BUF_ERROR && s.avail_in == 0) { inflateEnd(&s); return -2; }
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) { inflateEnd(&s); return -2; }
    }
    inflateEnd(&s);
    return 0;
}

static int unsnappy_block(const uint8_t *in, size_t n, buf_t *b) {
    size_t len;
    if (snappy_uncompressed_length((const char *)in, n, &len) != SNAPPY_OK) return -2;
    int r = buf_reserve(b, len);
    if (r) return r;
    size_t out = len;
    if (snappy_uncompress((const char *)in, n, (char *)b->data + b->len, &out) != SNAPPY_OK) return -2;
    b->len += out;
    return 0;
}

static const uint8_t xerial_magic[8] = {0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0};

static int unsnappy(const uint8_t *in, size_t n, buf_t *b) {
    if (n >= 16 && memcmp(in, xerial_magic, 8) == 0) {
        size_t pos = 16;  // magic, version, compatible version
        while (pos < n) {
            if (n - pos < 4) return -2;
            size_t len = ((size_t)in[pos] << 24) | ((size_t)in[pos + 1] << 16) | ((size_t)in[pos + 2] << 8) | in[pos + 3];
            pos += 4;
            if (len > n - pos) return -2;
            int r = unsnappy_block(in + pos, len, b);
            if (r) return r;
            pos += len;
        }
        return 0;
    }
    return unsnappy_block(in, n, b);
}

static int unlz4(const uint8_t *in, size_t n, buf_t *b) {
    LZ4F_dctx *ctx;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&ctx, LZ4F_VERSION))) return -4;
    size_t pos = 0;
    size_t hint = 1;
    int result = 0;
    while (pos < n || hint != 0) {
        int r = buf_reserve(b, 64 * 1024);
        if (r) { result = r; break; }
        size_t dst = b->cap - b->len, src = n - pos;
        hint = LZ4F_decompress(ctx, b->data + b->len, &dst, in + pos, &src, NULL);
        if (LZ4F_isError(hint)) { result = -2; break; }
        b->len += dst;
        pos += src;
        if (src == 0 && dst == 0) { result = hint == 0 ? 0 : -2; break; }  // no progress: truncated frame
    }
    LZ4F_freeDecompressionContext(ctx);
    return result;
}

// One decompression context per thread, kept: creating one costs as much as decompressing a
// small stream (a cold block has a dozen), and a thread decompresses one stream at a time. Freed
// when the thread exits.
static pthread_key_t dctx_key;
static int dctx_key_ok;
static pthread_once_t dctx_once = PTHREAD_ONCE_INIT;
static void dctx_free(void *p) { ZSTD_freeDCtx((ZSTD_DCtx *)p); }
static void dctx_key_create(void) { dctx_key_ok = pthread_key_create(&dctx_key, dctx_free) == 0; }

static ZSTD_DCtx *thread_dctx(void) {
    pthread_once(&dctx_once, dctx_key_create);
    if (!dctx_key_ok) return NULL;
    ZSTD_DCtx *d = pthread_getspecific(dctx_key);
    if (!d) {
        d = ZSTD_createDCtx();
        if (!d) return NULL;
        if (pthread_setspecific(dctx_key, d) != 0) { ZSTD_freeDCtx(d); return NULL; }
    } else {
        // A previous stream may have stopped mid-frame (corrupt input): start clean.
        ZSTD_DCtx_reset(d, ZSTD_reset_session_and_parameters);
    }
    return d;
}

long long strata_zstd_content_size(const uint8_t *in, size_t in_len) {
    unsigned long long n = ZSTD_getFrameContentSize(in, in_len);
    if (n == ZSTD_CONTENTSIZE_ERROR) return -2;
    if (n == ZSTD_CONTENTSIZE_UNKNOWN || n > (unsigned long long)LLONG_MAX) return -1;
    return (long long)n;
}

int strata_zstd_decompress_into(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len) {
    ZSTD_DCtx *d = thread_dctx();
    if (!d) return -4;
    size_t rc = ZSTD_decompressDCtx(d, out, out_cap, in, in_len);
    if (ZSTD_isError(rc)) return ZSTD_getErrorCode(rc) == ZSTD_error_dstSize_tooSmall ? -3 : -2;
    *out_len = rc;
    return 0;
}

static int unzstd(const uint8_t *in, size_t n, buf_t *b) {
    ZSTD_DStream *ds = thread_dctx();
    if (!ds) return -4;
    ZSTD_inBuffer input = {in, n, 0};
    int result = 0;
    size_t rc = 1;
    for (;;) {
        int r = buf_reserve(b, 64 * 1024);
        if (r) { result = r; break; }
        ZSTD_outBuffer output = {b->data + b->len, b->cap - b->len, 0};
        rc = ZSTD_decompressStream(ds, &output, &input);
        if (ZSTD_isError(rc)) { result = -2; break; }
        b->len += output.pos;
        if (input.pos == input.size && output.pos < output.size) break;  // all input used, output not full
    }
    if (result == 0 && rc != 0) result = -2;  // the last frame is incomplete
    return result;
}

int strata_decompress(int codec, const uint8_t *in, size_t in_len, size_t max_out, uint8_t **out, size_t *out_len) {
    buf_t b = {NULL, 0, 0, max_out};
    int r;
    switch (codec) {
    case STRATA_CODEC_GZIP: r = gunzip(in, in_len, &b); break;
    case STRATA_CODEC_SNAPPY: r = unsnappy(in, in_len, &b); break;
    case STRATA_CODEC_LZ4: r = unlz4(in, in_len, &b); break;
    case STRATA_CODEC_ZSTD: r = unzstd(in, in_len, &b); break;
    default: r = -1;
    }
    if (r) { free(b.data); return r; }
    *out = b.data ? b.data : malloc(1);
    *out_len = b.len;
    return 0;
}

int strata_compress(int codec, const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len) {
    size_t cap;
    uint8_t *p;
    switch (codec) {
    case STRATA_CODEC_GZIP: {
        z_stream s;
        memset(&s, 0, sizeof s);
        if (deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) return -4;
        cap = deflateBound(&s, in_len) + 32;
        p = malloc(cap);
        if (!p) { deflateEnd(&s); return -4; }
        s.next_in = (Bytef *)in; s.avail_in = (uInt)in_len; s.next_out = p; s.avail_out = (uInt)cap;
        int rc = deflate(&s, Z_FINISH);
        deflateEnd(&s);
        if (rc != Z_STREAM_END) { free(p); return -2; }
        *out = p; *out_len = cap - s.avail_out;
        return 0;
    }
    case STRATA_CODEC_SNAPPY:
        cap = snappy_max_compressed_length(in_len);
        p = malloc(cap);
        if (!p) return -4;
        if (snappy_compress((const char *)in, in_len, (char *)p, &cap) != SNAPPY_OK) { free(p); return -2; }
        *out = p; *out_len = cap;
        return 0;
    case STRATA_CODEC_LZ4:
        cap = LZ4F_compressFrameBound(in_len, NULL);
        p = malloc(cap);
        if (!p) return -4;
        cap = LZ4F_compressFrame(p, cap, in, in_len, NULL);
        if (LZ4F_isError(cap)) { free(p); return -2; }
        *out = p; *out_len = cap;
        return 0;
    case STRATA_CODEC_ZSTD:
        cap = ZSTD_compressBound(in_len);
        p = malloc(cap);
        if (!p) return -4;
        cap = ZSTD_compress(p, cap, in, in_len, 3);
        if (ZSTD_isError(cap)) { free(p); return -2; }
        *out = p; *out_len = cap;
        return 0;
    default:
        return -1;
    }
}
