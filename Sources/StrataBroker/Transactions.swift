import StrataCore
import StrataLog
import StrataMetadata
import Synchronization

/// Why a transactional request was refused; the Kafka layer maps each case to its error code.
public enum TransactionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A newer instance with the same transactional id took over (PRODUCER_FENCED).
    case producerFenced(String)
    /// The producer id does not belong to this transactional id (INVALID_PRODUCER_ID_MAPPING).
    case invalidProducerIdMapping(String)
    /// The request does not fit the transaction's state (INVALID_TXN_STATE).
    case invalidTxnState(String)
    /// The transaction is being completed; retry (CONCURRENT_TRANSACTIONS).
    case concurrentTransactions(String)
    /// transaction.timeout.ms outside (0, transaction.max.timeout.ms] (INVALID_TRANSACTION_TIMEOUT).
    case invalidTimeout(String)
    /// A transactional id that cannot be stored (empty, or longer than `maxTransactionalIdBytes`)
    /// or a request beyond a limit (INVALID_REQUEST).
    case invalidRequest(String)

    public var description: String {
        switch self {
        case .producerFenced(let s), .invalidProducerIdMapping(let s), .invalidTxnState(let s),
             .concurrentTransactions(let s), .invalidTimeout(let s), .invalidRequest(let s): return s
        }
    }
}

/// The transaction coordinator's state: every transactional id's record (LMDB is the durable
/// copy; this is the one the requests read), and one lock that orders every state change
/// (Kafka's coordinator is single-threaded per transactional id; Strata serialises them all:
/// each change is one LMDB commit, which serialises anyway).
public final class TransactionTable: Sendable {
    let records = Mutex<[String: TransactionRecord]>([:])
    let operations = Mutex(())
    /// transaction.max.timeout.ms (Kafka's default: 15 minutes).
    public let maxTimeoutMs: Int32
    /// transactional.id.expiration.ms: a transactional id idle this long, with no open
    /// transaction, is forgotten (Kafka's default: 7 days).
    public let idExpirationMs: Int64
    /// Aborts by timeout, completions finished after a restart, hanging transactions aborted.
    public let timedOut = Atomic<Int>(0)
    public let recovered = Atomic<Int>(0)
    public let hangingAborted = Atomic<Int>(0)

    init(maxTimeoutMs: Int32, idExpirationMs: Int64) {
        self.maxTimeoutMs = maxTimeoutMs
        self.idExpirationMs = idExpirationMs
    }

    /// A copy of every record, sorted by transactional id (for `strata inspect`, DescribeTransactions).
    public var all: [TransactionRecord] { records.withLock { Array($0.values) }.sorted { $0.transactionalId < $1.transactionalId } }
}

extension Broker {
    // MARK: Transactions (KIP-98)

