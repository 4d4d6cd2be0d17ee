import NIOCore
import StrataBroker
import StrataMetadata

/// DescribeAcls, CreateAcls and DeleteAcls v1 (`strata acls --bootstrap`), the versions Kafka
/// 2.0 and later serve.
extension KafkaClient {
    private static func write(_ f: AclFilter, _ w: inout KafkaWriter) {
        w.int8(f.resourceType)
        w.nullableString(f.resourceName)
        w.int8(f.patternType)
        w.nullableString(f.principal)
        w.nullableString(f.host)
        w.int8(f.operation)
        w.int8(f.permission)
    }

    public func describeAcls(_ filter: AclFilter) throws -> [AclBinding] {
        var w = KafkaWriter(capacity: 64)
        Self.write(filter, &w)
        var r = KafkaReader(try request(apiKey: 29, version: 1, body: Self.strip(w)))
        _ = try r.int32()
        let error = try r.int16()
        let message = try r.nullableString()
        guard error == 0 else { throw ClientError("DescribeAcls: Kafka error \(error) \(message ?? "")") }
        let groups: [[AclBinding]] = try r.array { r in
            let type = try r.int8()
            let name = try r.string()
            let pattern = try r.int8()
            return try r.array { r in
                AclBinding(resourceType: type, resourceName: name, patternType: pattern, principal: try r.string(), host: try r.string(),
                           operation: try r.int8(), permission: try r.int8())
            }
        }
        return groups.flatMap { $0 }
    }

    /// Per binding: (error code, message).
    public func createAcls(_ bindings: [AclBinding]) throws -> [(error: Int16, message: String?)] {
        var w = KafkaWriter(capacity: 64 + bindings.count * 64)
        w.array(bindings) { w, b in
            w.int8(b.resourceType)
            w.string(b.resourceName)
            w.int8(b.patternType)
            w.string(b.principal)
            w.string(b.host)
            w.int8(b.operation)
            w.int8(b.permission)
        }
        var r = KafkaReader(try request(apiKey: 30, version: 1, body: Self.strip(w)))
        _ = try r.int32()
        return try r.array { r in (try r.int16(), try r.nullableString()) }
    }

    /// Per filter: (error code, message, the bindings deleted).
    public func deleteAcls(_ filters: [AclFilter]) throws -> [(error: Int16, message: String?, deleted: [AclBinding])] {
        var w = KafkaWriter(capacity: 64 + filters.count * 64)
        w.array(filters) { w, f in Self.write(f, &w) }
        var r = KafkaReader(try request(apiKey: 31, version: 1, body: Self.strip(w)))
        _ = try r.int32()
        return try r.array { r in
            let error = try r.int16()
            let message = try r.nullableString()
            let matching: [AclBinding] = try r.array { r in
                _ = try r.int16()
                _ = try r.nullableString()
                return AclBinding(resourceType: try r.int8(), resourceName: try r.string(), patternType: try r.int8(), principal: try r.string(),
                                  host: try r.string(), operation: try r.int8(), permission: try r.int8())
            }
            return (error, message, matching)
        }
    }
}
