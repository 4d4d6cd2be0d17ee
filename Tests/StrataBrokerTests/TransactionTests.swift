import Foundation
import Testing
import StrataCore
@testable import StrataBroker
@testable import StrataLog
@testable import StrataMetadata

private func txnBatch(producerId: Int64, epoch: Int16, sequence: Int32, values: [String]) -> [UInt8] {
    var batch = RecordBatchBuilder.build(values.enumerated().map { i, v in
        ProducerRecord(key: Array("k\(i)".utf8), value: Array(v.utf8), timestamp: wallClockMillis())
    }, producerId: producerId, producerEpoch: epoch, baseSequence: sequence)
    batch.withUnsafeMutableBytes { p in
        p.storeBytes(of: Int16(0x10).bigEndian, toByteOffset: RecordBatch.attributesOffset, as: Int16.self)
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[RecordBatch.attributesOffset...]))
        p.storeBytes(of: crc.bigEndian, toByteOffset: RecordBatch.crcOffset, as: UInt32.self)
    }
    return batch
}

private func openBroker(_ dir: TempDir) throws -> Broker {
    var options = Broker.Options()
    options.transactionCheckIntervalMs = 0  // ticks are driven by the tests
    options.retentionCheckIntervalMs = 0
    options.cleanerBackoffMs = 0
    options.offsetsTopicPartitions = 0
    return try Broker.open(dataDirectory: dir.path, options: options)
}

private func committed(_ broker: Broker, _ topic: String, partitions: Int32) async throws -> [String] {
    var out: [String] = []
    for p in 0..<partitions {
        let log = try broker.log(topic: topic, partition: p)
        var offset = log.logStartOffset
        while true {
            let r = try await broker.fetch(topic: topic, partition: p, offset: offset, committedOnly: true)
            guard let slice = r.slice else { break }
            let states = log.producerStateSnapshot
            out += try Broker.records(in: slice, topic: topic, partition: p, from: offset, aborted: states).map { String(decoding: $0.value!, as: UTF8.self) }
            offset = r.nextOffset
        }
    }
    return out.sorted()
}

private func append(_ broker: Broker, _ topic: String, _ p: Int32, _ batch: [UInt8], txn: String?) throws -> AppendInfo {
    try batch.withUnsafeBytes { try broker.appendBatch(topic: topic, partition: p, batch: $0, transactionalId: txn) }
}