    /// InitProducerId: a producer id and epoch. Without a transactional id, a fresh idempotent
    /// producer id. With one, the id's producer id and a bumped epoch, which fences every older
    /// instance; a transaction left open by one is aborted first. `producerId`/`epoch` (KIP-360,
    /// v3+) let a live producer re-initialise after the coordinator bumped its epoch.
    public func initProducerId(transactionalId: String?, transactionTimeoutMs: Int32,
                               producerId: Int64 = -1, epoch: Int16 = -1, nowMs: Int64 = wallClockMillis()) throws -> (producerId: Int64, epoch: Int16) {
        try requireWritable()
        guard let id = transactionalId, !id.isEmpty else { return (try metadata.nextProducerId(), 0) }
        // The id is an LMDB key (at most 511 bytes).
        guard id.utf8.count <= TransactionRecord.maxTransactionalIdBytes else {
            throw TransactionError.invalidRequest("transactional id is longer than \(TransactionRecord.maxTransactionalIdBytes) bytes")
        }
        guard transactionTimeoutMs > 0, transactionTimeoutMs <= transactions.maxTimeoutMs else {
            throw TransactionError.invalidTimeout("transaction.timeout.ms \(transactionTimeoutMs) must be in (0, \(transactions.maxTimeoutMs)] (transaction.max.timeout.ms)")
        }
        return try transactions.operations.withLock { _ in
            guard var record = transactions.records.withLock({ $0[id] }) else {
                let record = TransactionRecord(transactionalId: id, producerId: try metadata.nextProducerId(), epoch: 0,
                                               timeoutMs: transactionTimeoutMs, updateMs: nowMs)
                try storeTransaction(record)
                return (record.producerId, record.epoch)
            }
            if producerId >= 0 {
                guard producerId == record.producerId else {
                    throw TransactionError.invalidProducerIdMapping("producer id \(producerId) is not the one of transactional id '\(id)'")
                }
                guard epoch == record.epoch || epoch == record.lastEpoch else {
                    throw TransactionError.producerFenced("epoch \(epoch) of transactional id '\(id)' was fenced (current \(record.epoch))")
                }
            }
            let previousEpoch = record.epoch
            if record.state == .ongoing || record.state == .prepareAbort {
                // The previous instance's transaction: aborted under a higher epoch of the same
                // producer id (the markers must name the id its batches carry), which fences that
                // instance on every partition it wrote to.
                if record.state == .ongoing && record.epoch < Int16.max { record.epoch += 1 }
                record.state = .prepareAbort
                try storeTransaction(record)
                try completeTransaction(&record, nowMs: nowMs)
            } else if record.state == .prepareCommit {
                try completeTransaction(&record, nowMs: nowMs)
            }
            bumpEpoch(&record)  // at the end of the epoch range: a new producer id, after the markers
            record.lastEpoch = previousEpoch
            record.timeoutMs = transactionTimeoutMs
            record.state = .empty
            record.partitions = []
            record.groups = []
            record.pendingOffsets = []
            record.startMs = -1
            record.updateMs = nowMs
            try storeTransaction(record)
            return (record.producerId, record.epoch)
        }
    }

    /// The next epoch; at the end of the epoch range, a new producer id from epoch 0 (Kafka).
    private func bumpEpoch(_ record: inout TransactionRecord) {
        if record.epoch >= Int16.max - 1 {
            if let fresh = try? metadata.nextProducerId() {
                record.producerId = fresh
                record.epoch = 0
            }
        } else {
            record.epoch += 1
        }
    }

    /// The record of `id` if `producerId`/`epoch` are its current ones.
    private func currentRecord(_ id: String, producerId: Int64, epoch: Int16) throws -> TransactionRecord {
        guard let record = transactions.records.withLock({ $0[id] }) else {
            throw TransactionError.invalidProducerIdMapping("transactional id '\(id)' is unknown: call InitProducerId first")
        }
        guard record.producerId == producerId else {
            throw TransactionError.invalidProducerIdMapping("producer id \(producerId) is not the one of transactional id '\(id)' (\(record.producerId))")
        }
        guard epoch == record.epoch else {
            throw TransactionError.producerFenced("epoch \(epoch) of transactional id '\(id)' is fenced by epoch \(record.epoch)")
        }
        return record
    }

