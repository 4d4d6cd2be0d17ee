import StrataBroker
import StrataLog

/// The one table from broker and log errors to Kafka error codes. Every error a handler can see
/// lands on a specific code; UNKNOWN_SERVER_ERROR (-1) is left for what is truly unexpected.
extension ErrorCode {
    init(_ error: RecordBatchError) {
        switch error {
        case .tooLarge: self = .messageTooLarge
        case .malformedRecord, .badRecordCount, .missingKeys: self = .invalidRecord
        case .invalidTimestamp: self = .invalidTimestamp
        case .tooShort, .lengthMismatch, .crcMismatch: self = .corruptMessage
        case .badMagic: self = .unsupportedForMessageFormat
        }
    }

    init(_ error: LogError) {
        switch error {
        case .invalidBatch(let e): self.init(e)
        case .offsetOutOfRange: self = .offsetOutOfRange
        case .invalidConfig: self = .invalidConfig
        // The partition cannot take writes or be read (failed fsync, full disk, damaged or missing
        // files, closed during shutdown): Kafka's KAFKA_STORAGE_ERROR, which clients retry.
        case .io, .readOnly, .closed, .corrupt, .locked: self = .kafkaStorageError
        case .outOfOrderSequence: self = .outOfOrderSequenceNumber
        case .staleProducerEpoch: self = .invalidProducerEpoch
        case .refused: self = .invalidTxnState
        }
    }

    init(_ error: BrokerError) {
        switch error {
        case .unknownTopic, .unknownPartition: self = .unknownTopicOrPartition
        case .topicExists: self = .topicAlreadyExists
        case .invalidTopicName: self = .invalidTopicException
        case .invalidConfig: self = .invalidConfig
        case .invalidPartitions: self = .invalidPartitions
        case .invalidRecord: self = .invalidRecord
        case .log(let e): self.init(e)
        case .metadata: self = .kafkaStorageError
        case .readOnly: self = .kafkaStorageError
        case .partitionOffline: self = .kafkaStorageError
        case .policyViolation: self = .policyViolation
        }
    }

    init(_ error: TransactionError) {
        switch error {
        case .producerFenced: self = .producerFenced
        case .invalidProducerIdMapping: self = .invalidProducerIdMapping
        case .invalidTxnState: self = .invalidTxnState
        case .concurrentTransactions: self = .concurrentTransactions
        case .invalidTimeout: self = .invalidTransactionTimeout
        case .invalidRequest: self = .invalidRequest
        }
    }

    /// A magic 0/1 message set of Produce v0-v2 that was refused.
    init(_ error: LegacyMessageSetError) {
        switch error {
        case .crcMismatch, .corrupt: self = .corruptMessage
        case .invalidRecord: self = .invalidRecord
        case .invalidTimestamp: self = .invalidTimestamp
        case .unsupportedCompression: self = .unsupportedCompressionType
        }
    }

    init(_ error: GroupError) {
        switch error {
        case .none: self = .none
        case .unknownMemberId: self = .unknownMemberId
        case .illegalGeneration: self = .illegalGeneration
        case .rebalanceInProgress: self = .rebalanceInProgress
        case .invalidSessionTimeout: self = .invalidSessionTimeout
        case .inconsistentGroupProtocol: self = .inconsistentGroupProtocol
        case .invalidGroupId: self = .invalidGroupId
        case .memberIdRequired: self = .memberIdRequired
        case .coordinatorNotAvailable: self = .coordinatorNotAvailable
        }
    }

    /// Any error a broker call threw.
    init(any error: Error) {
        switch error {
        case let e as BrokerError: self.init(e)
        case let e as TransactionError: self.init(e)
        case let e as LogError: self.init(e)
        case let e as RecordBatchError: self.init(e)
        case let e as LegacyMessageSetError: self.init(e)
        default: self = .unknownServerError
        }
    }
}
