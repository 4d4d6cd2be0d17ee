import StrataBroker
import StrataCore

/// The JSON of the admin API and of `strata groups ... --format json`, written by hand (the
/// project does without Foundation): keys in snake_case, one object per partition row.
public enum AdminJSON {
    public static func number(_ value: Double) -> String {
        guard value.isFinite else { return "null" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    public static func row(_ r: GroupPartitionLag, group: String) -> String {
        var s = "{\"group\":\(jsonQuote(group)),\"topic\":\(jsonQuote(r.topic)),\"partition\":\(r.partition),\"committed\":\(r.committed)"
        s += ",\"log_end\":\(r.logEnd),\"lag\":\(r.lag),\"lag_seconds\":\(number(r.lagSeconds))"
        s += ",\"member_id\":\(r.memberId.map(jsonQuote) ?? "null"),\"client_id\":\(r.clientId.map(jsonQuote) ?? "null"),\"host\":\(r.host.map(jsonQuote) ?? "null")}"
        return s
    }

    public static func report(_ r: GroupReport) -> String {
        let members = r.members.map { m in
            let assignment = m.assignment.map { "{\"topic\":\(jsonQuote($0.topic)),\"partitions\":[\($0.partitions.map(String.init).joined(separator: ","))]}" }
            return "{\"member_id\":\(jsonQuote(m.memberId)),\"client_id\":\(jsonQuote(m.clientId)),\"host\":\(jsonQuote(m.host)),\"assignment\":[\(assignment.joined(separator: ","))]}"
        }
        return "{\"group\":\(jsonQuote(r.group)),\"state\":\(jsonQuote(r.state)),\"members\":[\(members.joined(separator: ","))],\"partitions\":[\(r.partitions.map { row($0, group: r.group) }.joined(separator: ","))]}"
    }

    public static func groupList(_ groups: [(name: String, state: String, members: Int)]) -> String {
        "[" + groups.map { "{\"group\":\(jsonQuote($0.name)),\"state\":\(jsonQuote($0.state)),\"members\":\($0.members)}" }.joined(separator: ",") + "]"
    }
}
