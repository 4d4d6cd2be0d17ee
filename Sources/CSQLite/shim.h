#include <sqlite3.h>
// A virtual table and cursor "subclass" carrying a pointer to their Swift owners.
typedef struct StrataVTab { sqlite3_vtab base; void *owner; } StrataVTab;
typedef struct StrataVTabCursor { sqlite3_vtab_cursor base; void *owner; } StrataVTabCursor;
// Macros and variadic functions Swift cannot import.
static inline sqlite3_destructor_type strata_sqlite_transient(void) { return SQLITE_TRANSIENT; }
static inline int strata_sqlite_vtab_config_innocuous(sqlite3 *db) { return sqlite3_vtab_config(db, SQLITE_VTAB_INNOCUOUS); }
static inline char *strata_sqlite_strdup(const char *s) { return sqlite3_mprintf("%s", s); }
