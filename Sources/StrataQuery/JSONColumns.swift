/// JSON members as columns. SQLite evaluates `value ->> '$.amount'` wherever the expression sits:
/// in a GROUP BY it stores the whole `value` in its sorter and extracts the member after sorting,
/// one row at a time on one core. Instead, every topic table declares a hidden column per
/// top-level member the query names (`"value->>'$.amount'"`), the scan thread extracts those
/// members while it decodes, and the statement is rewritten to read the columns.
///
/// The rewrite is token-level and only for `value ->> '<member>'` (optionally qualified); it is
/// tried only when the original statement prepares, and abandoned when the rewritten one does
/// not (e.g. when `value` is a CTE's column rather than a topic's), so it never changes what a
/// statement means: the column yields exactly what `->>` yields on that row's value.
enum JSONColumns {
    /// Members of the record key are named with a leading "." (a value member's name never
    /// starts with one): `key->>'$.id'` is ".id".
    static let keyPrefix = "."

    static func isKeyMember(_ name: String) -> Bool { name.hasPrefix(keyPrefix) }

    /// The path of member `name` without the source prefix (`id` for ".id").
    static func path(_ name: String) -> String { isKeyMember(name) ? String(name.dropFirst()) : name }

    /// The hidden column that holds member `name`.
    static func columnName(_ name: String) -> String { isKeyMember(name) ? "key->>'$.\(path(name))'" : "value->>'$.\(name)'" }

    /// What the scan threads look for: the scanner's key for the path, after a 0xFF byte (never
    /// in UTF-8) for members of the record key.
    static func wantedKey(_ name: String) -> [UInt8] { isKeyMember(name) ? [0xFF] + scanKey(path(name)) : scanKey(name) }

    /// Member names of `value ->> '…'` expressions in `sql`, in first-seen order, at most `limit`.
    static func members(in sql: String, limit: Int = WantedFields.limit) -> [String] {
        var names: [String] = []
        for m in matches(in: Array(sql.utf8)) where !names.contains(m.name) && names.count < limit && quotable(m.name) { names.append(m.name) }
        return names
    }

    /// Whether the hidden column of `name` can be written as an identifier in the rewrite.
    static func quotable(_ name: String) -> Bool { !(name.contains("]") && name.contains("`")) }

    /// The hidden column a folded `count(*)` reads: the group's number of rows.
    static let rowsColumn = "strata_rows"

