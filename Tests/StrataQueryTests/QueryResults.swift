@testable import StrataQuery

/// A statement's rows (NULL as nil), or its error: for comparing the fast paths with SQLite's own
/// evaluation, where both refusing the same input counts as agreeing.
func rows(_ engine: QueryEngine, _ sql: String) -> Result<[[String?]], Error> {
    Result {
        var out: [[String?]] = []
        try engine.run(sql, header: { _ in }, row: { out.append($0) })
        return out
    }
}

/// Equal rows, or both errors (the messages differ in wording only).
func same(_ a: Result<[[String?]], Error>, _ b: Result<[[String?]], Error>) -> Bool {
    switch (a, b) {
    case (.success(let x), .success(let y)): return x == y
    case (.failure, .failure): return true
    default: return false
    }
}
