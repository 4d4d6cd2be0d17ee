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

/* RFC 8259 number at p[i..<n]: the index after it, 0 when it is not one. */
static size_t check_number(const uint8_t *p, size_t i, size_t n) {
    if (i < n && p[i] == '-') i++;
    if (i >= n) return 0;
    if (p[i] == '0') i++;
    else if (p[i] >= '1' && p[i] <= '9') { while (i < n && p[i] >= '0' && p[i] <= '9') i++; }
    else return 0;
    if (i < n && p[i] == '.') {
        size_t s = ++i;
        while (i < n && p[i] >= '0' && p[i] <= '9') i++;
        if (i == s) return 0;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-')) i++;
        size_t s = i;
        while (i < n && p[i] >= '0' && p[i] <= '9') i++;
        if (i == s) return 0;
    }
    return i;
}

static inline int is_hex(uint8_t c) { return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }

/* A string at p[i] (opening quote) whose escapes are all RFC 8259's: the index after it, or 0;
   *had_escapes tells whether it has any. */
static inline __attribute__((always_inline)) size_t check_string_escapes(const uint8_t *p, size_t i, size_t n, int *had_escapes) {
    int escaped = 0;
    size_t end = skip_string(p, i, n, &escaped);
    *had_escapes = escaped;
    if (!end || !escaped) return end;
    for (size_t j = i + 1; j < end - 1; j++) {
        if (p[j] != '\\') continue;
        uint8_t c = p[++j];
        if (c == 'u') {
            if (j + 4 >= end || !is_hex(p[j + 1]) || !is_hex(p[j + 2]) || !is_hex(p[j + 3]) || !is_hex(p[j + 4])) return 0;
            j += 4;
        } else if (!(c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't')) {
            return 0;
        }
    }
    return end;
}

static inline __attribute__((always_inline)) size_t check_string(const uint8_t *p, size_t i, size_t n) {
    int escaped;
    return check_string_escapes(p, i, n, &escaped);
}

/* The index after the RFC 8259 value at p[i] (strict: what both SQLite's JSON and JSON5
   parsers accept with the same meaning), 0 when it is not one — the caller then leaves the row
   to SQLite, which reports it or reads it its own way. */
static size_t check_value(const uint8_t *p, size_t i, size_t n, int depth) {
    if (i >= n) return 0;
    uint8_t c = p[i];
    if (c == '"') return check_string(p, i, n);
    if (c == '{' || c == '[') {
        if (depth >= 64) return 0;
        uint8_t close = c == '{' ? '}' : ']';
        i = skip_space(p, i + 1, n);
        if (i < n && p[i] == close) return i + 1;
        for (;;) {
            if (c == '{') {
                if (i >= n || p[i] != '"') return 0;
                i = check_string(p, i, n);
                if (!i) return 0;
                i = skip_space(p, i, n);
                if (i >= n || p[i] != ':') return 0;
                i = skip_space(p, i + 1, n);
            }
            /* (Strings, most values, without a call.) */
            i = i < n && p[i] == '"' ? check_string(p, i, n) : check_value(p, i, n, depth + 1);
            if (!i) return 0;
            i = skip_space(p, i, n);
            if (i >= n) return 0;
            if (p[i] == ',') { i = skip_space(p, i + 1, n); continue; }
            return p[i] == close ? i + 1 : 0;
        }
    }
    if (c == 't') return i + 4 <= n && !memcmp(p + i, "true", 4) ? i + 4 : 0;
    if (c == 'f') return i + 5 <= n && !memcmp(p + i, "false", 5) ? i + 5 : 0;
    if (c == 'n') return i + 4 <= n && !memcmp(p + i, "null", 4) ? i + 4 : 0;
    return check_number(p, i, n);
}

