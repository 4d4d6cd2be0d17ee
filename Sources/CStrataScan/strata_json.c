// The byte scanner behind JSON members as SQL columns (StrataQuery/JSONColumns): finds a few
// top-level members of a JSON object without building anything. SSE2 (baseline x86-64) finds
// the end of each string 16 bytes at a time; everything unusual is left to SQLite's json_extract
// by answering FALLBACK, so results always equal SQLite's.
#include "strata_scan.h"
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static inline int is_space(uint8_t c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

static inline size_t skip_space(const uint8_t *p, size_t i, size_t n) {
    while (i < n && is_space(p[i])) i++;
    return i;
}

/* p[i] is an opening quote. Returns the index after the closing quote, or 0 when the string
   is unterminated or holds a raw control character; *escaped is set when it has a backslash. */
static inline size_t skip_string(const uint8_t *p, size_t i, size_t n, int *escaped) {
    i++;
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), control = _mm_set1_epi8(0x1F);
#endif
    for (;;) {
#if defined(__SSE2__)
        while (i + 16 <= n) {
            __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
            __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                       _mm_cmpeq_epi8(_mm_max_epu8(v, control), control));
            int mask = _mm_movemask_epi8(hit);
            if (mask) { i += (size_t)__builtin_ctz((unsigned)mask); break; }
            i += 16;
        }
#endif
        if (i >= n) return 0;
        uint8_t c = p[i];
        if (c == '"') return i + 1;
        if (c == '\\') {
            *escaped = 1;
            if (i + 1 >= n) return 0;
            i += 2;
            continue;
        }
        if (c < 0x20) return 0;
        i++;
    }
}

/* The index after the value at p[i], or 0 when the structure is broken. */
static size_t skip_value(const uint8_t *p, size_t i, size_t n) {
    uint8_t c = p[i];
    if (c == '"') { int e = 0; return skip_string(p, i, n, &e); }
    if (c == '{' || c == '[') {
        uint64_t kinds = 0; /* bit stack, 1 = object */
        int depth = 0;
        while (i < n) {
            uint8_t d = p[i];
            if (d == '"') {
                int e = 0;
                size_t end = skip_string(p, i, n, &e);
                if (!end) return 0;
                i = end;
                continue;
            }
            if (d == '{' || d == '[') {
                if (depth >= 64) return 0;
                kinds = (kinds << 1) | (d == '{');
                depth++;
            } else if (d == '}' || d == ']') {
                if (depth == 0 || (int)(kinds & 1) != (d == '}')) return 0;
                kinds >>= 1;
                if (--depth == 0) return i + 1;
            }
            i++;
        }
        return 0;
    }
    size_t start = i;
    while (i < n) {
        uint8_t d = p[i];
        if (d == ',' || d == '}' || d == ']' || is_space(d)) break;
        i++;
    }
    return i > start ? i : 0;
}

