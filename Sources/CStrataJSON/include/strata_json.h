#ifndef STRATA_JSON_H
#define STRATA_JSON_H
#include <stddef.h>
#include <stdint.h>

/// One top-level member found by strata_json_members, in SQLite's ->> terms.
enum { STRATA_JSON_NULL = 0, STRATA_JSON_INTEGER = 1, STRATA_JSON_REAL = 2, STRATA_JSON_TEXT = 3, STRATA_JSON_FALLBACK = 4 };
typedef struct {
    int32_t kind;
    int32_t start;   /* TEXT: byte offset of the string's content (no escapes) */
    int32_t count;   /* TEXT: its length */
    int32_t unused;
    int64_t integer; /* INTEGER */
    double real;     /* REAL */
} strata_json_field;

/// Fills out[i] with the member named keys[i] (raw bytes, no escapes) of the top-level JSON
/// object in json[0..<n], in one pass: NULL when absent. Every entry is FALLBACK when the object
/// is malformed or unusual (escaped keys, nesting deeper than 64, a non-object, a wanted member
/// whose value needs SQLite's own conversion: escaped string, nested value, odd number), so the
/// caller asks SQLite's json_extract instead. With stop_early the scan ends when every key is
/// found; otherwise it checks the structure up to the closing brace.
void strata_json_members(const uint8_t *json, size_t n, const uint8_t *const *keys, const uint32_t *key_lengths,
                         int key_count, int stop_early, strata_json_field *out);

#endif