/* The end of the value at p[i]: strictly checked (check_value) or only its extent (skip_value). */
static inline size_t value_end(const uint8_t *p, size_t i, size_t n, int check) {
    if (!check) return skip_value(p, i, n);
    size_t end = i < n && p[i] == '"' ? check_string(p, i, n) : check_value(p, i, n, 1);
    /* A value must end at a separator, as skip_value's extent does. */
    return end && (end >= n || p[end] == ',' || p[end] == '}' || p[end] == ']' || is_space(p[end])) ? end : 0;
}

/* SQLite's ->> conversion of the scalar p[start..<end]; 0 when SQLite must decide. */
static int scalar(const uint8_t *p, size_t start, size_t end, strata_json_field *f) {
    uint8_t c = p[start];
    if (c == '"') {
        /* Escaped text is decoded by the caller (strata_json_unescape), which knows where to. */
        f->kind = memchr(p + start + 1, '\\', end - start - 2) ? STRATA_JSON_ESCAPED : STRATA_JSON_TEXT;
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
    int has_exponent = 0;
    if (i < end && (p[i] == 'e' || p[i] == 'E')) {
        is_real = 1;
        has_exponent = 1;
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
    f->kind = STRATA_JSON_REAL;
    /* A decimal without exponent of at most 15 digits is m / 10^k with m < 2^53 and k <= 22, both
       exact doubles: IEEE division rounds the quotient correctly, which is what strtod does with
       the text (Clinger's fast path), without its set-up. */
    if (!has_exponent && i - int_start <= 16) {
        int64_t m = 0;
        int digits = 0, scale = 0, after_point = 0;
        for (size_t j = int_start; j < end; j++) {
            if (p[j] == '.') { after_point = 1; continue; }
            m = m * 10 + (p[j] - '0');
            digits++;
            scale += after_point;
        }
        static const double powers[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
        if (digits <= 15 && scale <= 15) {
            double v = (double)m / powers[scale];
            f->real = negative ? -v : v;
            return 1;
        }
    }
    if (len >= 64) return 0;
    char buffer[64];
    memcpy(buffer, p + start, len);
    buffer[len] = 0;
    f->real = strtod(buffer, NULL);
    return 1;
}

int strata_json_scalar(const uint8_t *p, size_t n, strata_json_field *out) {
    if (!p || n == 0 || n > INT32_MAX || p[0] == '"') return 0;
    return scalar(p, 0, n, out);
}

/* After an element of an object or array (its value ends at `stop`): 1 with *i at the next
   element, 0 at the closing `close`, -1 when the separator is broken or missing. */
static inline int next_element(const uint8_t *p, size_t *i, size_t stop, size_t e, uint8_t close) {
    size_t j = skip_space(p, stop, e);
    if (j >= e) return -1;
    if (p[j] == ',') { *i = skip_space(p, j + 1, e); return 1; }
    return p[j] == close ? 0 : -1;
}

/* Follows the rest of a path from the value p[*start..<*end]: `path` holds segments, each a 0
   byte, then 'm' and a member name or 'i' and an array index in decimal. Returns 1 with
   start and end on the target value, 0 when the path does not exist (SQLite: NULL — a member of
   a non-object, an index of a non-array, an index past the end, a missing member), -1 when the
   fast path must step aside (an escaped key, broken separators at a level walked). The first
   member of a name counts, as in SQLite. With `check_rest`, every level walked is read to its
   closing bracket, so separators after the target are checked too. */
static int resolve_path(const uint8_t *p, size_t *start, size_t *end, const uint8_t *path, size_t path_length, int check_rest) {
    size_t s = *start, e = *end, at = 0;
    while (at < path_length) {
        if (path[at] != 0 || at + 2 > path_length) return -1;
        uint8_t kind = path[at + 1];
        size_t seg = at + 2, seg_end = seg;
        while (seg_end < path_length && path[seg_end] != 0) seg_end++;
        int found = 0;
        size_t fs = 0, fe = 0;
        if (kind == 'm') {
            if (p[s] != '{') return 0;
            size_t i = skip_space(p, s + 1, e);
            if (i < e && p[i] == '}') return 0;
            for (;;) {
                if (i >= e || p[i] != '"') return -1;
                size_t key_start = i + 1;
                int escaped = 0;
                size_t key_end = skip_string(p, i, e, &escaped);
                if (!key_end || escaped) return -1;
                size_t key_length = key_end - 1 - key_start;
                i = skip_space(p, key_end, e);
                if (i >= e || p[i] != ':') return -1;
                i = skip_space(p, i + 1, e);
                if (i >= e) return -1;
                size_t value_start = i, value_stop = value_end(p, i, e, check_rest);
                if (!value_stop) return -1;
                if (!found && key_length == seg_end - seg && memcmp(p + key_start, path + seg, key_length) == 0) {
                    found = 1;
                    fs = value_start;
                    fe = value_stop;
                    if (!check_rest) break;
                }
                int more = next_element(p, &i, value_stop, e, '}');
                if (more < 0) return -1;
                if (!more) break;
            }
        } else if (kind == 'i') {
            if (seg_end == seg || seg_end - seg > 9) return -1;
            long index = 0;
            for (size_t j = seg; j < seg_end; j++) {
                if (path[j] < '0' || path[j] > '9') return -1;
                index = index * 10 + (path[j] - '0');
            }
            if (p[s] != '[') return 0;
            size_t i = skip_space(p, s + 1, e);
            if (i < e && p[i] == ']') return 0;
            for (long k = 0;; k++) {
                if (i >= e) return -1;
                size_t value_start = i, value_stop = value_end(p, i, e, check_rest);
                if (!value_stop) return -1;
                if (k == index) {
                    found = 1;
                    fs = value_start;
                    fe = value_stop;
                    if (!check_rest) break;
                }
                int more = next_element(p, &i, value_stop, e, ']');
                if (more < 0) return -1;
                if (!more) break;
            }
        } else {
            return -1;
        }
        if (!found) return 0;
        s = fs;
        e = fe;
        at = seg_end;
    }
    *start = s;
    *end = e;
    return 1;
}

static inline int hex_digit(uint8_t c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; }

/* Four hex digits at p[i..<i+4] (checked by the caller's bounds), or -1. */
static inline long hex4(const uint8_t *p, size_t i, size_t n) {
    if (i + 4 > n || !is_hex(p[i]) || !is_hex(p[i + 1]) || !is_hex(p[i + 2]) || !is_hex(p[i + 3])) return -1;
    return (hex_digit(p[i]) << 12) | (hex_digit(p[i + 1]) << 8) | (hex_digit(p[i + 2]) << 4) | hex_digit(p[i + 3]);
}

/* lossy: U+0000 becomes a NUL byte and an unpaired surrogate U+FFFD, instead of -1. */
static int32_t unescape(const uint8_t *p, size_t n, uint8_t *out, int lossy) {
    if (n > INT32_MAX) return -1;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        if (c != '\\') {
            /* Raw control characters make the document invalid: SQLite reports it. */
            if (c < 0x20) return -1;
            out[o++] = c;
            i++;
            continue;
        }
        if (i + 1 >= n) return -1;
        uint8_t e = p[i + 1];
        i += 2;
        switch (e) {
        case '"': out[o++] = '"'; continue;
        case '\\': out[o++] = '\\'; continue;
        case '/': out[o++] = '/'; continue;
        case 'b': out[o++] = '\b'; continue;
        case 'f': out[o++] = '\f'; continue;
        case 'n': out[o++] = '\n'; continue;
        case 'r': out[o++] = '\r'; continue;
        case 't': out[o++] = '\t'; continue;
        case 'u': break;
        default: return -1; /* JSON5 escapes and invalid ones: SQLite's reading */
        }
        long v = hex4(p, i, n);
        if (v < 0) return -1;
        i += 4;
        /* U+0000 (SQLite stops the text there) and unpaired surrogates (SQLite writes them as
           they are) are SQLite's business; a surrogate pair is one code point. */
        if (v == 0 && !lossy) return -1;
        if (v >= 0xDC00 && v <= 0xDFFF) {
            if (!lossy) return -1;
            v = 0xFFFD;
        } else if (v >= 0xD800 && v <= 0xDBFF) {
            long low = i + 6 <= n && p[i] == '\\' && p[i + 1] == 'u' ? hex4(p, i + 2, n) : -1;
            if (low >= 0xDC00 && low <= 0xDFFF) {
                i += 6;
                v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00);
            } else if (lossy) {
                v = 0xFFFD;
            } else {
                return -1;
            }
        }
        if (v < 0x80) {
            out[o++] = (uint8_t)v;
        } else if (v < 0x800) {
            out[o++] = (uint8_t)(0xC0 | (v >> 6));
            out[o++] = (uint8_t)(0x80 | (v & 0x3F));
        } else if (v < 0x10000) {
            out[o++] = (uint8_t)(0xE0 | (v >> 12));
            out[o++] = (uint8_t)(0x80 | ((v >> 6) & 0x3F));
            out[o++] = (uint8_t)(0x80 | (v & 0x3F));
        } else {
            out[o++] = (uint8_t)(0xF0 | (v >> 18));
            out[o++] = (uint8_t)(0x80 | ((v >> 12) & 0x3F));
            out[o++] = (uint8_t)(0x80 | ((v >> 6) & 0x3F));
            out[o++] = (uint8_t)(0x80 | (v & 0x3F));
        }
    }
    return (int32_t)o;
}

int32_t strata_json_unescape(const uint8_t *p, size_t n, uint8_t *out) { return unescape(p, n, out, 0); }

int32_t strata_json_unescape_lossy(const uint8_t *p, size_t n, uint8_t *out) { return unescape(p, n, out, 1); }

static void give_up(strata_json_field *out, int key_count) {
    for (int k = 0; k < key_count; k++) out[k].kind = STRATA_JSON_FALLBACK;
}

void strata_json_members(const uint8_t *p, size_t n, const uint8_t *const *keys, const uint32_t *key_lengths,
                         int key_count, int stop_early, strata_json_field *out) {
    for (int k = 0; k < key_count; k++) out[k].kind = STRATA_JSON_NULL;
    if (!p || key_count > 64) { give_up(out, key_count); return; }
    uint64_t found = 0;
    int remaining = key_count;
    /* A key is a top-level member name, optionally followed by the rest of a path (0-separated
       segments, see resolve_path): the member name is compared while walking the object. */
    uint32_t first_length[64];
    for (int k = 0; k < key_count; k++) {
        const uint8_t *zero = memchr(keys[k], 0, key_lengths[k]);
        first_length[k] = zero ? (uint32_t)(zero - keys[k]) : key_lengths[k];
    }
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
            size_t value_stop = value_end(p, i, n, !stop_early);
            if (!value_stop) { give_up(out, key_count); return; }
            for (int k = 0; k < key_count; k++) {
                /* SQLite answers with the first member of a name; later duplicates are ignored. */
                if ((found >> k) & 1 || first_length[k] != key_length) continue;
                /* The first byte settles most mismatches without a call to memcmp. */
                if (key_length > 0 && (p[key_start] != keys[k][0] || memcmp(p + key_start, keys[k], key_length) != 0)) continue;
                found |= (uint64_t)1 << k;
                remaining--;
                size_t target_start = value_start, target_end = value_stop;
                if (first_length[k] < key_lengths[k]) {
                    int r = resolve_path(p, &target_start, &target_end, keys[k] + first_length[k], key_lengths[k] - first_length[k], !stop_early);
                    if (r < 0) { give_up(out, key_count); return; }
                    if (r == 0) { out[k].kind = STRATA_JSON_NULL; continue; }
                }
                /* A value SQLite must convert (a nested value, an odd number)
                   sends this member alone to SQLite; the others stay on the fast path. */
                if (!scalar(p, target_start, target_end, &out[k])) out[k].kind = STRATA_JSON_FALLBACK;
            }
            if (stop_early && remaining == 0) return;
            i = skip_space(p, value_stop, n);
            if (i >= n) { give_up(out, key_count); return; }
            if (p[i] == ',') { i = skip_space(p, i + 1, n); continue; }
            if (p[i] != '}') { give_up(out, key_count); return; }
            i++;
            break;
        }
    }
    if (skip_space(p, i, n) != n) give_up(out, key_count);
}

