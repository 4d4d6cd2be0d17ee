#ifndef STRATA_SCAN_H
#define STRATA_SCAN_H
#include <stddef.h>
#include <stdint.h>

/// One top-level member found by strata_json_members, in SQLite's ->> terms.
enum { STRATA_JSON_NULL = 0, STRATA_JSON_INTEGER = 1, STRATA_JSON_REAL = 2, STRATA_JSON_TEXT = 3, STRATA_JSON_FALLBACK = 4,
       /* text with backslash escapes: start/count are the raw content, strata_json_unescape decodes */
       STRATA_JSON_ESCAPED = 5 };
typedef struct {
    int32_t kind;
    int32_t start;   /* TEXT: byte offset of the string's content (no escapes) */
    int32_t count;   /* TEXT: its length */
    int32_t unused;
    int64_t integer; /* INTEGER */
    double real;     /* REAL */
} strata_json_field;

/// Fills out[i] with the member named keys[i] (raw bytes, no escapes) of the top-level JSON
/// object in json[0..<n], in one pass: NULL when absent. A key may go deeper: the member name,
/// then segments each made of a 0 byte and 'm' + a member name or 'i' + a decimal array index
/// (`$.geo.city` is "geo\0mcity", `$.items[0].sku` is "items\0i0\0msku"); a path that does not
/// exist is NULL, as SQLite answers. A wanted value that needs SQLite's own conversion (nested
/// value, odd number) is FALLBACK for that key alone; every entry is FALLBACK when
/// the object is malformed or unusual (escaped keys, nesting deeper than 64, a non-object), so
/// the caller asks SQLite's json_extract instead. With stop_early the scan ends when every key
/// is found; otherwise it checks the structure up to the closing brace (and each level a path
/// walks to its closing bracket).
void strata_json_members(const uint8_t *json, size_t n, const uint8_t *const *keys, const uint32_t *key_lengths,
                         int key_count, int stop_early, strata_json_field *out);

/// Decodes the content p[0..<n] of a JSON string (between its quotes) into out (room for n bytes:
/// decoding never grows), as SQLite's ->> does. Returns the decoded length, or -1 when SQLite
/// must decide (an escape outside RFC 8259, \u0000, an unpaired surrogate, a raw control
/// character), so the caller falls back to json_extract.
int32_t strata_json_unescape(const uint8_t *p, size_t n, uint8_t *out);

/// SQLite's ->> conversion of one JSON number, true, false or null (the whole of p[0..<n]), as
/// strata_json_members reports a member with that value: 1 with *out set, 0 when SQLite must
/// decide (an integer past 18 digits, a long real, anything else).
int strata_json_scalar(const uint8_t *p, size_t n, strata_json_field *out);

/// As strata_json_unescape, but never refuses an RFC 8259 string: U+0000 becomes a NUL byte and an
/// unpaired surrogate U+FFFD (what a Parquet string column can hold), -1 only for non-RFC escapes.
int32_t strata_json_unescape_lossy(const uint8_t *p, size_t n, uint8_t *out);

/// One top-level member of a JSON object, found by strata_json_top_members.
enum { STRATA_MEMBER_NULL = 0, STRATA_MEMBER_TRUE = 1, STRATA_MEMBER_FALSE = 2, STRATA_MEMBER_INTEGER = 3,
       STRATA_MEMBER_REAL = 4, STRATA_MEMBER_TEXT = 5, /* a string without escapes */
       STRATA_MEMBER_ESCAPED = 6, /* a string with backslash escapes */
       STRATA_MEMBER_OBJECT = 7, STRATA_MEMBER_ARRAY = 8,
       STRATA_MEMBER_NUMBER_TEXT = 9 /* a number too long to convert (kept as its text) */ };
typedef struct {
    uint32_t key_start;    /* the member name's raw bytes, between its quotes */
    uint32_t key_length;
    uint32_t value_start;  /* the value's JSON text (a string with its quotes) */
    uint32_t value_length;
    int32_t kind;
    int32_t key_escaped;   /* the name has backslash escapes */
    int64_t integer;       /* INTEGER; REAL: `real` (an integer beyond 64 bits is REAL) */
    double real;
} strata_json_member;

/// The top-level members of the strict RFC 8259 JSON object json[0..<n], in document order,
/// duplicates included: fills out[0..<min(count, capacity)] and returns the member count, or -1
/// when the bytes are not one strict JSON object (nesting deeper than 64 included).
int32_t strata_json_top_members(const uint8_t *json, size_t n, strata_json_member *out, int32_t capacity);

/// 1 when p[0..<n] is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
int strata_utf8_valid(const uint8_t *p, size_t n);

/// A scalar of a JSON text (strata_json_shape): the text between slots is the document's shape.
enum { STRATA_SLOT_STRING = 0, /* the content between the quotes, escapes as written */
       STRATA_SLOT_NUMBER = 1, STRATA_SLOT_LITERAL = 2 /* true, false, null */ };
typedef struct {
    uint32_t start;
    uint32_t length;
    int32_t kind;
} strata_json_slot;

/// The scalars of the strict RFC 8259 JSON value json[0..<n] (any value; whitespace allowed
/// around it), in document order, into out[0..<capacity]: their count, or -1 when the text is
/// not one strict JSON value, nests deeper than 64 or has more than `capacity` scalars.
/// Concatenating the text before, between and after the slots with the slots gives back json.
int32_t strata_json_shape(const uint8_t *json, size_t n, strata_json_slot *out, int32_t capacity);

/// One record of an uncompressed RecordBatch v2 record section, as offsets into it.
typedef struct {
    int64_t timestamp_delta;
    int32_t offset_delta;
    int32_t key_length;    /* -1: null key */
    int32_t value_length;  /* -1: null value */
    int32_t header_count;
    uint32_t key_offset;
    uint32_t value_offset;
    uint32_t headers_offset;
    uint32_t unused;
} strata_record_view;

/// Decodes `count` records from records[0..<n] (the bytes after the 61-byte batch header) into
/// out[0..<count], checking every length against the bounds (a record's declared length must
/// hold exactly its fields). Returns 0, or -1 when the section is malformed (nothing to trust).
int strata_decode_records(const uint8_t *records, size_t n, int32_t count, strata_record_view *out);

/// Asks the cache for the line holding p, to be written soon: a hash table's slot that a probe
/// a few values later touches. Past the caches, one miss per probe (~100 ns) is the whole cost of
/// a probe; requested a few probes ahead, the misses overlap.
static inline void strata_prefetch(const void *p) { __builtin_prefetch(p, 1, 3); }

#endif