    /// Aggregates folded into a grouped scan: in `SELECT … FROM <one table> GROUP BY <members> …`
    /// with nothing else that filters or joins rows (no WHERE, JOIN, subquery, compound, window or
    /// FILTER), each `count(*)` becomes `sum(strata_rows)` over one row per group that carries the
    /// group's count, and each `sum`/`total`/`avg`/`min`/`max`/`count` of one member column
    /// becomes `min(strata_foldN)`, the hidden column that carries that aggregate of the group
    /// (FoldedAggregates), so SQLite steps once per group instead of once per row. The table
    /// accepts that plan only when the GROUP BY terms are member columns and they are all it
    /// reads besides the folded columns (EventsModule's xBestIndex); otherwise the statement does
    /// not prepare and the unfolded one runs. Nil when the statement is not of that shape.
    static func fold(_ sql: String, members: [String]) -> (sql: String, aggregates: [FoldAggregate], grouped: Bool, filteredElsewhere: Set<String>)? {
        let source = distinctCount(sql, members: members) ?? sql
        let s = Array((groupingByDay(source) ?? source).utf8)
        let tokens = tokenize(s)
        func word(_ t: Token) -> String? { t.kind == .identifier ? String(decoding: s[t.range], as: UTF8.self).lowercased() : nil }
        func char(_ t: Token, _ c: Character) -> Bool { t.kind == .other && s[t.range.lowerBound] == c.asciiValue! }
        let words = tokens.compactMap(word)
        guard words.filter({ $0 == "select" }).count == 1,
              !words.contains(where: { ["join", "union", "intersect", "except", "with", "over", "filter", "window", "values"].contains($0) }),
              let from = tokens.firstIndex(where: { word($0) == "from" }) else { return nil }
        // Without GROUP BY the whole scan is one group (an aggregate query: one row, also of
        // nothing). The table clause ends at the first keyword after it.
        let clauseEnd = tokens.indices.first { $0 > from && ["group", "having", "order", "limit"].contains(word(tokens[$0]) ?? "") } ?? tokens.count
        let group: Int
        let grouped = tokens.contains { word($0) == "group" }
        if let g = tokens.firstIndex(where: { word($0) == "group" }) {
            guard g > from + 1, g + 1 < tokens.count, word(tokens[g + 1]) == "by" else { return nil }
            group = g
        } else {
            guard clauseEnd > from + 1, clauseEnd == tokens.count || word(tokens[clauseEnd]) != "having" else { return nil }
            group = clauseEnd
        }
        // The member whose hidden column token `t` is (as `rewrite` writes it).
        let columns = Dictionary(members.map { ("[" + columnName($0) + "]", $0) }, uniquingKeysWith: { a, _ in a })
            .merging(members.map { ("`" + columnName($0) + "`", $0) }, uniquingKeysWith: { a, _ in a })
        func member(_ t: Token) -> String? {
            t.kind == .quotedIdentifier ? columns[String(decoding: s[t.range], as: UTF8.self)] : nil
        }
        // A WHERE only of `partition|offset|timestamp <op> <integer>` and member terms (exactRowFilter)
        // joined by AND, which the table applies exactly (xBestIndex), the bound columns
        // nowhere else: SQLite has nothing left to filter row by row.
        let whereAt = tokens.firstIndex(where: { word($0) == "where" })
        var filtered: [String] = []
        if let whereAt {
            guard whereAt > from, whereAt < group, let f = Self.exactRowFilter(Array(tokens[(whereAt + 1)..<group]), s, member: member) else { return nil }
            filtered = f
        }
        for (i, t) in tokens.enumerated() where ["timestamp", "offset", "partition"].contains(columnName(t, s) ?? "") {
            guard let whereAt, i > whereAt, i < group else { return nil }
        }
        // One table, maybe with an alias: `t`, `t x`, `t AS x`.
        let table = Array(tokens[(from + 1)..<(whereAt ?? group)])
        let names = table.filter { $0.kind == .identifier || $0.kind == .quotedIdentifier }
        guard names.count == table.count, (1...3).contains(names.count),
              names.count != 3 || word(names[1]) == "as", names.count != 2 || word(names[1]) != "as" else { return nil }
        // SQLite analyses aggregates in the select list, then ORDER BY, then HAVING; the last
        // min/max of that order decides which row a group's key columns show (FoldState.add).
        let having = tokens.indices.first { word(tokens[$0]) == "having" } ?? tokens.count
        let orderBy = tokens.indices.first { $0 > group + 1 && word(tokens[$0]) == "order" } ?? tokens.count
        func analysisRank(_ i: Int) -> Int { (i > orderBy ? 1 : (i > having ? 2 : 0)) * tokens.count + i }
        var governing: (slot: Int, rank: Int)?
        var aggregates: [FoldAggregate] = []
        var out: [UInt8] = []
        var copied = 0
        var replaced: [Range<Int>] = []  // token indexes
        var i = 0
        while i + 3 < tokens.count {
            defer { i += 1 }
            guard let name = word(tokens[i]), char(tokens[i + 1], "("), char(tokens[i + 3], ")"), i == 0 || !char(tokens[i - 1], ".") else { continue }
            let replacement: String
            if name == "count", char(tokens[i + 2], "*") {
                replacement = "sum(\(rowsColumn))"
            } else if let function = FoldFunction(sqlName: name), function.folds, let m = member(tokens[i + 2]) {
                let slot: Int
                if let known = aggregates.first(where: { $0.function == function && $0.member == m }) {
                    slot = known.slot
                } else {
                    guard aggregates.count < FoldAggregate.slotCount else { continue }
                    slot = aggregates.count
                    aggregates.append(FoldAggregate(slot: slot, function: function, member: m))
                    if function == .min || function == .max, governing.map({ analysisRank(i) > $0.rank }) ?? true {
                        governing = (slot, analysisRank(i))
                    }
                }
                replacement = "min(\(FoldAggregate.columnName(slot)))"
            } else {
                continue
            }
            out += s[copied..<tokens[i].range.lowerBound]
            out += Array(replacement.utf8)
            copied = tokens[i + 3].range.upperBound
            replaced.append(i..<(i + 4))
            i += 3
        }
        guard copied > 0 else { return nil }
        // Whatever is left runs once per group: no other aggregate (count(1), group_concat, a
        // sum of an expression…) and no rowid may remain — only calls of scalar functions.
        for (k, t) in tokens.enumerated() where !replaced.contains(where: { $0.contains(k) }) {
            if let name = columnName(t, s), ["rowid", "oid", "_rowid_"].contains(name) { return nil }
            if let name = word(t), k + 1 < tokens.count, char(tokens[k + 1], "("), !Self.scalarCalls.contains(name) { return nil }
        }
        out += s[copied...]
        if let governing { aggregates[governing.slot].governsKey = true }
        // A filtered member read anywhere but the WHERE and the folded aggregates must be a GROUP
        // BY term (xBestIndex checks): a bare column would be read from a folded row.
        var elsewhere = Set<String>()
        for (k, t) in tokens.enumerated() where !replaced.contains(where: { $0.contains(k) }) && !(whereAt.map { k > $0 && k < group } ?? false) {
            if let m = member(t), filtered.contains(m) { elsewhere.insert(m) }
        }
        return (String(decoding: out, as: UTF8.self), aggregates, grouped, elsewhere)
    }

