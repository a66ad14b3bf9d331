/// A failure reported by nghttp2, with the call that produced it.
public struct H2Error: Error, CustomStringConvertible, Sendable {
    public var code: Int32
    public var operation: String
    public var description: String { "\(self.operation): \(H2Session.errorString(self.code)) (\(self.code))" }
}