/* A JSON number's value: an integer when it has no fraction or exponent and fits 64 bits,
   otherwise a double (as SQLite reads an integer too large for 64 bits). */
static void number_value(const uint8_t *p, size_t start, size_t end, strata_json_member *m) {
    int integral = 1;
    for (size_t j = start; j < end; j++) if (p[j] == '.' || p[j] == 'e' || p[j] == 'E') { integral = 0; break; }
    if (integral) {
        size_t j = start;
        int negative = p[j] == '-';
        if (negative) j++;
        uint64_t v = 0, limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        int overflow = 0;
        for (; j < end; j++) {
            uint64_t d = (uint64_t)(p[j] - '0');
            if (v > (limit - d) / 10) { overflow = 1; break; }
            v = v * 10 + d;
        }
        if (!overflow) {
            m->kind = STRATA_MEMBER_INTEGER;
            m->integer = negative ? (int64_t)(0 - v) : (int64_t)v;
            return;
        }
    }
    char stack[128];
    size_t len = end - start;
    char *buffer = len < sizeof stack ? stack : malloc(len + 1);
    m->kind = STRATA_MEMBER_REAL;
    if (!buffer) { m->real = 0; m->kind = STRATA_MEMBER_NUMBER_TEXT; return; }
    memcpy(buffer, p + start, len);
    buffer[len] = 0;
    m->real = strtod(buffer, NULL);
    if (buffer != stack) free(buffer);
}

