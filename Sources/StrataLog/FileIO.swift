#if canImport(Glibc)
import Glibc
#endif
import CPlatform
import StrataCore
import Synchronization

/// Thin, errno-checked wrappers over the syscalls the log engine needs. Every failure becomes a
/// `LogError.io` naming the operation and the path.
public enum FileIO {
    /// One-shot faults of the first log-engine tests, kept as shorthands over `StorageFaults`
    /// (the general seam: fail the Nth call of any operation with any errno).
    enum Fault: Sendable { case datasyncEIO, fallocateENOSPC }

    static func inject(_ fault: Fault, under pathPrefix: String) {
        switch fault {
        case .datasyncEIO: StorageFaults.arm(.init(pathPrefix: pathPrefix, failAt: 1, errno: EIO, operations: [.datasync]))
        case .fallocateENOSPC: StorageFaults.arm(.init(pathPrefix: pathPrefix, failAt: 1, errno: ENOSPC, operations: [.allocate]))
        }
    }

    /// Throws the injected fault for `operation` on `path`, if the armed plan says so.
    @inline(__always)
    static func fault(_ operation: StorageOperation, _ path: String, _ what: @autoclosure () -> String) throws(LogError) {
        if let e = StorageFaults.check(operation, path: path) { throw LogError.io(operation: what(), path: path, errno: e) }
    }

    /// Files are created 0600 and directories 0700 (before umask): events are not world-readable.
    static func open(_ path: String, flags: Int32, mode: mode_t = 0o600) throws(LogError) -> Int32 {
        try fault(.open, path, "open")
        if flags & O_CREAT != 0, !exists(path) { try fault(.create, path, "create") }
        let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
        guard fd >= 0 else { throw LogError.fromErrno("open", path) }
        return fd
    }

