import StrataBroker
import StrataMetadata

/// DescribeUserScramCredentials and AlterUserScramCredentials: SCRAM users through the Kafka
/// protocol (kafka-configs --alter --add-config 'SCRAM-SHA-256=[password=...]', AdminClient).
/// On an authenticated listener, `super.users` and principals with DESCRIBE / ALTER on the
/// cluster manage users; a
/// PLAINTEXT or unauthenticated-SSL listener is trusted as a whole, as for every other admin API.
extension KafkaRequestHandler {
    func mayManageUsers(_ access: Access, _ op: AclOperation) -> Bool {
        !access.session.authenticated || superUsers.contains(access.session.principal) || (authorizer != nil && access.cluster(op))
    }

    func describeUserScramCredentials(_ request: DescribeUserScramCredentialsRequest, access: Access) -> DescribeUserScramCredentialsResponse {
        guard mayManageUsers(access, .describe) else {
            return DescribeUserScramCredentialsResponse(errorCode: .clusterAuthorizationFailed, errorMessage: "only super.users may describe users here", results: [])
        }
        let all: [(user: String, mechanism: String, iterations: Int32)]
        do { all = try broker.userCredentials() } catch {
            return DescribeUserScramCredentialsResponse(errorCode: .unknownServerError, errorMessage: "\(error)", results: [])
        }
        var byUser: [String: [(mechanism: Int8, iterations: Int32)]] = [:]
        for c in all { byUser[c.user, default: []].append((ScramMechanismCode(name: c.mechanism).rawValue, c.iterations)) }
        // Null or empty: every user (as Kafka answers).
        guard let requested = request.users, !requested.isEmpty else {
            return DescribeUserScramCredentialsResponse(results: byUser.keys.sorted().map { .init(user: $0, errorCode: .none, credentials: byUser[$0]!) })
        }
        var seen: [String: Int] = [:]
        for name in requested { seen[name, default: 0] += 1 }
        return DescribeUserScramCredentialsResponse(results: requested.map { name in
            if seen[name]! > 1 { return .init(user: name, errorCode: .duplicateResource, errorMessage: "user '\(name)' is listed more than once", credentials: []) }
            guard let credentials = byUser[name] else {
                return .init(user: name, errorCode: .resourceNotFound, errorMessage: "attempt to describe a user credential that does not exist", credentials: [])
            }
            return .init(user: name, errorCode: .none, credentials: credentials)
        })
    }

    func alterUserScramCredentials(_ request: AlterUserScramCredentialsRequest, access: Access) -> AlterUserScramCredentialsResponse {
        var order: [String] = []
        var errors: [String: (ErrorCode, String)] = [:]
        func fail(_ user: String, _ code: ErrorCode, _ message: String) { if errors[user] == nil { errors[user] = (code, message) } }
        let names = request.deletions.map(\.name) + request.upsertions.map(\.name)
        for name in names where !order.contains(name) { order.append(name) }
        guard mayManageUsers(access, .alter) else {
            return AlterUserScramCredentialsResponse(results: order.map { ($0, .clusterAuthorizationFailed, "only super.users may alter users here") })
        }
        // One change per (user, mechanism): a pair given twice fails that user's changes.
        var pairs: [String: Int] = [:]
        for (n, m) in request.deletions.map({ ($0.name, $0.mechanism) }) + request.upsertions.map({ ($0.name, $0.mechanism) }) {
            pairs["\(m):\(n)", default: 0] += 1
            if pairs["\(m):\(n)"]! > 1 { fail(n, .duplicateResource, "a user's mechanism is altered more than once in the request") }
        }
        var valid: [(name: String, change: Either)] = []
        enum Either { case delete(ScramMechanism), upsert(ScramCredential) }
        for d in request.deletions {
            guard let m = ScramMechanismCode(rawValue: d.mechanism)?.name.flatMap(ScramMechanism.init(rawValue:)) else {
                fail(d.name, .unsupportedSaslMechanism, "unknown SCRAM mechanism \(d.mechanism)"); continue
            }
            guard (try? broker.scramCredential(user: d.name, mechanism: m)) != nil else {
                fail(d.name, .resourceNotFound, "attempt to delete a user credential that does not exist"); continue
            }
            valid.append((d.name, .delete(m)))
        }
        for u in request.upsertions {
            guard let m = ScramMechanismCode(rawValue: u.mechanism)?.name.flatMap(ScramMechanism.init(rawValue:)) else {
                fail(u.name, .unsupportedSaslMechanism, "unknown SCRAM mechanism \(u.mechanism)"); continue
            }
            guard (ScramMechanism.defaultIterations...ScramMechanism.maxIterations).contains(u.iterations) else {
                fail(u.name, .unacceptableCredential, "iterations must be in \(ScramMechanism.defaultIterations)...\(ScramMechanism.maxIterations)"); continue
            }
            guard !u.salt.isEmpty, u.salt.count <= 1024, u.saltedPassword.count == m.digestBytes else {
                fail(u.name, .unacceptableCredential, "the salt must be 1-1024 bytes and the salted password \(m.digestBytes) bytes"); continue
            }
            guard (try? Broker.validateUserName(u.name)) != nil else {
                fail(u.name, .unacceptableCredential, "a user name is 1-255 bytes without control characters"); continue
            }
            valid.append((u.name, .upsert(m.credential(saltedPassword: u.saltedPassword, salt: u.salt, iterations: u.iterations))))
        }
        for (name, change) in valid where errors[name] == nil {
            do {
                switch change {
                case .delete(let m): try broker.deleteUser(name, mechanism: m)
                case .upsert(let c): try broker.putCredential(user: name, c)
                }
            } catch {
                fail(name, .unknownServerError, "\(error)")
            }
        }
        return AlterUserScramCredentialsResponse(results: order.map { name in
            if let (code, message) = errors[name] { return (name, code, message) }
            return (name, .none, nil)
        })
    }
}