    /// `SELECT count(*) FROM (SELECT DISTINCT <member column> FROM <table> [WHERE …]) [[AS] x]`, a
    /// common way to count distinct values, as the aggregate it equals, which folds:
    /// `SELECT strata_count_distinct(<m>) + (count(*) > count(<m>)) FROM <table> [WHERE …]` — the
    /// distinct non-NULL values (DISTINCT's equality: 1 and 1.0 one value, text by bytes), plus
    /// one when some row has no value (DISTINCT keeps one NULL row), 0 over no rows; a member
    /// SQLite cannot read fails both. Nil when the statement is not exactly that.
    static func distinctCount(_ sql: String, members: [String]) -> String? {
        let s = Array(sql.utf8)
        let all = tokenize(s)
        // (After `EXPLAIN [QUERY PLAN]`, which stays in front.)
        let words = all.prefix(3).map { $0.kind == .identifier ? String(decoding: s[$0.range], as: UTF8.self).lowercased() : "" }
        let skipped = words.first == "explain" ? (words.count == 3 && words[1] == "query" && words[2] == "plan" ? 3 : 1) : 0
        let t = Array(all.dropFirst(skipped))
        let prefix = skipped > 0 ? String(decoding: s[..<(t.first?.range.lowerBound ?? s.count)], as: UTF8.self) : ""
        func word(_ k: Int) -> String? { k < t.count && t[k].kind == .identifier ? String(decoding: s[t[k].range], as: UTF8.self).lowercased() : nil }
        func char(_ k: Int, _ c: Character) -> Bool { k < t.count && t[k].kind == .other && s[t[k].range.lowerBound] == c.asciiValue! }
        let memberColumns = Set(members.flatMap { ["[" + columnName($0) + "]", "`" + columnName($0) + "`"] })
        guard t.count >= 13, word(0) == "select", word(1) == "count", char(2, "("), char(3, "*"), char(4, ")"), word(5) == "from",
              char(6, "("), word(7) == "select", word(8) == "distinct", t[9].kind == .quotedIdentifier,
              memberColumns.contains(String(decoding: s[t[9].range], as: UTF8.self)), word(10) == "from",
              t[11].kind == .identifier || t[11].kind == .quotedIdentifier else { return nil }
        var depth = 0
        var close: Int?
        for k in 6..<t.count {
            if char(k, "(") { depth += 1 }
            if char(k, ")") {
                depth -= 1
                if depth == 0 { close = k; break }
            }
        }
        guard let close, close == 12 || word(12) == "where" else { return nil }
        // The subquery's WHERE and nothing after it: its own GROUP BY, LIMIT… would change what it
        // counts (the rewrite would apply them to the aggregate instead).
        var level = 0
        for k in 12..<close {
            if char(k, "(") { level += 1 }
            if char(k, ")") { level -= 1 }
            if level == 0, ["group", "having", "order", "limit", "offset", "window", "union", "intersect", "except", "join"].contains(word(k) ?? "") {
                return nil
            }
        }
        // After the subquery: an alias at most, and the statement's end.
        var k = close + 1
        if word(k) == "as" { k += 1 }
        if k < t.count, t[k].kind == .quotedIdentifier || (t[k].kind == .identifier && word(k) != "as"
            && !["where", "group", "order", "limit", "having", "window", "union", "intersect", "except", "join"].contains(word(k) ?? "")) {
            k += 1
        }
        if char(k, ";") { k += 1 }
        guard k == t.count else { return nil }
        let column = String(decoding: s[t[9].range], as: UTF8.self)
        let table = String(decoding: s[t[11].range.lowerBound..<t[close - 1].range.upperBound], as: UTF8.self)
        return prefix + "SELECT \(DistinctCount.functionName)(\(column)) + (count(*) > count(\(column))) FROM \(table)"
    }

