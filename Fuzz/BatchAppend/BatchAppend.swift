// libFuzzer target: one produced RecordBatch v2, as a Produce request carries it for one
// partition. It goes through Kafka's LogValidator checks (`validateForAppend`, under a lenient and
// a strict policy), the re-encoding a topic's compression.type asks for, and an append to a real
// PartitionLog on a scratch directory; what was appended is read back and must say what the
// validator said. Every so often the log is closed and opened again (recovery reads it all back)
// and must verify clean. Traps, ASan reports and broken invariants (preconditions) are findings.
//
// Unless the top bit of the input's first byte is set (the first byte of baseOffset, which an
// append overwrites anyway), the harness first writes the batch's real length and CRC-32C into
// it: otherwise almost every mutation would stop at the CRC check. See docs/fuzzing.md.
import Foundation
import StrataCore
import StrataLog

#if canImport(Glibc)
import Glibc
#endif

private let nowMs: Int64 = 1_700_000_000_000
private let reopenEvery = 64
private let recreateEvery = 2048
/// tools/fuzz.sh gives this target a 1 GiB tmpfs; a full disk would be a false finding here.
private let maxLogBytes = 256 << 20

/// `precondition` that keeps its message in optimized builds (tools/fuzz.sh prints it).
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String = "invariant broken",
             file: StaticString = #file, line: UInt = #line) {
    if !condition() { fatalError(message(), file: file, line: line) }
}

/// Writes batchLength and the CRC-32C the bytes need to pass the header checks.
func fixLengthAndCRC(_ bytes: inout [UInt8]) {
    guard bytes.count >= RecordBatch.headerSize, bytes[0] & 0x80 == 0 else { return }
    bytes.withUnsafeMutableBytes { p in
        p.storeBytes(of: Int32(truncatingIfNeeded: p.count - RecordBatch.logOverhead).bigEndian, toByteOffset: 8, as: Int32.self)
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(p)[RecordBatch.attributesOffset...]))
        p.storeBytes(of: crc.bigEndian, toByteOffset: RecordBatch.crcOffset, as: UInt32.self)
    }
}

private final class Harness {
    let root: String
    var config = LogConfig()
    var log: PartitionLog!
    var generation = 0
    var appends = 0

