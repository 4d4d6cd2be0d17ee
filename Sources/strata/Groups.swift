#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import StrataBroker
import StrataCore
import StrataKafka
import StrataLog
import StrataOps

/// `strata groups`: consumer groups, their lag in records and seconds, and offset resets, on a
/// data directory or (`--bootstrap`) through a running server, as kafka-consumer-groups does.
struct Groups: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "groups",
        abstract: "List, describe, reset and delete consumer groups (lag in records and seconds).",
        subcommands: [List.self, Describe.self, ResetOffsets.self, Delete.self])

    struct Target: ParsableArguments {
        @OptionGroup var options: DataOptions
        @Option(help: "Work through a running server at HOST:PORT (Kafka protocol) instead of the data directory.") var bootstrap: String?
    }

    enum Format: String, ExpressibleByArgument { case table, json }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list")
        @OptionGroup var target: Target
        @Option(help: "table or json (one object per group).") var format: Format = .table

        func run() throws {
            var rows: [(name: String, state: String, members: Int)] = []
            if let bootstrap = target.bootstrap {
                let client = try Topics.client(bootstrap)
                for g in try client.listGroups().sorted(by: { $0.group < $1.group }) {
                    let info = try client.describeGroup(g.group)
                    rows.append((g.group, info.state, info.members.count))
                }
            } else {
                let broker = try target.options.openReadOnly()
                // Members live in the running server's memory; the data directory holds commits.
                rows = try broker.groupNames().map { ($0, "Empty", 0) }
            }
            switch format {
            case .json:
                for r in rows { print("{\"group\":\(jsonQuote(r.name)),\"state\":\(jsonQuote(r.state)),\"members\":\(r.members)}") }
            case .table:
                printTable(["GROUP", "STATE", "MEMBERS"], rows.map { [$0.name, $0.state, String($0.members)] })
                if target.bootstrap == nil && !rows.isEmpty {
                    printError("(from the data directory: groups with committed offsets; live members are known to a running server: --bootstrap)")
                }
            }
        }
    }

    struct Describe: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "describe")
        @OptionGroup var target: Target
        @Argument(help: "The group.") var group: String
        @Option(help: "table or json (one object per partition: topic, partition, committed, log_end, lag, lag_seconds, member).") var format: Format = .table

        func run() throws {
            let report: GroupReport
            if let bootstrap = target.bootstrap {
                report = try Groups.reportThroughServer(try Topics.client(bootstrap), group)
            } else {
                guard let r = try target.options.openReadOnly().groupReport(group) else { throw CLIError("no group '\(group)' (no committed offsets in \(target.options.data))") }
                report = r
            }
            switch format {
            case .json:
                for row in report.partitions { print(AdminJSON.row(row, group: report.group)) }
            case .table:
                print("group \(report.group): \(report.state), \(report.members.count) member(s)")
                printTable(["TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "LAG-SECONDS", "MEMBER", "CLIENT-ID", "HOST"],
                           report.partitions.map { r in
                               [r.topic, String(r.partition), String(r.committed), String(r.logEnd), String(r.lag),
                                String((r.lagSeconds * 1000).rounded() / 1000), r.memberId ?? "-", r.clientId ?? "-", r.host ?? "-"]
                           })
            }
        }
    }

    struct ResetOffsets: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reset-offsets",
            abstract: "Move a group's committed offsets on a topic (refused while the group has members).")
        @OptionGroup var target: Target
        @Argument(help: "The group.") var group: String
        @Option(help: "The topic whose partitions are reset (all of them).") var topic: String
        @Flag(help: "To each partition's log start offset.") var toEarliest = false
        @Flag(help: "To each partition's log end offset.") var toLatest = false
        @Option(help: "To the first record at or after this time: epoch milliseconds or YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM] (UTC when no zone is given).")
        var toDatetime: String?
        @Option(help: "Move each committed offset by N (negative: back), within the log.") var shiftBy: Int64?
        @Flag(help: "Show the new offsets without committing them.") var dryRun = false

        func validate() throws {
            let chosen = [toEarliest, toLatest, toDatetime != nil, shiftBy != nil].filter { $0 }.count
            guard chosen == 1 else { throw ValidationError("give exactly one of --to-earliest, --to-latest, --to-datetime, --shift-by") }
            if let toDatetime, Groups.parseDatetime(toDatetime) == nil {
                throw ValidationError("--to-datetime '\(toDatetime)' is neither epoch milliseconds nor YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM]")
            }
        }

        /// The new offset of one partition, from its log bounds, current commit and the offset
        /// for the timestamp (looked up only for --to-datetime).
        func target(start: Int64, end: Int64, committed: Int64?, forTimestamp: () throws -> Int64) rethrows -> Int64 {
            if toEarliest { return start }
            if toLatest { return end }
            if toDatetime != nil { return try forTimestamp() }
            // --shift-by from the commit (from the log end when there is none, as a consumer
            // with auto.offset.reset=latest would start), kept within the log.
            let base = committed ?? end
            return min(max(base.saturatingAdd(shiftBy ?? 0), start), end)
        }

        func run() throws {
            var plan: [(partition: Int32, current: Int64?, new: Int64)] = []
            let timestamp = toDatetime.flatMap(Groups.parseDatetime)
            if let bootstrap = target.bootstrap {
                let client = try Topics.client(bootstrap)
                let info = try client.describeGroup(group)
                guard info.members.isEmpty else {
                    throw CLIError("group '\(group)' has \(info.members.count) member(s) (state \(info.state)): offsets can only be reset while it has none; stop its consumers first")
                }
                guard let partitions = try client.topics().first(where: { $0.name == topic })?.partitions else { throw CLIError("no topic '\(topic)'") }
                let committed = try client.committedOffsets(group: group).filter { $0.topic == topic }
                for p in 0..<Int32(partitions) {
                    let start = try client.listOffset(topic: topic, partition: p, timestamp: -2)
                    let end = try client.listOffset(topic: topic, partition: p, timestamp: -1)
                    let current = committed.first { $0.partition == p }?.offset
                    let new = try target(start: start, end: end, committed: current) {
                        let o = try client.listOffset(topic: topic, partition: p, timestamp: timestamp!)
                        return o < 0 ? end : o
                    }
                    plan.append((p, current, new))
                }
                if !dryRun {
                    let results = try client.commitOffsets(group: group, plan.map { (topic, $0.partition, $0.new) })
                    if let failed = results.first(where: { $0.error != 0 }) {
                        throw CLIError("commit refused for \(topic)-\(failed.partition): Kafka error \(failed.error)\(failed.error == 25 || failed.error == 27 ? " (the group has members)" : "")")
                    }
                }
            } else {
                // Members exist only in a running server: writing the data directory needs it to
                // be stopped (the lock says so), and then the group has none.
                let broker: Broker
                do {
                    broker = try target.options.openBroker()
                } catch let error as CLIError where error.description.contains("Stop that process") {
                    throw CLIError("a server has \(target.options.data) open: reset through it with --bootstrap HOST:PORT (Kafka refuses resets while the group has members)")
                }
                defer { try? broker.close() }
                guard let count = broker.partitionCount(topic) else { throw CLIError("no topic '\(topic)'") }
                for p in 0..<count {
                    let log = try broker.log(topic: topic, partition: p)
                    let current = try broker.committedOffset(group: group, topic: topic, partition: p)
                    let new = try target(start: log.logStartOffset, end: log.logEndOffset, committed: current) {
                        try broker.offset(topic: topic, partition: p, forTimestamp: timestamp!)
                    }
                    plan.append((p, current, new))
                }
                if !dryRun { try broker.commitOffsets(group: group, offsets: plan.map { (topic, $0.partition, $0.new) }) }
            }
            printTable(["TOPIC", "PARTITION", "CURRENT", "NEW"], plan.map { [topic, String($0.partition), $0.current.map(String.init) ?? "-", String($0.new)] })
            printError(dryRun ? "dry run: nothing committed" : "committed \(plan.count) offset(s) for group '\(group)'")
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "delete")
        @OptionGroup var target: Target
        @Argument(help: "The group.") var group: String

        func run() throws {
            if let bootstrap = target.bootstrap {
                let results = try Topics.client(bootstrap).deleteGroups([group])
                guard let r = results.first else { throw CLIError("empty DeleteGroups response") }
                switch r.error {
                case 0: printError("deleted group '\(group)'")
                case 68: throw CLIError("group '\(group)' has members: stop its consumers first (NON_EMPTY_GROUP)")
                case 69: throw CLIError("no group '\(group)' (GROUP_ID_NOT_FOUND)")
                default: throw CLIError("DeleteGroups '\(group)': Kafka error \(r.error)")
                }
                return
            }
            let broker: Broker
            do {
                broker = try target.options.openBroker()
            } catch let error as CLIError where error.description.contains("Stop that process") {
                throw CLIError("a server has \(target.options.data) open: delete through it with --bootstrap HOST:PORT")
            }
            defer { try? broker.close() }
            guard try broker.deleteGroup(group) else { throw CLIError("no group '\(group)'") }
            printError("deleted group '\(group)'")
        }
    }

    /// A group's report built from Kafka APIs (DescribeGroups, OffsetFetch, ListOffsets, and one
    /// small Fetch per lagging partition for the timestamp of its first unconsumed record).
    static func reportThroughServer(_ client: KafkaClient, _ group: String, nowMs: Int64 = wallClockMillis()) throws -> GroupReport {
        let info = try client.describeGroup(group)
        let committed = try client.committedOffsets(group: group)
        guard info.error == 0 else { throw CLIError("DescribeGroups '\(group)': Kafka error \(info.error)") }
        guard !info.members.isEmpty || !committed.isEmpty || info.state != "Dead" else { throw CLIError("no group '\(group)'") }
        var owner: [String: KafkaClient.GroupMember] = [:]
        let members = info.members.map { m -> GroupReport.Member in
            let assigned = ConsumerAssignment.decode(m.assignment) ?? []
            for tp in assigned { for p in tp.partitions { owner["\(tp.topic)\u{0}\(p)"] = m } }
            return GroupReport.Member(memberId: m.memberId, clientId: m.clientId, host: m.host, assignment: assigned)
        }
        let rows = try committed.map { c -> GroupPartitionLag in
            let end = try client.listOffset(topic: c.topic, partition: c.partition, timestamp: -1)
            var row = GroupPartitionLag(topic: c.topic, partition: c.partition, committed: c.offset, logEnd: end,
                                        lag: max(0, end.saturatingSubtract(c.offset)), lagSeconds: 0)
            if row.lag > 0 {
                let start = try client.listOffset(topic: c.topic, partition: c.partition, timestamp: -2)
                if let ts = try client.recordTimestamp(topic: c.topic, partition: c.partition, offset: max(c.offset, start)) {
                    row.lagSeconds = max(0, Double(nowMs.saturatingSubtract(ts)) / 1000)
                }
            }
            if let m = owner["\(c.topic)\u{0}\(c.partition)"] { (row.memberId, row.clientId, row.host) = (m.memberId, m.clientId, m.host) }
            return row
        }
        return GroupReport(group: group, state: info.state, members: members, partitions: rows)
    }

    /// Epoch milliseconds, or an ISO-8601 date-time (UTC unless it carries a zone).
    static func parseDatetime(_ text: String) -> Int64? {
        if !text.isEmpty, text.allSatisfy(\.isNumber) { return Int64(text) }
        let bytes = Array(text.utf8)
        func number(_ at: Int, _ count: Int) -> Int? {
            guard at + count <= bytes.count else { return nil }
            var v = 0
            for b in bytes[at..<at + count] {
                guard b >= 48, b <= 57 else { return nil }
                v = v * 10 + Int(b - 48)
            }
            return v
        }
        func at(_ i: Int, _ c: Character) -> Bool { i < bytes.count && bytes[i] == c.asciiValue! }
        guard let year = number(0, 4), at(4, "-"), let month = number(5, 2), at(7, "-"), let day = number(8, 2),
              at(10, "T") || at(10, " "), let hour = number(11, 2), at(13, ":"), let minute = number(14, 2) else { return nil }
        var i = 16
        var second = 0
        var millis = 0
        if at(i, ":") {
            guard let s = number(i + 1, 2) else { return nil }
            second = s
            i += 3
            if at(i, ".") {
                var digits = 0
                i += 1
                while i < bytes.count, bytes[i] >= 48, bytes[i] <= 57 {
                    if digits < 3 { millis = millis * 10 + Int(bytes[i] - 48) }
                    digits += 1
                    i += 1
                }
                guard digits > 0 else { return nil }
                for _ in min(digits, 3)..<3 { millis *= 10 }
            }
        }
        var offsetMinutes = 0
        if at(i, "Z") {
            i += 1
        } else if at(i, "+") || at(i, "-") {
            let sign = at(i, "-") ? -1 : 1
            guard let h = number(i + 1, 2), at(i + 3, ":"), let m = number(i + 4, 2) else { return nil }
            offsetMinutes = sign * (h * 60 + m)
            i += 6
        }
        guard i == bytes.count, (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let seconds = Int64(timegm(&parts))
        return (seconds - Int64(offsetMinutes) * 60) * 1000 + Int64(millis)
    }
}

/// Columns padded to their widest cell.
func printTable(_ header: [String], _ rows: [[String]]) {
    let all = [header] + rows
    let widths = header.indices.map { c in all.map { $0[c].count }.max() ?? 0 }
    for row in all {
        print(row.indices.map { c in c == row.count - 1 ? row[c] : row[c] + String(repeating: " ", count: widths[c] - row[c].count) }.joined(separator: "  "))
    }
}
