import Testing
@testable import StrataLog

/// Random sequences of append / read / roll / time lookup / flush / clean reopen / crash-reopen,
/// checked after every step against a plain array of records. A crash here is the process dying
/// (the object dropped without close): the page cache keeps every append, so nothing may be lost
/// in any flush mode.
@Suite struct LogModelPropertyTests {
    struct ModelRecord {
        let value: [UInt8]
        let timestamp: Int64
    }

    @Test(arguments: [UInt64(1), 2, 3, 4, 5, 6, 7, 8])
    func randomOperationsAgreeWithTheModel(seed: UInt64) throws {
        var rng = SeededRandom(seed: seed)
        let dir = TempDirectory("strata-prop")
        var config = LogConfig.small(segmentBytes: Int.random(in: 4...24, using: &rng) * 1024,
                                     flushMode: FlushMode.allCases.randomElement(using: &rng)!,
                                     indexIntervalBytes: [0, 100, 512, 4096].randomElement(using: &rng)!)
        config.segmentIndexBytes = [24, 120, 4096].randomElement(using: &rng)!
        config.checkpointIntervalMs = 0
        var model: [ModelRecord] = []
        var log: PartitionLog? = try PartitionLog.open(directory: dir.path, config: config).0
        var clock: Int64 = 1_000_000

        for step in 0..<600 {
            let context = "seed \(seed) step \(step)"
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<50:  // append a batch
                let count = Int.random(in: 1...12, using: &rng)
                var records: [ProducerRecord] = []
                for _ in 0..<count {
                    clock += Int64.random(in: -20...50, using: &rng)  // timestamps may go backwards
                    let value = (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 32...126, using: &rng) }
                    records.append(ProducerRecord(key: nil, value: value, timestamp: clock))
                }
                let info = try log!.append(RecordBatchBuilder.build(records))
                #expect(info.baseOffset == Int64(model.count), "\(context)")
                model += records.map { ModelRecord(value: $0.value!, timestamp: $0.timestamp) }
            case 50..<70:  // read from a random offset
                guard !model.isEmpty else { continue }
                let from = Int.random(in: 0...model.count, using: &rng)
                let result = try log!.read(from: Int64(from), maxBytes: Int.random(in: 1...5000, using: &rng))
                if from == model.count {
                    #expect(result.isEmpty, "\(context)")
                } else {
                    let slice = try #require(result.slice, "\(context)")
                    var sawFrom = false
                    try slice.forEachBatch { batch in
                        try batch.forEachRecord { r in
                            let m = model[Int(r.offset)]
                            #expect(Array(r.value!) == m.value && r.timestamp == m.timestamp, "\(context) offset \(r.offset)")
                            if r.offset == Int64(from) { sawFrom = true }
                        }
                    }
                    #expect(sawFrom, "\(context): read from \(from) must include it")
                    #expect(result.nextOffset > Int64(from), "\(context)")
                }
            case 70..<80:  // time lookup
                guard !model.isEmpty else { continue }
                let target = clock - Int64.random(in: -10...600, using: &rng)
                let expected = model.firstIndex { $0.timestamp >= target }.map(Int64.init)
                #expect(try log!.offset(forTimestamp: target) == expected, "\(context) ts \(target)")
            case 80..<85:
                try log!.roll()
            case 85..<90:
                try log!.flush()
                #expect(log!.recoveryPoint == Int64(model.count), "\(context)")
            case 90..<95:  // clean close and reopen
                try log!.close()
                log = nil
                let (reopened, report) = try PartitionLog.open(directory: dir.path, config: config, cleanShutdown: true)
                #expect(report.segmentsRecovered == 0, "\(context)")
                log = reopened
            default:  // crash and reopen
                log = nil
                log = try PartitionLog.open(directory: dir.path, config: config, cleanShutdown: false).0
            }
            #expect(log!.logEndOffset == Int64(model.count), "\(context): log end")
        }
        let all = try readAll(log!, maxBytes: 3000)
        #expect(all.count == model.count)
        for (offset, value) in all where value != model[Int(offset)].value {
            Issue.record("seed \(seed): offset \(offset) differs at the end")
            break
        }
        #expect(log!.verify().isEmpty)
        try log!.close()
    }
}