    init() {
        let base = ProcessInfo.processInfo.environment["STRATA_FUZZ_DATA"]
            ?? (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NSTemporaryDirectory())
        var template = Array((base + "/strata-fuzz-batch-XXXXXX").utf8CString)
        root = String(cString: template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
        harnessRoot = root
        atexit { if let root = harnessRoot { try? FileManager.default.removeItem(atPath: root) } }
        // Small segments and indexes so that rolls and index growth happen within a short run.
        config.segmentBytes = 4 << 20
        config.maxMessageBytes = 1_048_588
        config.segmentIndexBytes = 4096
        config.indexIntervalBytes = 512
        config.flushMode = .os
        recreate()
    }

    var dir: String { root + "/log-\(generation)" }

    func recreate() {
        if let log { try? log.close(); try? FileManager.default.removeItem(atPath: dir) }
        generation += 1
        do { log = try PartitionLog.open(directory: dir, config: config).0 } catch { fatalError("fuzz harness: open \(dir): \(error)") }
    }

    /// Closes and opens the log again: recovery must find exactly what was appended.
    func reopen() {
        let end = log.logEndOffset
        do {
            try log.close()
            log = try PartitionLog.open(directory: dir, config: config).0
        } catch {
            fatalError("fuzz harness: reopening \(dir) failed: \(error)")
        }
        require(log.logEndOffset == end, "log end \(log.logEndOffset) after reopening, \(end) before")
        let problems = log.verify()
        require(problems.isEmpty, "log does not verify after reopening: \(problems)")
    }

    func run(_ input: UnsafeRawBufferPointer) {
        var bytes = [UInt8](input)
        fixLengthAndCRC(&bytes)
        bytes.withUnsafeBytes { check($0) }
    }

    func check(_ bytes: UnsafeRawBufferPointer) {
        let batch = RecordBatch(unchecked: bytes)
        var strict = AppendPolicy()
        strict.timestampType = .logAppendTime
        strict.requireKeys = true
        strict.timestampBeforeMaxMs = 3_600_000
        strict.timestampAfterMaxMs = 3_600_000
        _ = try? batch.validateForAppend(maxBatchBytes: config.maxMessageBytes, policy: strict, nowMs: nowMs)
        let validated: ValidatedBatch
        do throws(RecordBatchError) {
            validated = try batch.validateForAppend(maxBatchBytes: config.maxMessageBytes, nowMs: nowMs)
        } catch {
            // The log must refuse it for the same reason.
            do throws(LogError) {
                try log.append(bytes)
                fatalError("the log appended a batch the validator refuses: \(error)")
            } catch {
                guard case .invalidBatch = error else { fatalError("refused batch failed otherwise: \(error)") }
            }
            return
        }
        require(validated.recordCount == Int(batch.recordCount))

        // compression.type on a topic: re-encoded, the batch must validate to the same summary.
        let codec = CompressionCodec(rawValue: Int16(bytes.count % 5))!
        do {
            let again = try RecordBatch.reencoded(bytes, codec: codec)
            let summary = try again.withUnsafeBytes { p in
                try RecordBatch(unchecked: p).validateForAppend(maxBatchBytes: Int(Int32.max), nowMs: nowMs)
            }
            require(summary.recordCount == validated.recordCount && summary.maxTimestamp == validated.maxTimestamp,
                         "re-encoding as \(codec) changed the batch: \(validated) -> \(summary)")
        } catch RecordBatchError.tooLarge {
            // Too large once re-encoded is the only acceptable failure.
        } catch {
            fatalError("a valid batch does not re-encode as \(codec): \(error)")
        }

        let info: AppendInfo
        let idempotent = batch.producerId >= 0 && batch.baseSequence >= 0
        do throws(LogError) {
            info = try log.append(bytes)
        } catch {
            // An idempotent producer's batch may break its sequence or epoch rules (Kafka's).
            if idempotent, case .outOfOrderSequence = error { return }
            if idempotent, case .staleProducerEpoch = error { return }
            fatalError("the log refused a batch that validated: \(error)")
        }
        appends += 1
        require(info.lastOffset - info.baseOffset + 1 == Int64(validated.recordCount))
        if info.duplicate {
            // A retry of one of that producer's last batches: answered with the original's offsets.
            require(idempotent, "a duplicate answer for a batch without a producer id")
            require(info.baseOffset >= 0 && info.lastOffset < log.logEndOffset, "duplicate offsets \(info) outside the log")
            return
        }
        require(info.maxTimestamp == validated.maxTimestamp)

        // Read it back: the first batch of the read is this one, intact, with the same records.
        let read: LogReadResult
        do throws(LogError) { read = try log.read(from: info.baseOffset, maxBytes: 1) } catch {
            fatalError("reading back offset \(info.baseOffset): \(error)")
        }
        guard let slice = read.slice else { fatalError("nothing read back at \(info.baseOffset)") }
        var seen = 0
        slice.forEachBatch { stored in
            guard seen == 0 else { return }
            seen += 1
            require(stored.baseOffset == info.baseOffset && stored.lastOffset == info.lastOffset)
            require(stored.maxTimestamp == validated.maxTimestamp)
            do { try stored.validate(strictRecords: true) } catch { fatalError("stored batch does not validate: \(error)") }
            var next = info.baseOffset
            do {
                try stored.forEachRecord { record in
                    require(record.offset == next, "record offset \(record.offset), expected \(next)")
                    next += 1
                }
            } catch {
                fatalError("records of a stored batch do not decode: \(error)")
            }
            require(next == info.lastOffset + 1)
            if validated.maxTimestamp >= 0 {
                let found = try? log.offset(forTimestamp: validated.maxTimestamp)
                require(found != nil, "no offset found for timestamp \(validated.maxTimestamp), which was just appended")
            }
        }
        require(seen == 1)

        if appends % recreateEvery == 0 || log.sizeInBytes > maxLogBytes { recreate() } else if appends % reopenEvery == 0 { reopen() }
    }
}

nonisolated(unsafe) private var harnessRoot: String?
nonisolated(unsafe) private var harness: Harness?

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBatchAppend(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    if harness == nil { harness = Harness() }
    harness!.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
