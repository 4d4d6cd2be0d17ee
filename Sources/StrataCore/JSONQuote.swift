/// A JSON string literal for `s` (control characters escaped as \u00XX).
public func jsonQuote(_ s: String) -> String {
    var out = "\""
    for c in s.unicodeScalars {
        switch c {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if c.value < 0x20 { out += String(format4(c.value)) } else { out.unicodeScalars.append(c) }
        }
    }
    return out + "\""
}

private func format4(_ v: UInt32) -> String {
    let hex = Array("0123456789abcdef")
    return "\\u00" + String(hex[Int(v >> 4)]) + String(hex[Int(v & 0xF)])
}