    /// The hidden column holding the start of a record's UTC day in milliseconds (`dayStart`),
    /// which a GROUP BY of the record's date groups by instead (`groupingByDay`).
    static let dayColumn = "strata_day"

    /// What `strata_day` holds for a record timestamp (ms): a value whose
    /// `date(v / 1000, 'unixepoch')` is SQLite's `date(timestamp / 1000, 'unixepoch')`, the same for
    /// every timestamp of one date, different between dates; nil (NULL) where SQLite's date is
    /// NULL. SQLite divides integers truncating toward zero (as Swift does) and accepts
    /// 'unixepoch' seconds in [-210866760000, 253402300800) — from Julian day 0, at noon, to the
    /// end of year 9999; the first half-day is held as its first second, since its midnight is
    /// out of range.
    static func dayStart(timestampMs: Int64) -> Int64? {
        let seconds = timestampMs / 1000
        guard seconds >= -210_866_760_000, seconds < 253_402_300_800 else { return nil }
        let day = seconds >= 0 ? seconds / 86_400 : -((86_399 - seconds) / 86_400)
        return max(day * 86_400, -210_866_760_000) * 1000
    }

    /// A GROUP BY of `date(timestamp / 1000, 'unixepoch')` made a GROUP BY of the `strata_day`
    /// column, which a fold can group by (a table is handed GROUP BY terms that are columns, not
    /// expressions): outside the WHERE each such date reads `strata_day` instead of `timestamp`,
    /// and each GROUP BY term that is that date — written out, as its position in the select
    /// list or as its alias — becomes `strata_day`. The groups are the same, since dates and
    /// day starts correspond one to one (`dayStart`; NULL to NULL), and so are the dates shown.
    /// Without ORDER BY, groups come in day order, which for years before 0 differs from the
    /// order of their date text (SQL leaves that order unspecified). Nil when no GROUP BY term
    /// is such a date.
    static func groupingByDay(_ sql: String) -> String? {
        let s = Array(sql.utf8)
        let tokens = tokenize(s)
        func word(_ k: Int) -> String? { k < tokens.count && tokens[k].kind == .identifier ? String(decoding: s[tokens[k].range], as: UTF8.self).lowercased() : nil }
        func char(_ k: Int, _ c: Character) -> Bool { k < tokens.count && tokens[k].kind == .other && s[tokens[k].range.lowerBound] == c.asciiValue! }
        func isDigit(_ k: Int) -> Bool { k < tokens.count && tokens[k].kind == .other && (0x30...0x39).contains(s[tokens[k].range.lowerBound]) }
        /// The digits from `k` on (adjacent), as text, and the index after them.
        func integer(_ k: Int) -> (String, Int)? {
            var i = k
            while isDigit(i), i == k || tokens[i].range.lowerBound == tokens[i - 1].range.upperBound { i += 1 }
            guard i > k else { return nil }
            return (String(decoding: s[tokens[k].range.lowerBound..<tokens[i - 1].range.upperBound], as: UTF8.self), i)
        }
        /// `date ( timestamp / 1000 , 'unixepoch' )` at `k`: the index after it.
        func date(_ k: Int) -> Int? {
            guard word(k) == "date", k == 0 || !char(k - 1, "."), char(k + 1, "("), k + 2 < tokens.count,
                  columnName(tokens[k + 2], s) == "timestamp", char(k + 3, "/"),
                  let (n, after) = integer(k + 4), n == "1000", char(after, ","), after + 2 < tokens.count,
                  tokens[after + 1].kind == .string, String(decoding: s[tokens[after + 1].range], as: UTF8.self).lowercased() == "'unixepoch'",
                  char(after + 2, ")") else { return nil }
            return after + 3
        }
        var depth = [Int](repeating: 0, count: tokens.count)
        var d = 0
        for k in tokens.indices {
            if char(k, ")") { d -= 1 }
            depth[k] = d
            if char(k, "(") { d += 1 }
        }
        func top(_ k: Int, _ w: String) -> Bool { k < tokens.count && depth[k] == 0 && word(k) == w }
        guard let select = tokens.indices.first(where: { top($0, "select") }),
              let from = tokens.indices.first(where: { $0 > select && top($0, "from") }),
              let group = tokens.indices.first(where: { $0 > from && top($0, "group") && top($0 + 1, "by") }) else { return nil }
        let clauseWords: Set<String> = ["having", "order", "limit", "window"]
        let groupEnd = tokens.indices.first { $0 > group + 1 && depth[$0] == 0 && (clauseWords.contains(word($0) ?? "") || char($0, ";")) } ?? tokens.count
        let whereAt = tokens.indices.first { $0 > from && $0 < group && top($0, "where") }
        /// Comma-separated items of tokens[range] at depth 0.
        func items(_ range: Range<Int>) -> [Range<Int>] {
            var out: [Range<Int>] = []
            var start = range.lowerBound
            for k in range where depth[k] == 0 && char(k, ",") {
                out.append(start..<k)
                start = k + 1
            }
            out.append(start..<range.upperBound)
            return out
        }
        // Select items that are the date: their position (from 1) and alias.
        var first = select + 1
        if word(first) == "distinct" || word(first) == "all" { first += 1 }
        var datePositions: Set<String> = []
        var dateAliases: Set<String> = []
        // A name SQLite resolves to the first select item with that alias (a table column first).
        var earlierAliases: Set<String> = []
        for (i, item) in items(first..<from).enumerated() {
            // The item's alias: `[AS] name` at its end.
            var alias: String?
            if item.count >= 2, let last = columnName(tokens[item.upperBound - 1], s),
               word(item.upperBound - 2) == "as" || [.identifier, .quotedIdentifier].contains(tokens[item.upperBound - 2].kind)
                || char(item.upperBound - 2, ")") || tokens[item.upperBound - 2].kind == .string {
                alias = last
            }
            defer { if let alias { earlierAliases.insert(alias) } }
            // Exactly the date, maybe with an alias (not an expression that starts with it).
            guard let end = date(item.lowerBound) else { continue }
            let aliasAt = word(end) == "as" ? end + 1 : end
            guard end == item.upperBound || aliasAt + 1 == item.upperBound else { continue }
            datePositions.insert("\(i + 1)")
            if aliasAt + 1 == item.upperBound, let name = columnName(tokens[aliasAt], s), !earlierAliases.contains(name),
               !["partition", "offset", "timestamp", "key", "value", "headers", "topic"].contains(name) {
                dateAliases.insert(name)
            }
        }
        var replacements: [(Range<Int>, String)] = []  // byte ranges
        var groupsByDay = false
        for term in items((group + 2)..<groupEnd) where !term.isEmpty {
            let isDate = date(term.lowerBound) == term.upperBound
            let isPosition = integer(term.lowerBound).map { $0.1 == term.upperBound && datePositions.contains($0.0) } ?? false
            let isAlias = term.count == 1 && columnName(tokens[term.lowerBound], s).map { dateAliases.contains($0) } ?? false
            guard isDate || isPosition || isAlias else { continue }
            replacements.append((tokens[term.lowerBound].range.lowerBound..<tokens[term.upperBound - 1].range.upperBound, dayColumn))
            groupsByDay = true
        }
        guard groupsByDay else { return nil }
        var k = 0
        while k < tokens.count {
            let inWhere = whereAt.map { k > $0 && k < group } ?? false
            let inGroupBy = k >= group && k < groupEnd
            if !inWhere, !inGroupBy, let end = date(k) {
                replacements.append((tokens[k + 2].range, dayColumn))
                k = end
            } else {
                k += 1
            }
        }
        var out: [UInt8] = []
        var copied = 0
        for (range, text) in replacements.sorted(by: { $0.0.lowerBound < $1.0.lowerBound }) {
            out += s[copied..<range.lowerBound]
            out += Array(text.utf8)
            copied = range.upperBound
        }
        out += s[copied...]
        return String(decoding: out, as: UTF8.self)
    }

