struct ApiVersionsRequest: KafkaRequestBody {
    var clientSoftwareName = ""
    var clientSoftwareVersion = ""

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> ApiVersionsRequest {
        var m = ApiVersionsRequest()
        if v >= 3 {
            // Null is not valid here, but nothing depends on these names: accepted as empty.
            m.clientSoftwareName = try r.nullableString() ?? ""
            m.clientSoftwareVersion = try r.nullableString() ?? ""
            try r.taggedFields()
        }
        return m
    }
}

struct ApiVersionsResponse: KafkaResponseBody {
    struct Api { var key: Int16; var min: Int16; var max: Int16 }
    var errorCode: ErrorCode = .none
    var apis: [Api] = []
    var throttleTimeMs: Int32 = 0

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int16(errorCode.rawValue)
        w.array(apis) { w, a in
            w.int16(a.key)
            w.int16(a.min)
            w.int16(a.max)
            w.taggedFields()
        }
        if v >= 1 { w.int32(throttleTimeMs) }
        w.taggedFields()
    }
}
