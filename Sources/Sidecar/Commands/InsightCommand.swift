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
