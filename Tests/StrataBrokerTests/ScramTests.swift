import Foundation
import Testing
@testable import StrataBroker
import StrataMetadata

/// SCRAM and PLAIN on the server side: the RFC 7677 test vector, and hostile client messages.
@Suite struct ScramTests {
    /// RFC 7677 section 3: user "user", password "pencil".
    @Test func rfc7677VectorForScramSha256() throws {
        let salt = try #require(Base64.decode("W22ZaJ0SNY7soEsUEjb6gQ=="))
        let credential = try ScramMechanism.sha256.credential(password: "pencil", salt: salt, iterations: 4096)
        var exchange = ScramServerExchange(mechanism: .sha256, serverNonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
        let serverFirst = try exchange.receiveClientFirst(Array("n,,n=user,r=rOprNGfwEbeRWgbNEkqO".utf8)) { user in
            user == "user" ? credential : nil
        }
        #expect(String(decoding: serverFirst, as: UTF8.self) == "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
        let (user, serverFinal) = try exchange.receiveClientFinal(Array(
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=".utf8))
        #expect(user == "user")
        #expect(String(decoding: serverFinal, as: UTF8.self) == "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        #expect(exchange.state == .done)
    }

    @Test func aWrongProofAnUnknownUserAndReplaysFail() throws {
        let credential = try ScramMechanism.sha512.credential(password: "right")
        func start(_ name: String) throws -> (ScramServerExchange, String) {
            var e = ScramServerExchange(mechanism: .sha512)
            let first = try e.receiveClientFirst(Array("n,,n=\(name),r=clientnonce123".utf8)) { $0 == "alice" ? credential : nil }
            let nonce = String(decoding: first, as: UTF8.self).split(separator: ",")[0].dropFirst(2)
            return (e, String(nonce))
        }
        var (e, nonce) = try start("alice")
        #expect(throws: AuthenticationError.self) { try e.receiveClientFinal(Array("c=biws,r=\(nonce),p=\(Base64.encode([UInt8](repeating: 1, count: 64)))".utf8)) }
        #expect(e.state == .failed)
        // A second client-final on a failed exchange is refused too.
        #expect(throws: AuthenticationError.self) { try e.receiveClientFinal(Array("c=biws,r=\(nonce),p=AAAA".utf8)) }
        // An unknown user gets a salt (the exchange looks the same) and fails at the proof.
        (e, nonce) = try start("mallory")
        #expect(throws: AuthenticationError.self) { try e.receiveClientFinal(Array("c=biws,r=\(nonce),p=\(Base64.encode([UInt8](repeating: 1, count: 64)))".utf8)) }
    }

    @Test func hostileClientFirstMessagesAreRefusedWithoutTrapping() {
        let messages: [[UInt8]] = [
            [], Array("garbage".utf8), Array("y,,n=a,r=abcdefghij".utf8), Array("p=tls-unique,,n=a,r=abcdefghij".utf8),
            Array("n,,n=a".utf8), Array("n,,r=abcdefghij,n=a".utf8), Array("n,,n=a=b,r=abcdefghij".utf8), Array("n,,n=a,r=short".utf8),
            Array("n,,n=a,r=abcdefghij,tokenauth=true".utf8), Array("n,a=bob,n=alice,r=abcdefghij".utf8), [0xff, 0xfe, 0x2c, 0x2c],
            Array("n,,n=\(String(repeating: "a", count: 2000)),r=abcdefghij".utf8), Array("n,,n=,r=abcdefghij".utf8),
        ]
        for m in messages {
            var e = ScramServerExchange(mechanism: .sha256)
            #expect(throws: AuthenticationError.self, "\(String(decoding: m.prefix(30), as: UTF8.self))") {
                _ = try e.receiveClientFirst(m) { _ in nil }
            }
        }
        var e = ScramServerExchange(mechanism: .sha256)
        #expect(throws: AuthenticationError.self, "client-final first") { _ = try e.receiveClientFinal(Array("c=biws,r=x,p=AAAA".utf8)) }
        #expect(ScramServerExchange.saslName("a=2Cb=3Dc") == "a,b=c")
        #expect(ScramServerExchange.saslName("a=2") == nil)
    }

    @Test func plainMessagesParseStrictly() throws {
        let ok = try PlainAuthentication.parse(Array("\u{0}alice\u{0}pw".utf8))
        #expect(ok.user == "alice" && ok.password == "pw")
        #expect(try PlainAuthentication.parse(Array("alice\u{0}alice\u{0}pw".utf8)).user == "alice")
        for bad in ["alice\u{0}pw", "bob\u{0}alice\u{0}pw", "\u{0}\u{0}pw", "\u{0}a\u{0}b\u{0}c"] {
            #expect(throws: AuthenticationError.self) { _ = try PlainAuthentication.parse(Array(bad.utf8)) }
        }
        #expect(throws: AuthenticationError.self) { _ = try PlainAuthentication.parse([UInt8](repeating: 0x41, count: 5000)) }
    }

    @Test func base64RoundTripsAndRejectsGarbage() {
        for n in 0..<40 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            #expect(Base64.decode(Substring(Base64.encode(bytes))) == bytes)
        }
        #expect(Base64.encode(Array("n,,".utf8)) == "biws")
        for bad in ["abc", "ab!d", "a===", "====", "ab=c"] { #expect(Base64.decode(Substring(bad)) == nil, "\(bad)") }
    }

    @Test func plainChecksAgainstStoredCredentialsAndTheLimiterCounts() throws {
        let dir = TempDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        defer { try? broker.close() }
        try broker.setUserPassword("alice", password: "pw", mechanisms: [.sha512])
        #expect(broker.authenticatePlain(user: "alice", password: "pw"))
        #expect(!broker.authenticatePlain(user: "alice", password: "pw2"))
        #expect(!broker.authenticatePlain(user: "bob", password: "pw"))
        #expect(try broker.userCredentials().map(\.mechanism) == ["SCRAM-SHA-512"])
        // The stored value is a credential, not the password.
        let stored = try #require(try broker.scramCredential(user: "alice", mechanism: .sha512))
        #expect(stored.iterations == 4096 && stored.salt.count == 32 && stored.storedKey.count == 64)
        #expect(throws: (any Error).self) { try broker.setUserPassword("", password: "x") }
        #expect(throws: (any Error).self) { try broker.setUserPassword("a\nb", password: "x") }
        #expect(try broker.deleteUser("alice") == 1)
        #expect(!broker.authenticatePlain(user: "alice", password: "pw"))

        let limiter = AuthFailureLimiter(maxFailures: 2, windowMs: 1000)
        #expect(limiter.allows("h", nowMs: 0))
        limiter.failed("h", nowMs: 0)
        limiter.failed("h", nowMs: 10)
        #expect(!limiter.allows("h", nowMs: 20))
        #expect(limiter.allows("other", nowMs: 20))
        #expect(limiter.allows("h", nowMs: 1200))
    }
}
