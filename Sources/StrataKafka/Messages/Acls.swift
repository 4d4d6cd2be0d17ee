import NIOCore
import StrataMetadata

/// DescribeAcls, CreateAcls, DeleteAcls v0-3 (flexible from v2). v0 has no pattern type: its
/// bindings are LITERAL, its filters match LITERAL ones.
struct AclFilterFields {
    var resourceType: Int8
    var resourceName: String?
    var patternType: Int8
    var principal: String?
    var host: String?
    var operation: Int8
    var permission: Int8

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> AclFilterFields {
        let type = try r.int8()
        let name = try r.nullableString()
        let pattern: Int8 = v >= 1 ? try r.int8() : 3
        let principal = try r.nullableString()
        let host = try r.nullableString()
        let op = try r.int8()
        let permission = try r.int8()
        try r.taggedFields()
        return AclFilterFields(resourceType: type, resourceName: name, patternType: pattern, principal: principal, host: host, operation: op, permission: permission)
    }
}

struct DescribeAclsRequest: KafkaRequestBody {
    var filter: AclFilterFields

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> DescribeAclsRequest {
        DescribeAclsRequest(filter: try AclFilterFields.read(&r, version: v))
    }
}

struct DescribeAclsResponse: KafkaResponseBody {
    var errorCode: ErrorCode = .none
    var errorMessage: String?
    var bindings: [AclBinding] = []

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.int16(errorCode.rawValue)
        w.nullableString(errorMessage)
        var groups: [(type: Int8, name: String, pattern: Int8, acls: [AclBinding])] = []
        for b in bindings {
            if let i = groups.firstIndex(where: { $0.type == b.resourceType && $0.name == b.resourceName && $0.pattern == b.patternType }) {
                groups[i].acls.append(b)
            } else {
                groups.append((b.resourceType, b.resourceName, b.patternType, [b]))
            }
        }
        w.array(groups) { w, g in
            w.int8(g.type)
            w.string(g.name)
            if v >= 1 { w.int8(g.pattern) }
            w.array(g.acls) { w, b in
                w.string(b.principal)
                w.string(b.host)
                w.int8(b.operation)
                w.int8(b.permission)
                w.taggedFields()
            }
            w.taggedFields()
        }
        w.taggedFields()
    }

    func forEachErrorCode(_ body: (ErrorCode) -> Void) { body(errorCode) }
}

struct CreateAclsRequest: KafkaRequestBody {
    var creations: [AclBinding]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> CreateAclsRequest {
        CreateAclsRequest(creations: try r.array(minElementBytes: 9) { r in
            let type = try r.int8()
            let name = try r.string()
            let pattern: Int8 = v >= 1 ? try r.int8() : 3
            let principal = try r.string()
            let host = try r.string()
            let op = try r.int8()
            let permission = try r.int8()
            try r.taggedFields()
            return AclBinding(resourceType: type, resourceName: name, patternType: pattern, principal: principal, host: host, operation: op, permission: permission)
        })
    }
}

struct CreateAclsResponse: KafkaResponseBody {
    var results: [(errorCode: ErrorCode, message: String?)]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.array(results) { w, r in
            w.int16(r.errorCode.rawValue)
            w.nullableString(r.message)
            w.taggedFields()
        }
        w.taggedFields()
    }

    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for r in results { body(r.errorCode) } }
}

struct DeleteAclsRequest: KafkaRequestBody {
    var filters: [AclFilterFields]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> DeleteAclsRequest {
        DeleteAclsRequest(filters: try r.array(minElementBytes: 9) { try AclFilterFields.read(&$0, version: v) })
    }
}

struct DeleteAclsResponse: KafkaResponseBody {
    var results: [(errorCode: ErrorCode, message: String?, matching: [AclBinding])]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.array(results) { w, r in
            w.int16(r.errorCode.rawValue)
            w.nullableString(r.message)
            w.array(r.matching) { w, b in
                w.int16(0)
                w.nullableString(nil)
                w.int8(b.resourceType)
                w.string(b.resourceName)
                if v >= 1 { w.int8(b.patternType) }
                w.string(b.principal)
                w.string(b.host)
                w.int8(b.operation)
                w.int8(b.permission)
                w.taggedFields()
            }
            w.taggedFields()
        }
        w.taggedFields()
    }

    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for r in results { body(r.errorCode) } }
}
