extension HeaderBlock {
    /// Whether `content-type` says gRPC (`application/grpc`, with or without a `+codec`): the
    /// one test of whether a request or response is gRPC, for the bridge and its observers.
    public var isGRPC: Bool {
        guard let i = self.firstIndex(of: "content-type") else { return false }
        return self.valueHasPrefix(at: i, "application/grpc")
    }
}
