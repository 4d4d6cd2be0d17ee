// Record decoding for scans (StrataQuery's reader thread): the Kafka v2 record layout walked with
// plain pointer arithmetic. The same checks as RecordBatch.parseRecords (every length inside the
// record, the record exactly as long as it says), at several times its speed, which made the
// reader thread the bottleneck of a full scan.
#include "strata_scan.h"

/* Zig-zag varint of at most `max_bytes` bytes; 0 on success. */
static inline int read_varlong(const uint8_t *p, size_t end, size_t *i, int64_t *out, int max_bytes) {
    uint64_t v = 0;
    int shift = 0;
    for (int k = 0; k < max_bytes; k++) {
        if (*i >= end) return -1;
        uint8_t b = p[(*i)++];
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            return 0;
        }
        shift += 7;
    }
    return -1;
}

static inline int read_varint(const uint8_t *p, size_t end, size_t *i, int32_t *out) {
    int64_t v;
    if (read_varlong(p, end, i, &v, 5) || v < INT32_MIN || v > INT32_MAX) return -1;
    *out = (int32_t)v;
    return 0;
}

/* A nullable byte field: its length (-1 = null) and where it starts. */
static inline int read_bytes(const uint8_t *p, size_t end, size_t *i, int32_t *length, uint32_t *offset) {
    if (read_varint(p, end, i, length)) return -1;
    if (*length < -1) return -1;
    *offset = (uint32_t)*i;
    if (*length > 0) {
        if ((size_t)*length > end - *i) return -1;
        *i += (size_t)*length;
    }
    return 0;
}

/* How far ahead of the record being decoded its bytes are requested from memory. */
enum { PREFETCH_AHEAD = 4096 };

int strata_decode_records(const uint8_t *p, size_t n, int32_t count, strata_record_view *out) {
    if (n > UINT32_MAX || count < 0) return -1;
    size_t i = 0;
    /* The decoder reads a record's few header bytes and steps over its key and value, one touch
       every few hundred bytes, which the hardware prefetcher does not follow: each record cost a
       miss to memory (the reader thread's whole time on mapped segments). Every line up to
       PREFETCH_AHEAD bytes past the current record is requested instead, which also leaves the
       values in the shared cache for the extractor threads that read them next. */
    size_t prefetched = 0;
    for (int32_t r = 0; r < count; r++) {
        int32_t length;
        if (read_varint(p, n, &i, &length) || length < 0 || (size_t)length > n - i) return -1;
        size_t end = i + (size_t)length;
        size_t ahead = n - end > PREFETCH_AHEAD ? end + PREFETCH_AHEAD : n;
        for (; prefetched < ahead; prefetched += 64) __builtin_prefetch(p + prefetched, 0, 3);
        strata_record_view *v = &out[r];
        if (i >= end) return -1;
        i++; /* attributes */
        if (read_varlong(p, end, &i, &v->timestamp_delta, 10)) return -1;
        if (read_varint(p, end, &i, &v->offset_delta)) return -1;
        if (read_bytes(p, end, &i, &v->key_length, &v->key_offset)) return -1;
        if (read_bytes(p, end, &i, &v->value_length, &v->value_offset)) return -1;
        if (read_varint(p, end, &i, &v->header_count) || v->header_count < 0) return -1;
        v->headers_offset = (uint32_t)i;
        for (int32_t h = 0; h < v->header_count; h++) {
            int32_t hl;
            uint32_t ho;
            if (read_bytes(p, end, &i, &hl, &ho) || hl < 0) return -1; /* header keys are never null */
            if (read_bytes(p, end, &i, &hl, &ho)) return -1;
        }
        if (i != end) return -1;
    }
    return i == n ? 0 : -1;
}