    /// Words a folded statement may follow with `(` outside its folded aggregates: SQLite's
    /// scalar functions (per group they give what they give per row of one group) and keywords.
    static let scalarCalls: Set<String> = [
        "abs", "coalesce", "ifnull", "iif", "nullif", "round", "printf", "format", "quote", "typeof", "length", "lower", "upper",
        "substr", "substring", "trim", "ltrim", "rtrim", "replace", "instr", "hex", "unicode", "char", "date", "time", "datetime",
        "julianday", "strftime", "unixepoch", "sign", "ceil", "ceiling", "floor", "trunc", "sqrt", "pow", "power", "ln", "log",
        "log10", "log2", "exp", "mod", "pi", "likely", "unlikely", "likelihood", "json", "json_quote", "json_type", "json_valid",
        "cast", "in", "and", "or", "not", "as", "when", "then", "else", "case", "is", "by", "like", "glob", "between", "desc", "asc",
        "select", "from", "having", "order", "limit", "offset", "where", "on", "collate", "escape", "end", "distinct", "all",
    ]

    /// The column name `t` spells, bare or quoted ("…", […], `…`), lowercased.
    private static func columnName(_ t: Token, _ s: [UInt8]) -> String? {
        switch t.kind {
        case .identifier: return String(decoding: s[t.range], as: UTF8.self).lowercased()
        case .quotedIdentifier:
            guard t.range.count >= 2 else { return nil }
            return String(decoding: s[(t.range.lowerBound + 1)..<(t.range.upperBound - 1)], as: UTF8.self).lowercased()
        default: return nil
        }
    }

