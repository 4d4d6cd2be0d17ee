#if canImport(Glibc)
import Glibc
#endif

/// Checks an LMDB data file against its own meta pages before LMDB maps it. LMDB trusts the file:
/// a `data.mdb` cut short (a bad copy, a full disk during a restore) is mapped and then read past
/// its end, which is SIGBUS, not an error. This reads the two meta pages with plain reads and
/// refuses a file shorter than the pages its newest valid meta page says are in use.
///
/// Layout (LMDB 0.9, 64-bit): each meta page starts with a 16-byte page header, then `MDB_meta`:
/// magic u32 (0xBEEFC0DE), version u32, address (8), mapsize (8), two `MDB_db` of 48 bytes (the
/// first one's `md_pad` holds the page size), `mm_last_pg` (8), `mm_txnid` (8). Page 1 starts at
/// the page size.
enum MetadataFileCheck {
    static let magic: UInt32 = 0xBEEF_C0DE
    static let pageHeaderBytes = 16
    static let pageSizeOffset = pageHeaderBytes + 4 + 4 + 8 + 8
    static let lastPageOffset = pageSizeOffset + 2 * 48
    static let txnIdOffset = lastPageOffset + 8
    static let metaBytes = txnIdOffset + 8

    struct Meta { let pageSize: Int; let lastPage: UInt64; let txnId: UInt64 }

    static func verify(path: String) throws(MetadataError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return }  // a new environment
            return  // LMDB's own open reports permission problems with its message
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return }
        let size = Int(st.st_size)
        if size == 0 { return }  // created but never written: LMDB initialises it
        let directory = String(path.dropLast("/data.mdb".count))
        func damaged(_ why: String) -> MetadataError {
            MetadataError(code: EIO, context: """
                metadata file \(path) is damaged: \(why). Strata will not map it (reading past its end would crash). \
                Restore \(directory) from a backup, or move it aside to start with empty metadata \
                (topics and committed offsets are lost; partition directories stay on disk and are \
                reported as orphans)
                """)
        }
        guard let first = readMeta(fd: fd, at: 0) else { throw damaged("its first meta page is not an LMDB meta page (\(size) bytes)") }
        var newest = first
        if first.pageSize > 0, let second = readMeta(fd: fd, at: first.pageSize), second.txnId > first.txnId {
            newest = second
        }
        guard newest.pageSize >= 512, newest.pageSize <= 1 << 16 else { throw damaged("page size \(newest.pageSize) is not plausible") }
        let (pages, overflow1) = newest.lastPage.addingReportingOverflow(1)
        let (needed, overflow2) = pages.multipliedReportingOverflow(by: UInt64(newest.pageSize))
        guard !overflow1, !overflow2 else { throw damaged("last page \(newest.lastPage) is not plausible") }
        if UInt64(size) < needed {
            throw damaged("it is \(size) bytes but its meta page says \(needed) bytes are in use (truncated)")
        }
    }

    private static func readMeta(fd: Int32, at offset: Int) -> Meta? {
        var page = [UInt8](repeating: 0, count: metaBytes)
        let n = page.withUnsafeMutableBytes { pread(fd, $0.baseAddress, metaBytes, off_t(offset)) }
        guard n == metaBytes else { return nil }
        func u32(_ at: Int) -> UInt32 { page.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) } }
        func u64(_ at: Int) -> UInt64 { page.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt64.self) } }
        guard u32(pageHeaderBytes) == magic else { return nil }
        return Meta(pageSize: Int(u32(pageSizeOffset)), lastPage: u64(lastPageOffset), txnId: u64(txnIdOffset))
    }
}
