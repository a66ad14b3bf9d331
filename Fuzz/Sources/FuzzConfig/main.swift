// Fuzz target: the YAML config loader. Any input must either load (and then validate or
// be rejected with a ConfigError) or be rejected with a ConfigError: never crash or trap.
import CFuzzDriver
import Foundation
import Sidecar

func fuzzConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
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

// libFuzzer's driver with this target's callback (see CFuzzDriver).
exit(runFuzzer { data, size in fuzzConfig(data, size) })

private func runFuzzer(_ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, callback)
}
