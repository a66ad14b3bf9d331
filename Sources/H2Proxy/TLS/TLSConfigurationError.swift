/// A certificate, key or trust bundle that cannot be used; `item` says which.
public struct TLSConfigurationError: Error, CustomStringConvertible, Sendable {
    public enum Item: String, Sendable {
        case certificateChain = "certificate chain"
        case privateKey = "private key"
        case trustRoots = "CA bundle"
        case clientCA = "client CA bundle"
        case context = "TLS context"
    }

    public var item: Item
    public var path: String?
    public var reason: String

    init(_ item: Item, path: String?, reason: String) {
        self.item = item
        self.path = path
        self.reason = reason
    }

    public var description: String {
        if let path { return "cannot use \(self.item.rawValue) \(path): \(self.reason)" }
        return "\(self.item.rawValue): \(self.reason)"
    }
}