int32_t strata_json_top_members(const uint8_t *p, size_t n, strata_json_member *out, int32_t capacity) {
    if (!p || n > INT32_MAX) return -1;
    size_t i = skip_space(p, 0, n);
    if (i >= n || p[i] != '{') return -1;
    i = skip_space(p, i + 1, n);
    int32_t count = 0;
    if (i < n && p[i] == '}') {
        i++;
    } else {
        for (;;) {
            if (i >= n || p[i] != '"') return -1;
            int key_escaped = 0;
            size_t key_end = check_string_escapes(p, i, n, &key_escaped);
            if (!key_end) return -1;
            size_t key_start = i + 1;
            i = skip_space(p, key_end, n);
            if (i >= n || p[i] != ':') return -1;
            i = skip_space(p, i + 1, n);
            size_t value_start = i;
            int value_escaped = 0;
            size_t value_stop;
            if (i < n && p[i] == '"') {
                value_stop = check_string_escapes(p, i, n, &value_escaped);
                if (value_stop && value_stop < n && !(p[value_stop] == ',' || p[value_stop] == '}' || is_space(p[value_stop]))) value_stop = 0;
            } else {
                value_stop = value_end(p, i, n, 1);
            }
            if (!value_stop) return -1;
            if (count < capacity) {
                strata_json_member *m = &out[count];
                m->key_start = (uint32_t)key_start;
                m->key_length = (uint32_t)(key_end - 1 - key_start);
                m->key_escaped = key_escaped;
                m->value_start = (uint32_t)value_start;
                m->value_length = (uint32_t)(value_stop - value_start);
                m->integer = 0;
                m->real = 0;
                switch (p[value_start]) {
                case '"': m->kind = value_escaped ? STRATA_MEMBER_ESCAPED : STRATA_MEMBER_TEXT; break;
                case '{': m->kind = STRATA_MEMBER_OBJECT; break;
                case '[': m->kind = STRATA_MEMBER_ARRAY; break;
                case 't': m->kind = STRATA_MEMBER_TRUE; break;
                case 'f': m->kind = STRATA_MEMBER_FALSE; break;
                case 'n': m->kind = STRATA_MEMBER_NULL; break;
                default: number_value(p, value_start, value_stop, m); break;
                }
            }
            if (count == INT32_MAX) return -1;
            count++;
            i = skip_space(p, value_stop, n);
            if (i >= n) return -1;
            if (p[i] == ',') { i = skip_space(p, i + 1, n); continue; }
            if (p[i] != '}') return -1;
            i++;
            break;
        }
    }
    return skip_space(p, i, n) == n ? count : -1;
}

