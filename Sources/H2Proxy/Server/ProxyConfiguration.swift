import NIOCore

/// Everything the proxy core needs to run; the application builds it from flags and YAML.
public struct ProxyConfiguration: Sendable {
    public var listenHost: String
    public var listenPort: Int
    public var upstreamHost: String
    public var upstreamPort: Int
    /// Settings for sessions with clients (server role).
    public var downstreamSession = H2Session.Settings()
    /// Settings for sessions with the upstream hop (client role).
    public var upstreamSession = H2Session.Settings()
    public var connectTimeout: TimeAmount = .seconds(5)
    /// Bytes of frames outside flow control (HEADERS, trailers, control frames) that may pile
    /// up for a peer whose socket is full; past it the connection ends with GOAWAY
    /// ENHANCE_YOUR_CALM (`insight_limit_hits_total{limit="max_queued_control_bytes"}`).
    public var maxQueuedControlBytes = 1 << 20
    /// Unforwarded DATA bytes (both directions) one client connection may hold before its new
    /// streams are refused with REFUSED_STREAM; streams already open go on.
    public var connectionBufferBudget = 32 << 20
    /// Upstream connections per event loop.
    public var maxUpstreamConnectionsPerLoop = 16
    /// A stream that finds no slot on an upstream connection for this long gets UNAVAILABLE
    /// (gRPC) or 503 (``UpstreamStream/upstreamWaitTimedOut(_:)``).
    public var upstreamWaitTimeout: TimeAmount = .seconds(10)
    /// An upstream connection without any stream for this long gets GOAWAY and is closed.
    public var upstreamIdleTimeout: TimeAmount = .seconds(60)
    /// Times a refused stream (REFUSED_STREAM, above a GOAWAY's last stream ID) is retried.
    public var maxRetries = 2
    /// Time between GOAWAY(max id) and the final GOAWAY on shutdown.
    public var goAwayGrace: TimeAmount = .milliseconds(100)
    /// Client connections open at once, over all loops; more are closed at accept.
    public var maxConnections = 10_000
    /// A client connection without any stream for this long gets GOAWAY and is closed.
    public var idleTimeout: TimeAmount = .minutes(5)
    /// A client connection must send its preface and SETTINGS within this time.
    public var prefaceTimeout: TimeAmount = .seconds(10)
    /// Client connections older than this get a graceful GOAWAY (nil: no limit).
    public var maxConnectionAge: TimeAmount?

    /// Starts the messages of responses the proxy makes up itself (e.g. the hop name), so a
    /// client can tell which hop's sidecar saw the failure.
    public var faultPrefix: String?
    /// TLS towards clients; nil: h2c.
    public var downstreamTLS: TLSEndpoint?
    /// TLS towards the upstream hop; nil: h2c.
    public var upstreamTLS: TLSEndpoint?
    /// Where TLS handshake failures are counted, including TLS attempts on an h2c listener.
    public var tlsMetrics: TLSMetrics?

    public init(listenHost: String, listenPort: Int, upstreamHost: String, upstreamPort: Int) {
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.upstreamHost = upstreamHost
        self.upstreamPort = upstreamPort
    }
}