/* SQLite's ->> conversion of the scalar p[start..<end]; 0 when SQLite must decide. */
static int scalar(const uint8_t *p, size_t start, size_t end, strata_json_field *f) {
    uint8_t c = p[start];
    if (c == '"') {
        if (memchr(p + start + 1, '\\', end - start - 2)) return 0;
        f->kind = STRATA_JSON_TEXT;
        f->start = (int32_t)(start + 1);
        f->count = (int32_t)(end - start - 2);
        return 1;
    }
    size_t len = end - start;
    if (c == 't') { if (len == 4 && !memcmp(p + start, "true", 4)) { f->kind = STRATA_JSON_INTEGER; f->integer = 1; return 1; } return 0; }
    if (c == 'f') { if (len == 5 && !memcmp(p + start, "false", 5)) { f->kind = STRATA_JSON_INTEGER; f->integer = 0; return 1; } return 0; }
    if (c == 'n') { if (len == 4 && !memcmp(p + start, "null", 4)) { f->kind = STRATA_JSON_NULL; return 1; } return 0; }
    if (c != '-' && (c < '0' || c > '9')) return 0;
    /* RFC 8259 number grammar. */
    size_t i = start;
    int negative = p[i] == '-';
    if (negative) i++;
    if (i >= end) return 0;
    size_t int_start = i;
    if (p[i] == '0') i++;
    else while (i < end && p[i] >= '0' && p[i] <= '9') i++;
    if (i == int_start) return 0;
    int is_real = 0;
    if (i < end && p[i] == '.') {
        is_real = 1;
        size_t s = ++i;
        while (i < end && p[i] >= '0' && p[i] <= '9') i++;
        if (i == s) return 0;
    }
    if (i < end && (p[i] == 'e' || p[i] == 'E')) {
        is_real = 1;
        i++;
        if (i < end && (p[i] == '+' || p[i] == '-')) i++;
        size_t s = i;
        while (i < end && p[i] >= '0' && p[i] <= '9') i++;
        if (i == s) return 0;
    }
    if (i != end) return 0;
    if (!is_real) {
        /* 18 digits always fit; longer integers go to SQLite (which turns overflow into a real). */
        if (end - int_start > 18) return 0;
        int64_t v = 0;
        for (size_t j = int_start; j < end; j++) v = v * 10 + (p[j] - '0');
        f->kind = STRATA_JSON_INTEGER;
        f->integer = negative ? -v : v;
        return 1;
    }
    if (len >= 64) return 0;
    char buffer[64];
    memcpy(buffer, p + start, len);
    buffer[len] = 0;
    f->kind = STRATA_JSON_REAL;
    f->real = strtod(buffer, NULL);
    return 1;
}

static void give_up(strata_json_field *out, int key_count) {
    for (int k = 0; k < key_count; k++) out[k].kind = STRATA_JSON_FALLBACK;
}

void strata_json_members(const uint8_t *p, size_t n, const uint8_t *const *keys, const uint32_t *key_lengths,
                         int key_count, int stop_early, strata_json_field *out) {
    for (int k = 0; k < key_count; k++) out[k].kind = STRATA_JSON_NULL;
    if (!p || key_count > 64) { give_up(out, key_count); return; }
    uint64_t found = 0;
    int remaining = key_count;
    size_t i = skip_space(p, 0, n);
    if (i >= n || p[i] != '{') { give_up(out, key_count); return; }
    i = skip_space(p, i + 1, n);
    if (i < n && p[i] == '}') {
        i++;
    } else {
        for (;;) {
            if (i >= n || p[i] != '"') { give_up(out, key_count); return; }
            size_t key_start = i + 1;
            int escaped = 0;
            size_t key_end = skip_string(p, i, n, &escaped);
            if (!key_end || escaped) { give_up(out, key_count); return; }
            size_t key_length = key_end - 1 - key_start;
            i = skip_space(p, key_end, n);
            if (i >= n || p[i] != ':') { give_up(out, key_count); return; }
            i = skip_space(p, i + 1, n);
            if (i >= n) { give_up(out, key_count); return; }
            size_t value_start = i;
            size_t value_end = skip_value(p, i, n);
            if (!value_end) { give_up(out, key_count); return; }
            for (int k = 0; k < key_count; k++) {
                /* SQLite answers with the first member of a name; later duplicates are ignored. */
                if ((found >> k) & 1 || key_lengths[k] != key_length) continue;
                if (memcmp(p + key_start, keys[k], key_length) != 0) continue;
                if (!scalar(p, value_start, value_end, &out[k])) { give_up(out, key_count); return; }
                found |= (uint64_t)1 << k;
                remaining--;
            }
            if (stop_early && remaining == 0) return;
            i = skip_space(p, value_end, n);
            if (i >= n) { give_up(out, key_count); return; }
            if (p[i] == ',') { i = skip_space(p, i + 1, n); continue; }
            if (p[i] != '}') { give_up(out, key_count); return; }
            i++;
            break;
        }
    }
    if (skip_space(p, i, n) != n) give_up(out, key_count);
}