    static func fileSize(fd: Int32, path: String) throws(LogError) -> Int {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw LogError.fromErrno("fstat", path) }
        return Int(st.st_size)
    }

    public static func fileSize(path: String) -> Int? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int(st.st_size)
    }

    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    /// Reserves real blocks for `[offset, offset + bytes)`, extending the file, so that a later
    /// write through a mapping cannot hit ENOSPC (which would be a SIGBUS): a full disk is
    /// reported here, before anything is written.
    static func reserve(fd: Int32, from offset: Int = 0, bytes: Int, path: String) throws(LogError) {
        try fault(.allocate, path, "fallocate \(bytes) bytes at \(offset)")
        if cplatform_fallocate(fd, 0, Int64(offset), Int64(bytes)) != 0 {
            let e = errno
            // Filesystems without fallocate (tmpfs on old kernels, some FUSE) fall back to
            // posix_fallocate, which writes zeros but still fails cleanly on ENOSPC.
            if e == EOPNOTSUPP || e == ENOSYS {
                let rc = posix_fallocate(fd, off_t(offset), off_t(bytes))
                guard rc == 0 else { throw LogError.io(operation: "posix_fallocate", path: path, errno: rc) }
            } else {
                throw LogError.io(operation: "fallocate \(bytes) bytes", path: path, errno: e)
            }
        }
    }

    static func truncate(fd: Int32, to size: Int, path: String) throws(LogError) {
        try fault(.truncate, path, "ftruncate to \(size)")
        guard ftruncate(fd, off_t(size)) == 0 else { throw LogError.fromErrno("ftruncate to \(size)", path) }
    }

    static func datasync(fd: Int32, path: String) throws(LogError) {
        try fault(.datasync, path, "fdatasync")
        guard fdatasync(fd) == 0 else { throw LogError.fromErrno("fdatasync", path) }
    }

    /// Makes a file creation, rename or unlink durable.
    static func syncDirectory(_ dir: String) throws(LogError) {
        try fault(.directorySync, dir, "fsync directory")
        let fd = Glibc.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw LogError.fromErrno("open directory", dir) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw LogError.fromErrno("fsync directory", dir) }
    }

    /// Replaces `directory/name` so that a crash leaves the old file or the new one, never a torn
    /// one: written to `name.tmp`, fdatasync'd, renamed over, the directory synced.
    /// `mode` applies to a new file (files of the data directory stay the owner's: 0600).
    public static func replaceAtomically(directory: String, name: String, with bytes: [UInt8], mode: mode_t = 0o600) throws(LogError) {
        let path = directory + "/" + name
        let tmp = path + ".tmp"
        let fd = try Self.open(tmp, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: mode)
        do {
            try Self.writeAll(fd: fd, array: bytes, at: 0, path: tmp)
            try Self.datasync(fd: fd, path: tmp)
        } catch {
            Glibc.close(fd)
            try? Self.unlink(tmp)
            throw error
        }
        Glibc.close(fd)
        try Self.rename(tmp, path)
        try Self.syncDirectory(directory)
    }

    static func rename(_ from: String, _ to: String) throws(LogError) {
        try fault(.rename, from, "rename to \(to)")
        guard Glibc.rename(from, to) == 0 else { throw LogError.fromErrno("rename to \(to)", from) }
    }

    public static func unlink(_ path: String) throws(LogError) {
        try fault(.unlink, path, "unlink")
        guard Glibc.unlink(path) == 0 || errno == ENOENT else { throw LogError.fromErrno("unlink", path) }
    }

    public static func mkdirs(_ path: String, mode: mode_t = 0o700) throws(LogError) {
        if exists(path) { return }  // the common case: one stat, not one per component
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if exists(current) { continue }
            if let e = StorageFaults.check(.mkdir, path: current) { throw LogError.io(operation: "mkdir", path: current, errno: e) }
            if mkdir(current, mode) != 0 && errno != EEXIST {
                throw LogError.fromErrno("mkdir", current)
            }
        }
    }

    /// rm -rf of a directory this process owns (a deleted topic's partition).
    public static func removeTree(_ path: String) throws(LogError) {
        for name in try listDirectory(path) {
            let child = path + "/" + name
            var st = stat()
            guard lstat(child, &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFDIR { try removeTree(child) } else { try unlink(child) }
        }
        guard rmdir(path) == 0 || errno == ENOENT else { throw LogError.fromErrno("rmdir", path) }
    }

    public static func listDirectory(_ path: String) throws(LogError) -> [String] {
        guard let dir = opendir(path) else { throw LogError.fromErrno("opendir", path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) { p in
                p.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func writeAll(fd: Int32, bytes: UnsafeRawBufferPointer, at offset: Int, path: String) throws(LogError) {
        try fault(.write, path, "pwrite")
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw LogError.fromErrno("pwrite", path)
            }
            done += n
        }
    }

    static func writeAll(fd: Int32, array: [UInt8], at offset: Int, path: String) throws(LogError) {
        let failure: LogError? = array.withUnsafeBytes { p in
            do throws(LogError) {
                try writeAll(fd: fd, bytes: p, at: offset, path: path)
                return nil
            } catch { return error }
        }
        if let failure { throw failure }
    }

    /// Reads up to `count` bytes at `offset` (fewer at end of file).
    static func read(fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int, path: String) throws(LogError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw LogError.fromErrno("pread", path)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    public static func readAll(path: String) throws(LogError) -> [UInt8] {
        let fd = try open(path, flags: O_RDONLY)
        defer { close(fd) }
        let size = try fileSize(fd: fd, path: path)
        var out = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, size - done, off_t(done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw LogError.fromErrno("pread", path)
            }
            if n == 0 { break }
            done += n
        }
        return Array(out[0..<done])
    }
}

/// A memory mapping, unmapped when the last reference goes away. Segments hand out slices that
/// retain their segment, so a mapping outlives every reader that still looks at it.
/// `@unchecked Sendable`: the base pointer and length never change after init; the bytes behind
/// them are synchronised by their users (the partition's writer lock and published offsets).
final class Mapping: @unchecked Sendable {
    let base: UnsafeMutableRawPointer?
    let length: Int
    let writable: Bool

    /// Maps `length` bytes of `fd`. A zero length yields an empty mapping (mmap refuses 0).
    init(fd: Int32, length: Int, writable: Bool, path: String) throws(LogError) {
        self.length = length
        self.writable = writable
        if length == 0 {
            base = nil
            return
        }
        let prot = writable ? (PROT_READ | PROT_WRITE) : PROT_READ
        guard let p = cplatform_mmap(nil, length, prot, MAP_SHARED, fd, 0) else {
            throw LogError.fromErrno("mmap \(length) bytes", path)
        }
        base = p
    }

    /// Private anonymous memory (in-memory indexes of a read-only opener).
    /// `populate`: every page faulted in by the mmap call itself (MAP_POPULATE), for memory the
    /// caller writes whole at once (a decoded cold block): one system call instead of a page
    /// fault per 4 KiB.
    init(anonymousLength length: Int, populate: Bool = false) throws(LogError) {
        self.length = length
        self.writable = true
        guard length > 0 else {
            base = nil
            return
        }
        guard let p = cplatform_mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0), -1, 0) else {
            throw LogError.fromErrno("mmap anonymous \(length) bytes", "(memory)")
        }
        base = p
    }

    deinit {
        if let base { munmap(base, length) }
    }

    @inline(__always)
    func bytes(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        precondition(range.lowerBound >= 0 && range.upperBound <= length, "mapping access out of bounds")
        guard let base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count)
    }

    @inline(__always)
    func mutableBytes(_ range: Range<Int>) -> UnsafeMutableRawBufferPointer {
        precondition(writable && range.lowerBound >= 0 && range.upperBound <= length, "mapping write out of bounds")
        return UnsafeMutableRawBufferPointer(start: base! + range.lowerBound, count: range.count)
    }

    /// Flushes a byte range of the mapping to disk (msync rounds down to a page boundary).
    func sync(_ range: Range<Int>, path: String) throws(LogError) {
        guard let base, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = range.lowerBound / page * page
        guard msync(base + start, range.upperBound - start, MS_SYNC) == 0 else {
            throw LogError.fromErrno("msync", path)
        }
    }

    func makeReadOnly() {
        guard let base, writable else { return }
        mprotect(base, length, PROT_READ)
    }
}
