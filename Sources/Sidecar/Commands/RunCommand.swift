import ArgumentParser

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
