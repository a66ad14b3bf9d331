// Fuzz target: the YAML config loader. Any input must either load (and then validate or
// be rejected with a ConfigError) or be rejected with a ConfigError: never crash or trap.
import Sidecar

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let config = try SidecarConfig.load(yaml: text)
        _ = try? config.validated()
    } catch {
        _ = error.field
        _ = error.reason
    }
    return 0
}