@Suite struct TransactionTests {
    @Test func commitAndAbortWithOffsets() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("t", partitions: 2)
        try broker.createTopic("in", partitions: 1)
        let (pid, epoch) = try broker.initProducerId(transactionalId: "app", transactionTimeoutMs: 60_000)
        let parts = [TopicPartitionName(topic: "t", partition: 0), TopicPartitionName(topic: "t", partition: 1)]
        // A transaction that commits, with the group offsets it carries.
        #expect(try broker.addPartitionsToTransaction("app", producerId: pid, epoch: epoch, partitions: parts).isEmpty)
        _ = try append(broker, "t", 0, txnBatch(producerId: pid, epoch: epoch, sequence: 0, values: ["c1", "c2"]), txn: "app")
        _ = try append(broker, "t", 1, txnBatch(producerId: pid, epoch: epoch, sequence: 0, values: ["c3"]), txn: "app")
        try broker.addOffsetsToTransaction("app", producerId: pid, epoch: epoch, group: "g")
        try broker.commitTransactionalOffsets("app", producerId: pid, epoch: epoch, group: "g", offsets: [("in", 0, 42, "m")])
        #expect(broker.hasPendingTransactionalOffset(group: "g", topic: "in", partition: 0))
        #expect(try broker.committedOffset(group: "g", topic: "in", partition: 0) == nil)
        #expect(try await committed(broker, "t", partitions: 2).isEmpty)  // open: nothing is stable yet
        try broker.endTransaction("app", producerId: pid, epoch: epoch, commit: true)
        try broker.endTransaction("app", producerId: pid, epoch: epoch, commit: true)  // a retry answers success
        #expect(try broker.committedOffset(group: "g", topic: "in", partition: 0) == 42)
        #expect(!broker.hasPendingTransactionalOffset(group: "g", topic: "in", partition: 0))
        // A transaction that aborts: neither its records nor its offsets count.
        _ = try broker.addPartitionsToTransaction("app", producerId: pid, epoch: epoch, partitions: [parts[0]])
        _ = try append(broker, "t", 0, txnBatch(producerId: pid, epoch: epoch, sequence: 2, values: ["a1", "a2"]), txn: "app")
        try broker.addOffsetsToTransaction("app", producerId: pid, epoch: epoch, group: "g")
        try broker.commitTransactionalOffsets("app", producerId: pid, epoch: epoch, group: "g", offsets: [("in", 0, 99, "")])
        try broker.endTransaction("app", producerId: pid, epoch: epoch, commit: false)
        #expect(try broker.committedOffset(group: "g", topic: "in", partition: 0) == 42)
        #expect(try await committed(broker, "t", partitions: 2) == ["c1", "c2", "c3"])
        #expect(throws: TransactionError.self) { try broker.endTransaction("app", producerId: pid, epoch: epoch, commit: true) }
        // Offsets only for partitions that exist (they become LMDB keys at commit).
        _ = try broker.addPartitionsToTransaction("app", producerId: pid, epoch: epoch, partitions: [parts[0]])
        try broker.addOffsetsToTransaction("app", producerId: pid, epoch: epoch, group: "g")
        #expect(throws: BrokerError.self) {
            try broker.commitTransactionalOffsets("app", producerId: pid, epoch: epoch, group: "g",
                                                  offsets: [(String(repeating: "x", count: 2000), 0, 1, "")])
        }
        try broker.endTransaction("app", producerId: pid, epoch: epoch, commit: false)
        try broker.close()
    }

    @Test func batchesOutsideAnOpenTransactionAreRefused() throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("t", partitions: 2)
        let (pid, epoch) = try broker.initProducerId(transactionalId: "x", transactionTimeoutMs: 60_000)
        #expect(throws: TransactionError.self) { try append(broker, "t", 0, txnBatch(producerId: pid, epoch: epoch, sequence: 0, values: ["v"]), txn: "x") }
        _ = try broker.addPartitionsToTransaction("x", producerId: pid, epoch: epoch, partitions: [.init(topic: "t", partition: 0)])
        #expect(throws: TransactionError.self) { try append(broker, "t", 1, txnBatch(producerId: pid, epoch: epoch, sequence: 0, values: ["v"]), txn: "x") }
        #expect(throws: TransactionError.self) { try append(broker, "t", 0, txnBatch(producerId: pid, epoch: epoch, sequence: 0, values: ["v"]), txn: nil) }
        #expect(throws: TransactionError.self) { try append(broker, "t", 0, txnBatch(producerId: pid + 1, epoch: epoch, sequence: 0, values: ["v"]), txn: "x") }
        #expect(try broker.log(topic: "t", partition: 0).logEndOffset == 0)
        // Unknown partitions are named; nothing is added.
        let failures = try broker.addPartitionsToTransaction("x", producerId: pid, epoch: epoch, partitions: [.init(topic: "t", partition: 9)])
        #expect(failures.count == 1)
        #expect(throws: TransactionError.self) { try broker.initProducerId(transactionalId: "x", transactionTimeoutMs: 0) }
        // Above transaction.max.timeout.ms (15 minutes by default).
        #expect(throws: TransactionError.invalidTimeout("transaction.timeout.ms 900001 must be in (0, 900000] (transaction.max.timeout.ms)")) {
            try broker.initProducerId(transactionalId: "x", transactionTimeoutMs: 900_001)
        }
        try broker.close()
    }

    @Test func aNewInstanceFencesTheOldAndAbortsItsTransaction() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("t", partitions: 1)
        let (pid, old) = try broker.initProducerId(transactionalId: "app", transactionTimeoutMs: 60_000)
        _ = try broker.addPartitionsToTransaction("app", producerId: pid, epoch: old, partitions: [.init(topic: "t", partition: 0)])
        _ = try append(broker, "t", 0, txnBatch(producerId: pid, epoch: old, sequence: 0, values: ["zombie"]), txn: "app")
        let (pid2, new) = try broker.initProducerId(transactionalId: "app", transactionTimeoutMs: 60_000)
        #expect(pid2 == pid && new > old)
        #expect(try broker.log(topic: "t", partition: 0).lastStableOffset == broker.log(topic: "t", partition: 0).logEndOffset)
        #expect(throws: TransactionError.producerFenced("epoch 0 of transactional id 'app' is fenced by epoch \(new)")) {
            try broker.endTransaction("app", producerId: pid, epoch: old, commit: true)
        }
        #expect(throws: TransactionError.self) {
            try broker.addPartitionsToTransaction("app", producerId: pid, epoch: old, partitions: [.init(topic: "t", partition: 0)])
        }
        _ = try broker.addPartitionsToTransaction("app", producerId: pid, epoch: new, partitions: [.init(topic: "t", partition: 0)])
        // The zombie's late batch is refused on the partition too.
        #expect(throws: LogError.self) { try append(broker, "t", 0, txnBatch(producerId: pid, epoch: old, sequence: 1, values: ["late"]), txn: "app") }
        _ = try append(broker, "t", 0, txnBatch(producerId: pid, epoch: new, sequence: 0, values: ["fresh"]), txn: "app")
        try broker.endTransaction("app", producerId: pid, epoch: new, commit: true)
        #expect(try await committed(broker, "t", partitions: 1) == ["fresh"])
        try broker.close()
    }

    @Test func openTransactionsAbortAfterTheirTimeout() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("t", partitions: 1)
        let (pid, epoch) = try broker.initProducerId(transactionalId: "slow", transactionTimeoutMs: 1000)
        _ = try broker.addPartitionsToTransaction("slow", producerId: pid, epoch: epoch, partitions: [.init(topic: "t", partition: 0)])
        _ = try append(broker, "t", 0, txnBatch(producerId: pid, epoch: epoch, sequence: 0, values: ["never"]), txn: "slow")
        broker.tickTransactions()
        #expect(try broker.log(topic: "t", partition: 0).lastStableOffset == 0)
        broker.tickTransactions(nowMs: wallClockMillis() + 2000)
        let log = try broker.log(topic: "t", partition: 0)
        #expect(log.lastStableOffset == log.logEndOffset)
        #expect(broker.transactions.timedOut.load(ordering: .relaxed) == 1)
        #expect(broker.transactions.all.first?.epoch == epoch + 1)
        #expect(throws: TransactionError.self) { try broker.endTransaction("slow", producerId: pid, epoch: epoch, commit: true) }
        #expect(try await committed(broker, "t", partitions: 1).isEmpty)
        try broker.close()
    }

    /// A crash after the decision (PrepareCommit stored) but before the markers: the reopened
    /// broker writes them and applies the offsets.
    @Test func aDecidedTransactionIsCompletedAtOpen() async throws {
        let dir = TempDir()
        var broker = try openBroker(dir)
        try broker.createTopic("t", partitions: 1)
        try broker.createTopic("in", partitions: 1)
        let (pid, epoch) = try broker.initProducerId(transactionalId: "app", transactionTimeoutMs: 60_000)
        _ = try broker.addPartitionsToTransaction("app", producerId: pid, epoch: epoch, partitions: [.init(topic: "t", partition: 0)])
        _ = try append(broker, "t", 0, txnBatch(producerId: pid, epoch: epoch, sequence: 0, values: ["v1", "v2"]), txn: "app")
        try broker.addOffsetsToTransaction("app", producerId: pid, epoch: epoch, group: "g")
        try broker.commitTransactionalOffsets("app", producerId: pid, epoch: epoch, group: "g", offsets: [("in", 0, 7, "")])
        var record = broker.transactions.all[0]
        record.state = .prepareCommit
        try broker.metadata.putTransaction(record)  // what EndTxn stores before the markers
        broker.transactions.records.withLock { $0[record.transactionalId] = record }
        try broker.close()
        broker = try openBroker(dir)
        let log = try broker.log(topic: "t", partition: 0)
        #expect(log.lastStableOffset == log.logEndOffset)
        #expect(broker.transactions.all[0].state == .completeCommit)
        #expect(try broker.committedOffset(group: "g", topic: "in", partition: 0) == 7)
        #expect(try await committed(broker, "t", partitions: 1) == ["v1", "v2"])
        try broker.close()
    }

    /// An open transaction on a partition that no coordinator record covers (its batch was
    /// written past the coordinator) is aborted at open, so the last stable offset moves on.
    @Test func hangingTransactionsAreAborted() async throws {
        let dir = TempDir()
        var broker = try openBroker(dir)
        try broker.createTopic("t", partitions: 1)
        try broker.log(topic: "t", partition: 0).append(txnBatch(producerId: 4242, epoch: 3, sequence: 0, values: ["orphan"]))
        _ = try broker.produce(topic: "t", records: [ProducerRecord(value: Array("plain".utf8), timestamp: wallClockMillis())], partition: 0)
        #expect(try broker.log(topic: "t", partition: 0).lastStableOffset == 0)
        try broker.close()
        broker = try openBroker(dir)
        let log = try broker.log(topic: "t", partition: 0)
        #expect(log.lastStableOffset == log.logEndOffset)
        #expect(broker.transactions.hangingAborted.load(ordering: .relaxed) == 1)
        #expect(try await committed(broker, "t", partitions: 1) == ["plain"])
        try broker.close()
    }

    /// Idempotent producers through the broker: a retry after a restart is answered with the
    /// original offsets and appends nothing.
    @Test func idempotentRetryAfterRestartIsNotAppendedTwice() throws {
        let dir = TempDir()
        var broker = try openBroker(dir)
        try broker.createTopic("t", partitions: 1)
        let (pid, _) = try broker.initProducerId(transactionalId: nil, transactionTimeoutMs: 60_000)
        let batch = RecordBatchBuilder.build([ProducerRecord(value: Array("once".utf8), timestamp: wallClockMillis())],
                                             producerId: pid, producerEpoch: 0, baseSequence: 0)
        let first = try append(broker, "t", 0, batch, txn: nil)
        try broker.close()
        broker = try openBroker(dir)
        let retry = try append(broker, "t", 0, batch, txn: nil)
        #expect(retry.duplicate && retry.baseOffset == first.baseOffset)
        #expect(try broker.log(topic: "t", partition: 0).logEndOffset == 1)
        try broker.close()
    }
}
