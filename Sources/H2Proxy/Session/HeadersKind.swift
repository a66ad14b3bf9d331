public enum HeadersKind: Sendable, Equatable {
    case request
    case response
    /// A 1xx interim response.
    case informational
    case trailers
}
