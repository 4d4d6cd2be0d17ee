#ifndef STRATA_CPLATFORM_H
#define STRATA_CPLATFORM_H
#include <stdint.h>
#include <stddef.h>

// Functions Swift's Glibc module hides behind _GNU_SOURCE or macros.

/// fallocate(2) (mode 0 reserves blocks and extends the size). Returns 0 or -1 with errno set.
int cplatform_fallocate(int fd, int mode, int64_t offset, int64_t length);

/// mmap(2) wrapper returning NULL (not MAP_FAILED) on failure, errno set.
void *cplatform_mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset);

/// flock(fd, LOCK_EX|LOCK_NB). Returns 0, or -1 with errno (EWOULDBLOCK when held elsewhere).
int cplatform_flock_exclusive_nonblocking(int fd);

/// Fixed glibc malloc thresholds: blocks up to `mmap_threshold` bytes come from the heap, and a
/// heap keeps up to `trim_threshold` free bytes at its top instead of returning them. Returns 1
/// when both were set.
int cplatform_malloc_thresholds(int mmap_threshold, int trim_threshold);

/// Current errno (Swift's errno accessor is fine on Glibc, kept for symmetry).
int cplatform_errno(void);

#endif
