/// A configuration value that cannot be used: names the field and the reason.
public struct ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    public var field: String
    public var reason: String

    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }

    public var description: String { "invalid configuration: \(self.field): \(self.reason)" }
}