    /// `partition|offset|timestamp <op> [-]digits` (op: = == < <= > >=), `<member column> <op>
    /// literal`, `<member column> IN (literal, …)` and `<member column> IS [NOT] NULL` terms
    /// (literal: 'text', [-]digits or [-]digits.digits) joined by AND; the members filtered, or nil.
    private static func exactRowFilter(_ t: [Token], _ s: [UInt8], member: (Token) -> String?) -> [String]? {
        func char(_ k: Int, _ c: Character) -> Bool { k < t.count && t[k].kind == .other && s[t[k].range.lowerBound] == c.asciiValue! }
        func adjacent(_ k: Int) -> Bool { t[k].range.lowerBound == t[k - 1].range.upperBound }
        func isDigit(_ i: Int) -> Bool { i < t.count && t[i].kind == .other && (0x30...0x39).contains(s[t[i].range.lowerBound]) }
        func word(_ i: Int) -> String? {
            i < t.count && t[i].kind == .identifier ? String(decoding: s[t[i].range], as: UTF8.self).lowercased() : nil
        }
        /// The index after a text literal, an integer of at most 18 digits or a decimal real
        /// (`[-]digits.digits`) at `k`, or nil.
        func literal(_ k: Int) -> Int? {
            if k < t.count, t[k].kind == .string { return k + 1 }
            var i = k
            if char(i, "-") { i += 1 }
            let digits = i
            while isDigit(i), i == digits || adjacent(i) { i += 1 }
            guard i > digits else { return nil }
            if char(i, "."), adjacent(i), isDigit(i + 1), adjacent(i + 1) {
                i += 1
                while isDigit(i), adjacent(i) { i += 1 }
                return i
            }
            return i - digits <= 18 ? i : nil
        }
        var filtered: [String] = []
        var k = 0
        while true {
            guard k < t.count else { return nil }
            if let m = member(t[k]) {
                // A member compared with a literal (text, integer, decimal), IN a list of them, or
                // IS [NOT] NULL: a literal has no affinity, nor has the member column, so SQLite
                // compares storage classes as they are.
                k += 1
                filtered.append(m)
                if word(k) == "is" {
                    // IS NULL / IS NOT NULL.
                    k += 1
                    if word(k) == "not" { k += 1 }
                    guard word(k) == "null" else { return nil }
                    k += 1
                } else if word(k) == "in" {
                    k += 1
                    guard char(k, "(") else { return nil }
                    k += 1
                    while true {
                        guard let after = literal(k) else { return nil }
                        k = after
                        if char(k, ",") { k += 1; continue }
                        guard char(k, ")") else { return nil }
                        k += 1
                        break
                    }
                } else {
                    // = == < <= > >= and a literal (`<>` leaves `>` where the literal should be).
                    guard char(k, "=") || char(k, "<") || char(k, ">") else { return nil }
                    k += 1
                    if char(k, "="), adjacent(k) { k += 1 }
                    guard let after = literal(k) else { return nil }
                    k = after
                }
                if k == t.count { return filtered }
                guard t[k].kind == .identifier, String(decoding: s[t[k].range], as: UTF8.self).lowercased() == "and" else { return nil }
                k += 1
                continue
            } else {
                guard isIdentifier(t[k], s, "timestamp") || isIdentifier(t[k], s, "offset") || isIdentifier(t[k], s, "partition") else { return nil }
                k += 1
                guard char(k, "=") || char(k, "<") || char(k, ">") else { return nil }
                k += 1
                if char(k, "="), adjacent(k) { k += 1 }
            }
            if char(k, "-") { k += 1 }
            let digits = k
            while k < t.count, t[k].kind == .other, (0x30...0x39).contains(s[t[k].range.lowerBound]), k == digits || adjacent(k) { k += 1 }
            guard k > digits, k - digits <= 18 else { return nil }
            if k == t.count { return filtered }
            guard t[k].kind == .identifier, String(decoding: s[t[k].range], as: UTF8.self).lowercased() == "and" else { return nil }
            k += 1
        }
    }