    /// AddPartitionsToTxn: the partitions this transaction will write to (each must exist);
    /// starts the transaction (and its timeout) if none is open. Returns an error per partition.
    public func addPartitionsToTransaction(_ id: String, producerId: Int64, epoch: Int16, partitions: [TopicPartitionName],
                                           nowMs: Int64 = wallClockMillis()) throws -> [TopicPartitionName: Error] {
        try requireWritable()
        return try transactions.operations.withLock { _ in
            var record = try currentRecord(id, producerId: producerId, epoch: epoch)
            if record.state == .prepareCommit || record.state == .prepareAbort {
                throw TransactionError.concurrentTransactions("transaction of '\(id)' is completing")
            }
            guard partitions.count <= TransactionRecord.maxPartitions else {
                throw TransactionError.invalidRequest("a transaction may write to at most \(TransactionRecord.maxPartitions) partitions")
            }
            var failures: [TopicPartitionName: Error] = [:]
            for p in partitions {
                do { _ = try log(topic: p.topic, partition: p.partition) } catch { failures[p] = error }
            }
            guard failures.isEmpty else { return failures }
            if record.state != .ongoing {
                record.state = .ongoing
                record.startMs = nowMs
                record.partitions = []
                record.groups = []
                record.pendingOffsets = []
            }
            var set = Set(record.partitions)
            let before = set.count
            set.formUnion(partitions)
            guard set.count <= TransactionRecord.maxPartitions else {
                throw TransactionError.invalidTxnState("a transaction may write to at most \(TransactionRecord.maxPartitions) partitions")
            }
            if set.count != before || record.updateMs < record.startMs || record.partitions.isEmpty {
                record.partitions = set.sorted()
                record.updateMs = nowMs
                remember(record)
            }
            return [:]
        }
    }

    /// AddOffsetsToTxn: the transaction will commit offsets of `group`.
    public func addOffsetsToTransaction(_ id: String, producerId: Int64, epoch: Int16, group: String, nowMs: Int64 = wallClockMillis()) throws {
        try requireWritable()
        guard !group.isEmpty, group.utf8.count <= 255 else { throw BrokerError.invalidPartitions("group id must be 1-255 bytes") }
        try transactions.operations.withLock { _ in
            var record = try currentRecord(id, producerId: producerId, epoch: epoch)
            if record.state == .prepareCommit || record.state == .prepareAbort {
                throw TransactionError.concurrentTransactions("transaction of '\(id)' is completing")
            }
            if record.state != .ongoing {
                record.state = .ongoing
                record.startMs = nowMs
                record.partitions = []
                record.groups = []
                record.pendingOffsets = []
            }
            guard !record.groups.contains(group) else { return }
            guard record.groups.count < TransactionRecord.maxGroups else {
                throw TransactionError.invalidRequest("a transaction may commit offsets of at most \(TransactionRecord.maxGroups) groups")
            }
            record.groups.append(group)
            record.updateMs = nowMs
            remember(record)
        }
    }

    /// TxnOffsetCommit: offsets committed for `group` if and when the transaction commits.
    public func commitTransactionalOffsets(_ id: String, producerId: Int64, epoch: Int16, group: String,
                                           offsets: [(topic: String, partition: Int32, offset: Int64, metadata: String)],
                                           nowMs: Int64 = wallClockMillis()) throws {
        try requireWritable()
        try transactions.operations.withLock { _ in
            var record = try currentRecord(id, producerId: producerId, epoch: epoch)
            guard record.state == .ongoing, record.groups.contains(group) else {
                throw TransactionError.invalidTxnState("TxnOffsetCommit for group '\(group)' needs AddOffsetsToTxn in an open transaction of '\(id)'")
            }
            // Only partitions that exist: the offsets become LMDB keys when the transaction commits,
            // and a commit must not be able to fail on a name a client made up.
            for o in offsets where partitionCount(o.topic).map({ o.partition < 0 || o.partition >= $0 }) ?? true {
                throw BrokerError.unknownPartition(topic: o.topic, partition: o.partition)
            }
            for o in offsets {
                if let i = record.pendingOffsets.firstIndex(where: { $0.group == group && $0.topic == o.topic && $0.partition == o.partition }) {
                    record.pendingOffsets[i].offset = o.offset
                    record.pendingOffsets[i].metadata = o.metadata
                } else {
                    record.pendingOffsets.append(PendingOffset(group: group, topic: o.topic, partition: o.partition, offset: o.offset, metadata: o.metadata))
                }
            }
            guard record.pendingOffsets.reduce(0, { $0 + $1.metadata.utf8.count }) <= 1 << 20 else {
                throw TransactionError.invalidRequest("the offsets' metadata of one transaction may total at most 1 MiB")
            }
            guard record.pendingOffsets.count <= TransactionRecord.maxPendingOffsets else {
                throw TransactionError.invalidTxnState("a transaction may commit at most \(TransactionRecord.maxPendingOffsets) offsets")
            }
            record.updateMs = nowMs
            remember(record)
        }
    }

