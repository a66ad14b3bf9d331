// Fuzz target: the timing-header parser (TimingHeaders.parseList / parseListKeepingText), and
// TimingListParser against the library on every field line.
// The input is the value of `insight-timing` / `insight-hops` / `insight-chain` as a peer
// would send it; a `\n` in the input starts another field line of the same name (several
// field lines are combined into one list). Every parsed item is then serialised again,
// appended to, and its hop name and numeric parameters read, as the proxy does.
import CFuzzDriver
import Foundation
import H2Proxy
import RawStructuredFieldValues

@testable import Sidecar

func fuzzTiming(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    let bytes = UnsafeBufferPointer(start: data, count: size)
    var block = HeaderBlock()
    block.append(name: ":status", value: "200")
    var start = 0
    var lines = 0
    for i in 0...bytes.count where i == bytes.count || bytes[i] == UInt8(ascii: "\n") {
        let line = UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: bytes[start..<i]))
        for name in ["insight-timing", "insight-hops", "insight-chain"] {
            Array(name.utf8).withUnsafeBytes { n in block.append(name: n, value: line) }
        }
        block.append(name: "grpc-status", value: "0")
        agreeWithTheLibrary(line)
        start = i + 1
        lines += 1
        if lines == 16 { break }
    }
    var problems: [TimingHeaders.Problem] = []
    check(TimingHeaders.parseList("insight-timing", in: block, problems: &problems))
    check(TimingHeaders.parseList("insight-chain", in: block, problems: &problems))
    if let (items, text) = TimingHeaders.parseListKeepingText("insight-hops", in: block, problems: &problems) {
        check(items)
        _ = TimingHeaders.appending("fuzz;t=1", to: text, items: items)
    }
    return 0
}

/// Where the byte-level parser of the lists sidecars write accepts a value, the library reads
/// the same items (``TimingListParser``; the library stays the reference).
private func agreeWithTheLibrary(_ line: UnsafeRawBufferPointer) {
    guard let fast = TimingListParser.items(line) else { return }
    var parser = StructuredFieldValueParser(Array(line))
    let library = try? parser.parseListFieldValue()
    precondition(
        library == fast.map { ItemOrInnerList.item($0) },
        "TimingListParser and the library disagree on \(String(decoding: line, as: UTF8.self).debugDescription)")
    // The typed readers the timing observer uses on its fast path read what the items say.
    guard let plain = TimingListParser.plainItems(line) else { preconditionFailure("items without plain items") }
    precondition(plain.count == fast.count)
    for (p, item) in zip(plain, fast) {
        precondition(p.hopName(in: line) == TimingHeaders.hopName(item), "hop name")
        precondition(TimingEntry(p, in: line) == TimingEntry(item), "timing entry")
        precondition(p.isHopStamp(in: line) == (HopStamp(item) != nil), "hop stamp")
    }
}

private func check(_ items: [Item]?) {
    guard let items else { return }
    precondition(items.count <= TimingHeaders.maxEntries)
    if let text = TimingHeaders.serialize(items) {
        // What we serialise must parse again (round trip through a header block).
        var again = HeaderBlock()
        again.append(name: "insight-timing", value: text)
        var problems: [TimingHeaders.Problem] = []
        if text.utf8.count <= TimingHeaders.maxFieldBytes {
            let reparsed = TimingHeaders.parseList("insight-timing", in: again, problems: &problems)
            precondition(reparsed?.count == items.count, "serialised list does not parse back: \(text)")
        }
    }
    for item in items {
        _ = TimingHeaders.hopName(item)
        for (_, value) in item.rfc9651Parameters {
            _ = TimingHeaders.number(value)
        }
        _ = TimingHeaders.hopItem(TimingHeaders.hopName(item) ?? "x", item.rfc9651Parameters)
        // What the proxy builds from received items.
        if let stamp = HopStamp(item) { _ = stamp.item }
        _ = TimingEntry(item)
    }
    _ = TimingHeaders.appending("fuzz", to: nil, items: items)
}

// libFuzzer's driver with this target's callback (see CFuzzDriver).
exit(runFuzzer { data, size in fuzzTiming(data, size) })

private func runFuzzer(_ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, callback)
}
