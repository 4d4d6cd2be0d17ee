import StrataBroker

/// The JSON of the admin API and of `strata groups ... --format json`, written by hand (the
/// project does without Foundation): keys in snake_case, one object per partition row.
public enum AdminJSON {
    public static func string(_ text: String) -> String { StrataLogHandler.jsonString(text) }

    public static func number(_ value: Double) -> String {
        guard value.isFinite else { return "null" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    public static func row(_ r: GroupPartitionLag, group: String) -> String {
        var s = "{\"group\":\(string(group)),\"topic\":\(string(r.topic)),\"partition\":\(r.partition),\"committed\":\(r.committed)"
        s += ",\"log_end\":\(r.logEnd),\"lag\":\(r.lag),\"lag_seconds\":\(number(r.lagSeconds))"
        s += ",\"member_id\":\(r.memberId.map(string) ?? "null"),\"client_id\":\(r.clientId.map(string) ?? "null"),\"host\":\(r.host.map(string) ?? "null")}"
        return s
    }

    public static func report(_ r: GroupReport) -> String {
        let members = r.members.map { m in
            let assignment = m.assignment.map { "{\"topic\":\(string($0.topic)),\"partitions\":[\($0.partitions.map(String.init).joined(separator: ","))]}" }
            return "{\"member_id\":\(string(m.memberId)),\"client_id\":\(string(m.clientId)),\"host\":\(string(m.host)),\"assignment\":[\(assignment.joined(separator: ","))]}"
        }
        return "{\"group\":\(string(r.group)),\"state\":\(string(r.state)),\"members\":[\(members.joined(separator: ","))],\"partitions\":[\(r.partitions.map { row($0, group: r.group) }.joined(separator: ","))]}"
    }

    public static func groupList(_ groups: [(name: String, state: String, members: Int)]) -> String {
        "[" + groups.map { "{\"group\":\(string($0.name)),\"state\":\(string($0.state)),\"members\":\($0.members)}" }.joined(separator: ",") + "]"
    }
}
