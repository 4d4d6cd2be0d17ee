#if canImport(Glibc)
import Glibc
#endif

/// The partition's durable progress markers, in one small checksummed file:
/// `recoveryPoint` (every offset below it was fsynced, so load does not re-validate those
/// segments) and `logStartOffset`. Written to a temp file, synced, renamed and the directory
/// synced, so a crash leaves either the old or the new checkpoint, never a torn one.
///
/// Layout (28 bytes, big-endian): magic "STRC" | version u16 (1) | reserved u16 |
/// recoveryPoint i64 | logStartOffset i64 | CRC-32C u32 of the preceding 24 bytes.
struct Checkpoint: Equatable {
    static let fileName = "partition.checkpoint"
    static let size = 28
    static let magic: UInt32 = 0x5354_5243  // "STRC"

    var recoveryPoint: Int64
    var logStartOffset: Int64

    func encode() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Checkpoint.size)
        out.withUnsafeMutableBytes { p in
            p.storeBytes(of: Checkpoint.magic.bigEndian, toByteOffset: 0, as: UInt32.self)
            p.storeBytes(of: UInt16(1).bigEndian, toByteOffset: 4, as: UInt16.self)
            p.storeBytes(of: recoveryPoint.bigEndian, toByteOffset: 8, as: Int64.self)
            p.storeBytes(of: logStartOffset.bigEndian, toByteOffset: 16, as: Int64.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[0..<24]))
            p.storeBytes(of: crc.bigEndian, toByteOffset: 24, as: UInt32.self)
        }
        return out
    }

    /// nil when the bytes are not a valid checkpoint (wrong size, magic, version or CRC).
    static func decode(_ bytes: [UInt8]) -> Checkpoint? {
        guard bytes.count == size else { return nil }
        return bytes.withUnsafeBytes { p -> Checkpoint? in
            guard UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)) == magic,
                  UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt16.self)) == 1,
                  UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt32.self))
                      == CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[0..<24]))
            else { return nil }
            let rp = Int64(bigEndian: p.loadUnaligned(fromByteOffset: 8, as: Int64.self))
            let ls = Int64(bigEndian: p.loadUnaligned(fromByteOffset: 16, as: Int64.self))
            guard rp >= 0, ls >= 0 else { return nil }
            return Checkpoint(recoveryPoint: rp, logStartOffset: ls)
        }
    }

    static func read(directory: String) -> Checkpoint? {
        guard let bytes = try? FileIO.readAll(path: directory + "/" + fileName) else { return nil }
        return decode(bytes)
    }

    func write(directory: String) throws(LogError) {
        try FileIO.replaceAtomically(directory: directory, name: Checkpoint.fileName, with: encode())
    }
}
