internal import COpenSSL
internal import COpenSSLShims

/// The BIO between OpenSSL and a connection's ``TLSCiphertextBuffer``: OpenSSL reads the
/// received `ByteBuffer` and writes the outgoing one directly.
///
/// The BIO's data pointer is its ``TLSConnection``, unretained: the connection owns the `SSL`,
/// which owns the BIO, so the BIO never outlives it.
extension TLSConnection {
    /// The method table, made once per process and never freed.
    nonisolated(unsafe) static let bioMethod: OpaquePointer = {
        guard let method = BIO_meth_new(BIO_get_new_index() | insight_BIO_TYPE_SOURCE_SINK, "insight ByteBuffer")
        else { fatalError("OpenSSL cannot allocate a BIO_METHOD") }
        BIO_meth_set_read(method, tlsBIORead)
        BIO_meth_set_write(method, tlsBIOWrite)
        BIO_meth_set_puts(method, tlsBIOPuts)
        BIO_meth_set_ctrl(method, tlsBIOControl)
        return method
    }()

    /// A new BIO for this connection (one reference, which `SSL_set_bio` takes over).
    func makeBIO() -> OpaquePointer? {
        guard let bio = BIO_new(Self.bioMethod) else { return nil }
        BIO_set_data(bio, Unmanaged.passUnretained(self).toOpaque())
        BIO_set_init(bio, 1)
        return bio
    }

    fileprivate static func from(bio: OpaquePointer?) -> TLSConnection? {
        guard let bio, let data = BIO_get_data(bio) else { return nil }
        return Unmanaged<TLSConnection>.fromOpaque(data).takeUnretainedValue()
    }
}

// MARK: - callbacks (capture nothing; the connection comes back through the BIO's data)

/// OpenSSL wants ciphertext: copy what was received, or ask it to retry when there is none.
private let tlsBIORead: @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>?, Int32) -> Int32 = {
    bio, data, length in
    insight_BIO_clear_retry_flags(bio)
    guard let data, length > 0, let connection = TLSConnection.from(bio: bio) else { return 0 }
    let count = connection.ciphertext.read(into: UnsafeMutableRawBufferPointer(start: data, count: Int(length)))
    if count == 0 {
        insight_BIO_set_retry_read(bio)
        return -1
    }
    return Int32(count)
}

/// OpenSSL produced records: append them to the outgoing buffer (always all of them).
private let tlsBIOWrite: @convention(c) (OpaquePointer?, UnsafePointer<CChar>?, Int32) -> Int32 = {
    bio, data, length in
    insight_BIO_clear_retry_flags(bio)
    guard let data, length > 0, let connection = TLSConnection.from(bio: bio) else { return 0 }
    connection.ciphertext.write(UnsafeRawBufferPointer(start: data, count: Int(length)))
    return length
}

private let tlsBIOPuts: @convention(c) (OpaquePointer?, UnsafePointer<CChar>?) -> Int32 = { bio, string in
    guard let string else { return 0 }
    return tlsBIOWrite(bio, string, Int32(strlen(string)))
}

/// Flush is a no-op (the handler sends on flush); pending counts come from the buffer.
private let tlsBIOControl: @convention(c) (OpaquePointer?, Int32, Int, UnsafeMutableRawPointer?) -> Int = {
    bio, command, _, _ in
    switch command {
    case BIO_CTRL_FLUSH, BIO_CTRL_GET_CLOSE, BIO_CTRL_SET_CLOSE:
        return 1
    case BIO_CTRL_PENDING:
        return TLSConnection.from(bio: bio)?.ciphertext.inboundBytes ?? 0
    case BIO_CTRL_WPENDING:
        return TLSConnection.from(bio: bio)?.ciphertext.outboundBytes ?? 0
    default:
        return 0
    }
}