    /// EndTxn: commits or aborts. The decision is stored first (PrepareCommit/PrepareAbort), then
    /// a marker is written to every partition of the transaction and the offsets are applied, then
    /// the completion is stored. A crash in between is finished at the next open. Retrying an
    /// EndTxn that completed answers success.
    public func endTransaction(_ id: String, producerId: Int64, epoch: Int16, commit: Bool, nowMs: Int64 = wallClockMillis()) throws {
        try requireWritable()
        try transactions.operations.withLock { _ in
            var record = try currentRecord(id, producerId: producerId, epoch: epoch)
            switch (record.state, commit) {
            case (.ongoing, _):
                record.state = commit ? .prepareCommit : .prepareAbort
                record.updateMs = nowMs
                try storeTransaction(record)
            case (.prepareCommit, true), (.prepareAbort, false):
                break  // a retry after a failed completion: finish it
            case (.completeCommit, true), (.completeAbort, false):
                return
            case (.empty, false):
                return  // nothing was written: nothing to abort
            default:
                throw TransactionError.invalidTxnState("cannot \(commit ? "commit" : "abort") the transaction of '\(id)' in state \(record.state)")
            }
            do {
                try completeTransaction(&record, nowMs: nowMs)
            } catch {
                // The decision stands; the client's retry (or the background tick) finishes it.
                throw TransactionError.concurrentTransactions("transaction of '\(id)' decided but not yet completed: \(error)")
            }
        }
    }

    /// Writes the markers of a decided transaction and applies its offsets; stores the completion.
    /// Idempotent: partitions that already have their marker are skipped. Caller holds `operations`.
    private func completeTransaction(_ record: inout TransactionRecord, nowMs: Int64) throws {
        let commit = record.state == .prepareCommit
        precondition(commit || record.state == .prepareAbort)
        var durable: [(PartitionLog, Int64)] = []
        for p in record.partitions {
            let found: PartitionLog?
            do throws(BrokerError) { found = try self.log(topic: p.topic, partition: p.partition) } catch {
                if case .unknownTopic = error { found = nil } else if case .unknownPartition = error { found = nil } else { throw error }
            }
            guard let log = found else { continue }  // deleted since: nothing left to mark
            _ = try appendMarker(log, topic: p.topic, partition: p.partition, producerId: record.producerId, epoch: record.epoch,
                                 type: commit ? .commit : .abort, nowMs: nowMs)
            durable.append((log, log.logEndOffset))
        }
        // Every marker durable before the completion is stored, whatever the topic's flush.mode
        // (those written by an earlier, failed attempt too): a stored completion with a marker lost
        // in an OS crash would have its data aborted as a hanging transaction.
        for (log, offset) in durable { try log.flush(upTo: offset) }
        if commit && !record.pendingOffsets.isEmpty {
            for (group, offsets) in Dictionary(grouping: record.pendingOffsets, by: \.group) {
                for (metadataText, sameMetadata) in Dictionary(grouping: offsets, by: \.metadata) {
                    try commitOffsets(group: group, offsets: sameMetadata.map { ($0.topic, $0.partition, $0.offset) }, metadata: metadataText)
                }
            }
        }
        record.state = commit ? .completeCommit : .completeAbort
        record.pendingOffsets = []
        record.updateMs = nowMs
        try storeTransaction(record)
    }

