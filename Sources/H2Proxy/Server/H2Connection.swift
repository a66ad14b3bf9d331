/// A connection whose nghttp2 session may have frames to write.
protocol H2Connection: AnyObject {
    var isDirty: Bool { get set }
    /// Writes what the session has, then reacts to the events that writing produced.
    func flushNow()
}