    /// `sql` with each `value ->> '<member>'` whose member is in `declared` replaced by the hidden
    /// column; nil when nothing was replaced.
    static func rewrite(_ sql: String, declared: Set<String>) -> String? {
        let bytes = Array(sql.utf8)
        var out: [UInt8] = []
        var copied = 0
        for m in matches(in: bytes) where declared.contains(m.name) && quotable(m.name) {
            out += bytes[copied..<m.range.lowerBound]
            // [..] and `..` are always identifiers (a "..." naming no column would be read as a
            // string); a path with an index holds ']', so it goes in backquotes.
            let name = columnName(m.name)
            let column = name.contains("]") ? "`" + name + "`" : "[" + name + "]"
            out += Array((m.countDistinct ? "\(DistinctCount.functionName)(\(column))" : column).utf8)
            copied = m.range.upperBound
        }
        guard copied > 0 else { return nil }
        out += bytes[copied...]
        return String(decoding: out, as: UTF8.self)
    }

    private enum Kind: Equatable { case identifier, quotedIdentifier, string, op, other }
    private struct Token {
        let kind: Kind
        let range: Range<Int>
    }

    /// `value ->> '<member>'` occurrences: the byte range from `value` to the closing quote, or
    /// of the whole `count(DISTINCT value ->> '<member>')` around one (see DistinctCount).
    private static func matches(in s: [UInt8]) -> [(range: Range<Int>, name: String, countDistinct: Bool)] {
        let tokens = tokenize(s)
        var found: [(Range<Int>, String, Bool)] = []
        func word(_ t: Token, _ w: String) -> Bool {
            t.kind == .identifier && String(decoding: s[t.range], as: UTF8.self).lowercased() == w
        }
        func char(_ t: Token, _ c: Character) -> Bool { t.kind == .other && s[t.range.lowerBound] == c.asciiValue! }
        var i = 0
        while i + 2 < tokens.count {
            let t = tokens[i]
            defer { i += 1 }
            guard isValueIdentifier(t, s),
                  tokens[i + 1].kind == .op, Array(s[tokens[i + 1].range]) == Array("->>".utf8),
                  tokens[i + 2].kind == .string else { continue }
            // `x.value` where x is a table: keep the qualifier, replace from `value` on.
            guard let path = memberName(String(decoding: s[(tokens[i + 2].range.lowerBound + 1)..<(tokens[i + 2].range.upperBound - 1)], as: UTF8.self)) else { continue }
            let name = isIdentifier(t, s, "key") ? keyPrefix + path : path
            if i >= 3, i + 3 < tokens.count, word(tokens[i - 3], "count"), char(tokens[i - 2], "("), word(tokens[i - 1], "distinct"),
               char(tokens[i + 3], ")"), i < 4 || !char(tokens[i - 4], ".") {
                found.append((tokens[i - 3].range.lowerBound..<tokens[i + 3].range.upperBound, name, true))
            } else {
                found.append((t.range.lowerBound..<tokens[i + 2].range.upperBound, name, false))
            }
        }
        return found
    }

    /// `value` or `key` (the columns whose JSON members become columns), bare or "quoted".
    private static func isValueIdentifier(_ t: Token, _ s: [UInt8]) -> Bool {
        isIdentifier(t, s, "value") || isIdentifier(t, s, "key")
    }

    private static func isIdentifier(_ t: Token, _ s: [UInt8], _ word: String) -> Bool {
        switch t.kind {
        case .identifier: return String(decoding: s[t.range], as: UTF8.self).lowercased() == word
        case .quotedIdentifier:
            let inner = String(decoding: s[(t.range.lowerBound + 1)..<(t.range.upperBound - 1)], as: UTF8.self)
            return s[t.range.lowerBound] == UInt8(ascii: "\"") && inner.lowercased() == word
        default: return false
        }
    }

    /// The member path a `->>` right operand names when the fast path can follow it — written
    /// without the leading `$.`: a top-level member (`$.name`, or a bare label `name`), or a
    /// path into nested objects and arrays (`$.geo.city`, `$.items[0].sku`). Nil for anything
    /// else (quoted labels, `#-1`, a top-level array, …): SQLite's json_extract answers those.
    static func memberName(_ literal: String) -> String? {
        if literal.hasPrefix("$.") {
            let path = String(literal.dropFirst(2))
            return pathSegments(path) == nil ? nil : path
        }
        // A bare label is one member name, whatever it contains (SQLite reads 'a.b' as `$."a.b"`):
        // only the names a path could also spell are taken.
        guard !literal.hasPrefix("$"), !literal.isEmpty, literal.utf8.allSatisfy(isNameByte) else { return nil }
        return literal
    }

