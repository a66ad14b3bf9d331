import ArgumentParser
import Foundation

/// `insight-sidecar`: the command line.
public struct InsightCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "insight-sidecar",
        abstract: "HTTP/2 and gRPC sidecar that times every hop of a cross-region call.",
        version: BuildInfo.versionLine,
        subcommands: [
            RunCommand.self, CheckConfigCommand.self, ProbeCommand.self, DemoCommand.self, DiagnoseCommand.self,
        ],
        defaultSubcommand: nil
    )

    public init() {}

    /// The exit code of a command-line usage error: 1 for `probe` (grpc_health_probe's, so that
    /// 2 keeps meaning "cannot connect"), 2 for every other command.
    static func usageExitCode(arguments: [String] = CommandLine.arguments) -> Int32 {
        arguments.dropFirst().first == "probe" ? 1 : 2
    }

    /// Parses and runs; usage and configuration errors print one line and exit with 2 (1 for `probe`).
    public static func entry() async -> Never {
        do {
            var command = try Self.parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            Foundation.exit(0)
        } catch let error as ExitCode {
            Foundation.exit(error.rawValue)
        } catch let error as CommandFailure {
            FileHandle.standardError.write(Data("insight-sidecar: \(error.message)\n".utf8))
            Foundation.exit(error.exitCode)
        } catch let error as ConfigError {
            FileHandle.standardError.write(Data("insight-sidecar: \(error)\n".utf8))
            Foundation.exit(2)
        } catch let error as SidecarStartError {
            FileHandle.standardError.write(Data("insight-sidecar: \(error)\n".utf8))
            Foundation.exit(1)
        } catch {
            let code = Self.exitCode(for: error)
            if code == .success {
                print(Self.fullMessage(for: error))
                Foundation.exit(0)
            }
            let message = Self.message(for: error).replacingNewlines()
            FileHandle.standardError.write(Data("insight-sidecar: \(message) (see --help)\n".utf8))
            if error is ExitCode { Foundation.exit(code.rawValue) }
            Foundation.exit(Self.usageExitCode())
        }
    }
}

public struct RunCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run the sidecar in front of one upstream hop.")

    @OptionGroup var options: ConfigOptions

    public init() {}

    public func run() async throws {
        let config = try self.options.resolve()
        try await Sidecar(config: config).run()
    }
}

public struct CheckConfigCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate the configuration (file and flags) and print it; start nothing.")

    @OptionGroup var options: ConfigOptions

    public init() {}

    public func run() async throws {
        let c = try self.options.resolve()
        _ = try c.makeTLSContexts()
        for warning in c.warnings { print("warning: \(warning)") }
        for warning in CertificateExpiry(config: c).warnings() { print("warning: \(warning)") }
        print("configuration ok")
        print("listen: \(c.listen)")
        print("upstream: \(c.upstream.map { "\($0)" } ?? "-")")
        print("hop: \(c.hop ?? "-")")
        print("region: \(c.region ?? "-")")
        print("admin: \(c.admin)")
        print("event_loops: \(c.eventLoops)")
        print("drain_timeout: \(DurationValue.format(c.drainTimeout))")
        print("tls: \(c.tls.map { "cert \($0.cert ?? "-"), client_ca \($0.clientCA ?? "-")" } ?? "off (h2c)")")
        print("upstream_tls: \(c.upstreamTLS.map { "ca \($0.ca ?? "system"), cert \($0.cert ?? "-")" } ?? "off (h2c)")")
    }
}
