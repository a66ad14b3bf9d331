public enum StreamDirection: Sendable {
    case request
    case response
}
