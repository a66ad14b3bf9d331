/// A command that could not do its job (not a configuration error): a one-line message and
/// an exit code.
public struct CommandFailure: Error, CustomStringConvertible {
    public var message: String
    public var exitCode: Int32
    public var description: String { self.message }
}
