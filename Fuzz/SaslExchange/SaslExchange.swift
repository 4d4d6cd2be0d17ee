// libFuzzer target: the server side of SASL on hostile client messages. The input's first byte
// picks the mechanism (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN) and the next two give the length of
// the first message; the rest is the second. SCRAM: `receiveClientFirst` (with a credential for
// "alice" and none for anyone else), then `receiveClientFinal`; PLAIN: `PlainAuthentication.parse`;
// both messages also go through `Base64.decode`. Traps, ASan reports and broken state rules are
// findings. See docs/fuzzing.md.
@testable import StrataBroker
import StrataMetadata

func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String = "invariant broken",
             file: StaticString = #file, line: UInt = #line) {
    if !condition() { fatalError(message(), file: file, line: line) }
}

let credentials: [ScramMechanism: ScramCredential] = {
    var out: [ScramMechanism: ScramCredential] = [:]
    for m in ScramMechanism.allCases { out[m] = try! m.credential(password: "pencil", salt: Array("salt-of-alice".utf8), iterations: 4096) }
    return out
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard bytes.count >= 3 else { return 0 }
    let mode = bytes[0] % 3
    let firstLength = min(Int(bytes[1]) << 8 | Int(bytes[2]), bytes.count - 3)
    let first = Array(bytes[3..<3 + firstLength])
    let second = Array(bytes[(3 + firstLength)...])
    _ = Base64.decode(Substring(String(decoding: first, as: UTF8.self)))
    _ = Base64.decode(Substring(String(decoding: second, as: UTF8.self)))
    if mode == 2 {
        if let parsed = try? PlainAuthentication.parse(first) {
            require(!parsed.user.isEmpty, "PLAIN accepted an empty user")
            require(first.count <= 1024, "PLAIN accepted an oversized message")
        }
        return 0
    }
    let mechanism: ScramMechanism = mode == 0 ? .sha256 : .sha512
    var exchange = ScramServerExchange(mechanism: mechanism, serverNonce: "fuzz-server-nonce")
    do {
        let serverFirst = try exchange.receiveClientFirst(first) { $0 == "alice" ? credentials[mechanism] : nil }
        require(exchange.state == .awaitingClientFinal, "client-first accepted but the state did not move")
        require(String(decoding: serverFirst, as: UTF8.self).hasPrefix("r="), "server-first does not start with the nonce")
    } catch {
        require(exchange.state == .failed, "a refused client-first left the exchange usable")
        require((try? exchange.receiveClientFinal(second)) == nil, "a failed exchange accepted a client-final")
        return 0
    }
    do {
        let (user, serverFinal) = try exchange.receiveClientFinal(second)
        // Only the right proof gets here; the fuzzer cannot forge one for "alice" without the key.
        require(exchange.state == .done && user == "alice" && String(decoding: serverFinal, as: UTF8.self).hasPrefix("v="), "an exchange completed wrongly")
    } catch {
        require(exchange.state == .failed, "a refused client-final left the exchange usable")
    }
    require((try? exchange.receiveClientFinal(second)) == nil, "an exchange accepted a second client-final")
    return 0
}