int strata_utf8_valid(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* Eight ASCII bytes at a time. */
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (!(w & 0x8080808080808080ULL)) { i += 8; continue; }
        }
        uint8_t c = p[i];
        if (c < 0x80) { i++; continue; }
        size_t len;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
        else return 0;
        if (i + len > n) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        /* Overlong forms, surrogates and code points past U+10FFFF are not UTF-8. */
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
        i += len;
    }
    return 1;
}

/* Slots of a JSON text for the cold format's shapes: recursive walk of one strict value. */
static int shape_walk(const uint8_t *p, size_t *i, size_t n, int depth, strata_json_slot *out, int32_t capacity, int32_t *count) {
    if (*i >= n || depth > 64) return -1;
    uint8_t c = p[*i];
    if (c == '{' || c == '[') {
        uint8_t close = c == '{' ? '}' : ']';
        size_t j = skip_space(p, *i + 1, n);
        if (j < n && p[j] == close) { *i = j + 1; return 0; }
        for (;;) {
            if (c == '{') {
                /* Member names stay in the shape's literal text. */
                if (j >= n || p[j] != '"') return -1;
                j = check_string(p, j, n);
                if (!j) return -1;
                j = skip_space(p, j, n);
                if (j >= n || p[j] != ':') return -1;
                j = skip_space(p, j + 1, n);
            }
            if (shape_walk(p, &j, n, depth + 1, out, capacity, count) < 0) return -1;
            j = skip_space(p, j, n);
            if (j >= n) return -1;
            if (p[j] == ',') { j = skip_space(p, j + 1, n); continue; }
            if (p[j] != close) return -1;
            *i = j + 1;
            return 0;
        }
    }
    size_t start = *i, end;
    int32_t kind;
    if (c == '"') {
        int escaped = 0;
        end = check_string_escapes(p, start, n, &escaped);
        if (!end) return -1;
        kind = STRATA_SLOT_STRING;
    } else {
        end = check_value(p, start, n, depth);
        if (!end) return -1;
        kind = (c == 't' || c == 'f' || c == 'n') ? STRATA_SLOT_LITERAL : STRATA_SLOT_NUMBER;
    }
    if (*count >= capacity) return -1;
    strata_json_slot *s = &out[(*count)++];
    /* A string's slot is its content: the quotes stay in the literal text around it. */
    s->start = (uint32_t)(kind == STRATA_SLOT_STRING ? start + 1 : start);
    s->length = (uint32_t)(kind == STRATA_SLOT_STRING ? end - start - 2 : end - start);
    s->kind = kind;
    *i = end;
    return 0;
}

int32_t strata_json_shape(const uint8_t *p, size_t n, strata_json_slot *out, int32_t capacity) {
    if (!p || n > INT32_MAX) return -1;
    size_t i = skip_space(p, 0, n);
    int32_t count = 0;
    if (shape_walk(p, &i, n, 0, out, capacity, &count) < 0) return -1;
    return skip_space(p, i, n) == n ? count : -1;
}
