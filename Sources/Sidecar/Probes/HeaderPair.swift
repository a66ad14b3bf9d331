public struct HeaderPair: Sendable, Equatable {
    public var name: String
    public var value: String
}
