import NIOCore
import StrataBroker
import StrataLog

/// The pre-RecordBatch-v2 protocol versions, as Kafka 3.x served them: Produce v0-v2 and
/// Fetch v0-v3 carry message sets of magic 0/1 (converted at this edge; the log holds only
/// RecordBatch v2, see StrataLog/LegacyMessageSet.swift), and ListOffsets v0 answers with
/// "old-style" offset arrays (FetchHandler.listOffsets). RequestHandler and ProduceHandler
/// dispatch here by version; the field layouts of every version live in Messages/.
extension KafkaRequestHandler {
    // MARK: Produce v0-v2

    /// One partition of a Produce v0-v2 request: a magic 0/1 message set is validated (CRC-32 of
    /// every message, lengths, Kafka's LogValidator rules) and up-converted to one RecordBatch v2,
    /// which is then appended exactly like a v3+ batch (ProduceHandler: topic policy, acks,
    /// durability). A RecordBatch v2 (magic 2), which Kafka accepts in these versions too, is
    /// returned as sent.
    func upConverted(_ records: ByteBuffer) -> Result<ByteBuffer, LegacyMessageSetError> {
        if records.readableBytes > LegacyMessageSet.magicOffset,
           records.getInteger(at: records.readerIndex + LegacyMessageSet.magicOffset, as: Int8.self) == RecordBatch.currentMagic {
            return .success(records)
        }
        return records.withUnsafeReadableBytes { bytes in
            Result { () throws(LegacyMessageSetError) in ByteBuffer(bytes: try LegacyMessageSet.upConvert(bytes).batch) }
        }
    }

    // MARK: Fetch v0-v3

    /// Fetch v0-v3 (FetchRequest/FetchResponse carry their layouts): records are down-converted
    /// to magic 0 (v0-v1) or magic 1 (v2-v3) as Kafka 3.x does, uncompressed, starting exactly
    /// at the fetch offset. Each partition returns about partition_max_bytes of messages (the
    /// response about max_bytes), but the first partition with data always gets at least one
    /// whole message, so an old consumer never stalls on a large message (Kafka v0-v2 would send
    /// a partial message and let the client grow its fetch size).
    func legacyFetch(_ request: FetchRequest, _ v: Int16, eventLoop: EventLoop, denied: Set<String> = []) -> EventLoopFuture<ByteBuffer?> {
        let budget = request.maxBytes <= 0 ? 52_428_800 : min(Int(request.maxBytes), Self.maxFetchResponseBytes)
        let magic: Int8 = v <= 1 ? 0 : 1
        return longPoll(request, eventLoop: eventLoop, read: { self.readLegacyFetch(request, magic: magic, budget: budget, denied: denied) }) { response in
            self.delivered(request, response)
            return response.encoded(version: v, flexible: false, capacity: 64 + response.recordBytes + request.topics.count * 64)
        }
    }

    private func readLegacyFetch(_ request: FetchRequest, magic: Int8, budget: Int, denied: Set<String>) -> (FetchResponse, waitable: Bool) {
        // Kafka 3.x: a topic that disables down-conversion refuses old fetch versions.
        let refuse: (String) -> ErrorCode? = { topic in
            if denied.contains(topic) { return .topicAuthorizationFailed }
            return self.broker.topicConfig(topic)?.values["message.downconversion.enable"]?.lowercased() == "false" ? .unsupportedVersion : nil
        }
        return readFetchPartitions(request, budget: budget, refuse: refuse) { log, fp, limit, part in
            var messages: [UInt8] = []
            var from = fp.fetchOffset
            // Batches that yield no message (control batches, records compacted away) are read
            // past, so the consumer's next fetch offset always moves forward.
            while messages.isEmpty && from < part.highWatermark {
                guard let slice = try log.read(from: from, maxBytes: limit).slice else { break }
                let converted = try withExtendedLifetime(slice) {
                    try LegacyMessageSet.downConvert(slice.bytes, fromOffset: from, toMagic: magic, maxBytes: limit, into: &messages)
                }
                guard converted.messages == 0 else { break }
                guard slice.nextOffset > from else { break }
                from = slice.nextOffset
            }
            guard !messages.isEmpty else { return 0 }
            part.messageSet = messages
            return messages.count
        }
    }
}