    private static func isNameByte(_ c: UInt8) -> Bool {
        c >= 0x20 && c != UInt8(ascii: ".") && c != UInt8(ascii: "[") && c != UInt8(ascii: "\"") && c != UInt8(ascii: "'")
            && c != UInt8(ascii: "\\") && c != UInt8(ascii: "]")
    }

    enum PathSegment: Equatable {
        case member([UInt8])
        case index(Int)
    }

    /// `name(.name | [digits])*`, as SQLite's path syntax reads it; nil for what the fast path
    /// leaves to SQLite.
    static func pathSegments(_ path: String) -> [PathSegment]? {
        let b = Array(path.utf8)
        var segments: [PathSegment] = []
        var i = 0
        func name() -> [UInt8]? {
            let start = i
            while i < b.count && isNameByte(b[i]) { i += 1 }
            return i > start ? Array(b[start..<i]) : nil
        }
        guard let first = name() else { return nil }
        segments.append(.member(first))
        while i < b.count {
            if b[i] == UInt8(ascii: ".") {
                i += 1
                guard let n = name() else { return nil }
                segments.append(.member(n))
            } else if b[i] == UInt8(ascii: "[") {
                i += 1
                let start = i
                while i < b.count && b[i] >= 0x30 && b[i] <= 0x39 { i += 1 }
                guard i > start, i - start <= 9, i < b.count, b[i] == UInt8(ascii: "]") else { return nil }
                segments.append(.index(Int(String(decoding: b[start..<i], as: UTF8.self))!))
                i += 1
            } else {
                return nil
            }
        }
        return segments
    }

    /// The scanner's key for a member path (see strata_json_members): the top-level name, then
    /// `0 'm' name` or `0 'i' digits` per deeper segment.
    static func scanKey(_ name: String) -> [UInt8] {
        guard let segments = pathSegments(name), segments.count > 1 else { return Array(name.utf8) }
        var key: [UInt8] = []
        for (i, s) in segments.enumerated() {
            switch s {
            case .member(let n):
                if i > 0 { key += [0, UInt8(ascii: "m")] }
                key += n
            case .index(let k):
                key += [0, UInt8(ascii: "i")] + Array(String(k).utf8)
            }
        }
        return key
    }

    /// SQLite's lexical structure, as far as finding the pattern needs: strings, quoted
    /// identifiers, comments and identifiers are whole tokens; whitespace and comments dropped.
    private static func tokenize(_ s: [UInt8]) -> [Token] {
        var tokens: [Token] = []
        var i = 0
        let n = s.count
        func isIdentifierByte(_ c: UInt8) -> Bool {
            (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "_") || c == UInt8(ascii: "$") || c >= 0x80
        }
        while i < n {
            let c = s[i]
            let start = i
            switch c {
            case 0x20, 0x09, 0x0A, 0x0D, 0x0C:
                i += 1
            case UInt8(ascii: "-") where i + 1 < n && s[i + 1] == UInt8(ascii: "-"):
                while i < n && s[i] != 0x0A { i += 1 }
            case UInt8(ascii: "/") where i + 1 < n && s[i + 1] == UInt8(ascii: "*"):
                i += 2
                while i < n && !(s[i] == UInt8(ascii: "*") && i + 1 < n && s[i + 1] == UInt8(ascii: "/")) { i += 1 }
                i = min(n, i + 2)
            case UInt8(ascii: "'"), UInt8(ascii: "\""), UInt8(ascii: "`"), UInt8(ascii: "["):
                let close = c == UInt8(ascii: "[") ? UInt8(ascii: "]") : c
                i += 1
                while i < n {
                    if s[i] == close {
                        // A doubled quote is an escaped one (not for [..]).
                        if close != UInt8(ascii: "]"), i + 1 < n, s[i + 1] == close { i += 2; continue }
                        break
                    }
                    i += 1
                }
                i = min(n, i + 1)
                tokens.append(Token(kind: c == UInt8(ascii: "'") ? .string : .quotedIdentifier, range: start..<i))
            case UInt8(ascii: "-") where i + 2 < n && s[i + 1] == UInt8(ascii: ">") && s[i + 2] == UInt8(ascii: ">"):
                i += 3
                tokens.append(Token(kind: .op, range: start..<i))
            default:
                if isIdentifierByte(c) && !(c >= 0x30 && c <= 0x39) {
                    while i < n && isIdentifierByte(s[i]) { i += 1 }
                    tokens.append(Token(kind: .identifier, range: start..<i))
                } else {
                    i += 1
                    tokens.append(Token(kind: .other, range: start..<i))
                }
            }
        }
        return tokens
    }
}