    private func appendMarker(_ log: PartitionLog, topic: String, partition: Int32, producerId: Int64, epoch: Int16,
                              type: ControlRecordType, nowMs: Int64) throws -> Int64? {
        let written: Int64?
        do throws(LogError) {
            written = try log.appendTransactionMarker(producerId: producerId, epoch: epoch, type: type, nowMs: nowMs)
        } catch {
            throw BrokerError.log(error)
        }
        if written != nil { notifyAppend(topic: topic, partition: partition) }
        return written
    }

    /// A change that need not survive a crash: the partitions, groups and offsets of an open
    /// transaction. After a crash its partitions hold an open transaction that no stored record
    /// covers, and the hanging-transaction check aborts it at open — as the transaction must end,
    /// since its producer cannot commit it any more (its EndTxn finds no open transaction). The
    /// decision (PrepareCommit/PrepareAbort) stores the whole record, offsets included, before any
    /// marker. This keeps a transaction at two LMDB syncs (decision, completion) whatever the
    /// number of partitions it adds one by one.
    private func remember(_ record: TransactionRecord) {
        transactions.records.withLock { $0[record.transactionalId] = record }
    }

    /// Stores every record as it is in memory (a clean close: open transactions then survive it).
    func storeAllTransactions() {
        for record in transactions.all where record.state == .ongoing { try? metadata.putTransaction(record) }
    }

    private func storeTransaction(_ record: TransactionRecord) throws {
        try metadata.putTransaction(record)
        transactions.records.withLock { $0[record.transactionalId] = record }
    }

    /// Produce of a transactional batch: the producer must be the current instance of an open
    /// transaction that added this partition (Kafka's KIP-890 verification), so no batch lands
    /// outside a transaction that will end with a marker.
    public func verifyTransactionalAppend(transactionalId: String?, producerId: Int64, epoch: Int16, topic: String, partition: Int32) throws {
        guard let id = transactionalId else {
            throw TransactionError.invalidTxnState("a transactional batch needs the produce request's transactional id")
        }
        guard let record = transactions.records.withLock({ $0[id] }) else {
            throw TransactionError.invalidProducerIdMapping("transactional id '\(id)' is unknown")
        }
        guard record.producerId == producerId else {
            throw TransactionError.invalidProducerIdMapping("producer id \(producerId) is not the one of transactional id '\(id)'")
        }
        guard epoch == record.epoch else { throw LogError.staleProducerEpoch("epoch \(epoch) of transactional id '\(id)' is not its current epoch \(record.epoch)") }
        guard record.state == .ongoing, record.partitions.contains(TopicPartitionName(topic: topic, partition: partition)) else {
            throw TransactionError.invalidTxnState("\(topic)-\(partition) was not added to an open transaction of '\(id)' (AddPartitionsToTxn)")
        }
    }

    /// Whether a transaction has offsets pending for this group partition (OffsetFetch with
    /// require_stable answers UNSTABLE_OFFSET_COMMIT until it ends).
    public func hasPendingTransactionalOffset(group: String, topic: String, partition: Int32) -> Bool {
        transactions.records.withLock { records in
            records.values.contains { r in
                (r.state == .ongoing || r.state == .prepareCommit)
                    && r.pendingOffsets.contains { $0.group == group && $0.topic == topic && $0.partition == partition }
            }
        }
    }

    // MARK: Background work and recovery

    /// Loads the records and finishes what a crash interrupted: decided transactions get their
    /// markers; transactions still open keep their timeout (from their stored start); partitions
    /// holding an open transaction no record accounts for are aborted (`abortHangingTransactions`).
    func recoverTransactions() throws -> [String] {
        var warnings: [String] = []
        let (records, undecodable) = try metadata.transactions()
        for id in undecodable { warnings.append("transaction record '\(id)' is unreadable; ignored") }
        transactions.records.withLock { table in for r in records { table[r.transactionalId] = r } }
        transactions.operations.withLock { _ in
            for var record in records where record.state == .prepareCommit || record.state == .prepareAbort {
                do {
                    try completeTransaction(&record, nowMs: wallClockMillis())
                    transactions.recovered.add(1, ordering: .relaxed)
                } catch {
                    warnings.append("transaction '\(record.transactionalId)' not completed at open (retried every second): \(error)")
                }
            }
        }
        warnings += abortHangingTransactions()
        return warnings
    }

