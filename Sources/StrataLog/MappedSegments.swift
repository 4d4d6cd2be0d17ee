import Synchronization

/// The process-wide budget of closed segments kept mapped (`log.max.open.segments`).
///
/// A closed segment is mapped on first use (a fetch, a time lookup, the cleaner) and costs three
/// mappings and no descriptor; a rolled segment keeps its mapping after its final sync. Without a
/// bound, reading through a long history would map every segment it touched until the process
/// hit `vm.max_map_count` (65,530 by default: about 21,800 segments). Past the budget, the least
/// recently used are unmapped; readers holding slices keep theirs, and the next use maps the
/// segment again. Active segments are not counted: there is one per partition, bounded by the
/// partition limit.
///
/// Recency is a tick each segment stores on every use (one relaxed atomic), so a read takes no
/// lock here; only mapping a segment takes the registry's lock, and an eviction pass scans the
/// registry once and frees a tenth of the budget, so its cost is spread over many loads.
public final class MappedSegments: Sendable {
    public static let shared = MappedSegments()
    public static let defaultBudget = 4096

    private struct Entry: Sendable {
        weak var segment: LogSegment?
    }

    private let clock = Atomic<UInt64>(0)
    private let budgetValue = Atomic<Int>(MappedSegments.defaultBudget)
    private let registry = Mutex<[ObjectIdentifier: Entry]>([:])
    private let evictions = Atomic<Int>(0)

    init() {}

    /// Most closed segments kept mapped (at least 16).
    public var budget: Int {
        get { budgetValue.load(ordering: .relaxed) }
        set { budgetValue.store(max(16, newValue), ordering: .relaxed) }
    }

    /// Segments unmapped to stay within the budget since the process started.
    public var evictionCount: Int { evictions.load(ordering: .relaxed) }

    func tick() -> UInt64 { clock.wrappingAdd(1, ordering: .relaxed).newValue }

    /// Registers a closed segment that is now mapped; past the budget, unmaps the least recently
    /// used. The victims are chosen under the lock and unmapped after it (each takes its own
    /// segment's lock, which `LogSegment.storage()` never holds while calling here).
    func add(_ segment: LogSegment) {
        let limit = budget
        let victims: [LogSegment] = registry.withLock { r in
            r[ObjectIdentifier(segment)] = Entry(segment: segment)
            guard r.count > limit else { return [] }
            var live: [(tick: UInt64, id: ObjectIdentifier, segment: LogSegment)] = []
            live.reserveCapacity(r.count)
            for (id, entry) in r {
                if let s = entry.segment { live.append((s.lastUsedTick.load(ordering: .relaxed), id, s)) } else { r[id] = nil }
            }
            let excess = live.count - limit
            guard excess > 0 else { return [] }
            let freeing = min(live.count, excess + max(1, limit / 10))
            live.sort { $0.tick < $1.tick }
            let chosen = live.prefix(freeing).filter { $0.segment !== segment }
            for v in chosen { r[v.id] = nil }
            return chosen.map(\.segment)
        }
        var unmapped = 0
        for v in victims where v.unmapIfIdle() { unmapped += 1 }
        if unmapped > 0 { evictions.add(unmapped, ordering: .relaxed) }
    }
}
