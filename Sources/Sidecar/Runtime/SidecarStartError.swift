/// A failure to start (a port in use, say): exit code 1, unlike configuration errors.
public struct SidecarStartError: Error, CustomStringConvertible {
    public var what: String
    public var underlying: String
    public var description: String { "cannot start: \(self.what): \(self.underlying)" }
}