    /// One tick of the transaction coordinator: open transactions past their timeout are aborted
    /// (and their producer fenced by an epoch bump, as Kafka does); decided ones whose markers
    /// failed are retried; idle transactional ids past `transactional.id.expiration.ms` forgotten.
    public func tickTransactions(nowMs: Int64 = wallClockMillis()) {
        let due = transactions.records.withLock { table in
            table.values.filter { r in
                switch r.state {
                case .ongoing: return nowMs.saturatingSubtract(r.startMs) > Int64(r.timeoutMs)
                case .prepareCommit, .prepareAbort: return true
                default: return nowMs.saturatingSubtract(r.updateMs) > transactions.idExpirationMs
                }
            }
        }
        guard !due.isEmpty, !isReadOnly else { return }
        transactions.operations.withLock { _ in
            for stale in due {
                guard var record = transactions.records.withLock({ $0[stale.transactionalId] }), record.state == stale.state, record.epoch == stale.epoch else { continue }
                do {
                    switch record.state {
                    case .ongoing:
                        // A higher epoch of the same id (markers must name the id the batches
                        // carry); at Int16.max the epoch stays and the next InitProducerId rotates.
                        let previous = record.epoch
                        if record.epoch < Int16.max { record.epoch += 1 }
                        record.lastEpoch = previous
                        record.state = .prepareAbort
                        try storeTransaction(record)
                        try completeTransaction(&record, nowMs: nowMs)
                        transactions.timedOut.add(1, ordering: .relaxed)
                    case .prepareCommit, .prepareAbort:
                        try completeTransaction(&record, nowMs: nowMs)
                    default:
                        try metadata.deleteTransaction(record.transactionalId)
                        transactions.records.withLock { $0[record.transactionalId] = nil }
                    }
                } catch {
                    // Tried again at the next tick.
                }
            }
        }
    }

    /// Partitions with an open transaction that no ongoing or decided record covers (a producer
    /// whose record was lost, or a batch that raced its transaction's end) would hold back the
    /// last stable offset forever: each gets an abort marker. Runs at open and periodically.
    @discardableResult
    public func abortHangingTransactions() -> [String] {
        guard !isReadOnly else { return [] }
        var aborted: [String] = []
        var open: [(topic: String, partition: Int32, log: PartitionLog, producerId: Int64)] = []
        forEachPartition { topic, partition, log in
            guard let log else { return }
            for t in log.openTransactions { open.append((topic, partition, log, t.producerId)) }
        }
        guard !open.isEmpty else { return [] }
        transactions.operations.withLock { _ in
            let covered = transactions.records.withLock { table -> Set<String> in
                var set = Set<String>()
                for r in table.values where r.state == .ongoing || r.state == .prepareCommit || r.state == .prepareAbort {
                    for p in r.partitions { set.insert("\(r.producerId)/\(p.topic)/\(p.partition)") }
                }
                return set
            }
            for o in open where !covered.contains("\(o.producerId)/\(o.topic)/\(o.partition)") {
                let epoch = o.log.producerStateSnapshot.producers[o.producerId]?.epoch ?? 0
                if (try? appendMarker(o.log, topic: o.topic, partition: o.partition, producerId: o.producerId, epoch: epoch,
                                      type: .abort, nowMs: wallClockMillis())) != nil {
                    transactions.hangingAborted.add(1, ordering: .relaxed)
                    aborted.append("aborted a hanging transaction of producer \(o.producerId) on \(o.topic)-\(o.partition)")
                }
            }
        }
        return aborted
    }
}
