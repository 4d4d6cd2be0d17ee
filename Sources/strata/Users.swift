import ArgumentParser
import StrataBroker
import StrataMetadata

/// `strata users`: SASL users (SCRAM credentials in the data directory's LMDB). Works next to a
/// running server: LMDB takes writers from several processes, and the server reads credentials
/// at each authentication, so a user added here can log in at once.
struct Users: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "users",
        abstract: "Add, list, delete SASL users (SCRAM-SHA-256/512 credentials; PLAIN checks against them).",
        subcommands: [Add.self, List.self, Delete.self, Passwd.self])

    enum Mechanism: String, ExpressibleByArgument, CaseIterable {
        case all, scramSha256 = "SCRAM-SHA-256", scramSha512 = "SCRAM-SHA-512", plain = "PLAIN"
        /// PLAIN is checked against a SCRAM credential: it gets SCRAM-SHA-256's.
        var mechanisms: [ScramMechanism] {
            switch self {
            case .all: return ScramMechanism.allCases
            case .scramSha256, .plain: return [.sha256]
            case .scramSha512: return [.sha512]
            }
        }
    }

    static func store(_ options: DataOptions) throws -> MetadataStore {
        guard ProcessEnvironment.fileExists(options.data + "/meta/data.mdb") else {
            throw CLIError("no Strata data directory at \(options.data) (strata serve creates it)")
        }
        return try MetadataStore(directory: options.data + "/meta")
    }

    static func password(_ given: String?, passwordFile: String?) throws -> String {
        if let given { return given }
        if let passwordFile {
            guard let text = ProcessEnvironment.readFile(passwordFile, maxBytes: 4096) else { throw CLIError("cannot read \(passwordFile)") }
            return text.hasSuffix("\n") ? String(text.dropLast()) : text
        }
        throw ValidationError("give --password PW or --password-file FILE")
    }

    static func set(_ user: String, _ password: String, _ mechanism: Mechanism, iterations: Int32, in store: MetadataStore) throws {
        try Broker.validateUserName(user)
        guard !password.isEmpty, password.utf8.count <= 1024 else { throw ValidationError("a password is 1-1024 bytes") }
        guard (ScramMechanism.defaultIterations...ScramMechanism.maxIterations).contains(iterations) else {
            throw ValidationError("--iterations must be in \(ScramMechanism.defaultIterations)...\(ScramMechanism.maxIterations)")
        }
        for m in mechanism.mechanisms { try store.putCredential(user: user, try m.credential(password: password, iterations: iterations)) }
    }

    /// What `add` and `passwd` take: the user, the password, and the credentials to make.
    struct Credentials: ParsableArguments {
        @Argument(help: "User name (the principal is User:NAME).") var name: String
        @Option(help: "The password (visible to other local users in the process list: prefer --password-file).") var password: String?
        @Option(help: "Read the password from this file (its first line).") var passwordFile: String?
        @Option(help: "all (default), SCRAM-SHA-256, SCRAM-SHA-512, or PLAIN (stored as SCRAM-SHA-256).") var mechanism: Mechanism = .all
        @Option(help: "SCRAM iterations (4096-16384).") var iterations: Int32 = ScramMechanism.defaultIterations

        /// Stores the credentials; `exists` says whether the user must already exist.
        func store(_ options: DataOptions, exists: Bool) throws {
            let store = try Users.store(options)
            let found = !(try store.credentialList().filter { $0.user == name }.isEmpty)
            if found && !exists { throw CLIError("user '\(name)' exists: use 'strata users passwd'") }
            if !found && exists { throw CLIError("no user '\(name)'") }
            try Users.set(name, try Users.password(password, passwordFile: passwordFile), mechanism, iterations: iterations, in: store)
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add")
        @OptionGroup var options: DataOptions
        @OptionGroup var credentials: Credentials

        func run() throws {
            try credentials.store(options, exists: false)
            printError("added user '\(credentials.name)' (\(credentials.mechanism.mechanisms.map(\.rawValue).joined(separator: ", ")))")
        }
    }

    struct Passwd: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "passwd")
        @OptionGroup var options: DataOptions
        @OptionGroup var credentials: Credentials

        func run() throws {
            try credentials.store(options, exists: true)
            printError("changed the password of '\(credentials.name)'")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list")
        @OptionGroup var options: DataOptions

        func run() throws {
            let rows = try Users.store(options).credentialList()
            printTable(["USER", "MECHANISM", "ITERATIONS"], rows.map { [$0.user, $0.mechanism, String($0.iterations)] })
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "delete")
        @OptionGroup var options: DataOptions
        @Argument(help: "User name.") var name: String

        func run() throws {
            guard try Users.store(options).deleteCredentials(user: name) > 0 else { throw CLIError("no user '\(name)'") }
            printError("deleted user '\(name)'")
        }
    }
}
