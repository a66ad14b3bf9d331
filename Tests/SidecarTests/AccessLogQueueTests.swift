import Foundation
import Metrics
import Testing

@testable import Sidecar

@Suite struct AccessLogQueueTests {
    @Test func holdsAtMostItsCapacityAndCountsWhatItDrops() {
        var q = AccessLogQueue<Int>(capacity: 3)
        let offers = (0..<5).map { q.offer($0) }
        #expect(
            offers == [
                .queued(wakeWriter: false), .queued(wakeWriter: false), .queued(wakeWriter: false), .dropped, .dropped,
            ])
        #expect(q.waiting == [0, 1, 2])
        #expect(q.dropped == 2)
        var batch: [Int] = []
        q.take(swappingWith: &batch)
        #expect(batch == [0, 1, 2])
        #expect(q.waiting.isEmpty)
        let again = q.offer(9)
        #expect(again == .queued(wakeWriter: false))
        #expect(q.dropped == 2)
    }

    @Test func theFirstOfferAfterTheWriterWaitsWakesIt() {
        var q = AccessLogQueue<Int>(capacity: 4)
        let waits = q.writerWaits()
        let first = q.offer(1)
        let second = q.offer(2)
        // Entries came in: the writer takes them instead of waiting.
        let waitsAgain = q.writerWaits()
        #expect(waits)
        #expect(first == .queued(wakeWriter: true))
        #expect(second == .queued(wakeWriter: false))
        #expect(!waitsAgain)
    }

    /// The log's output is a pipe nobody reads: offering never blocks, the queue holds what the
    /// pipe cannot, the rest is dropped and counted; once read, every entry not dropped is there.
    @Test func aStuckOutputDropsAndCountsInsteadOfBlocking() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer {
            close(fds[0])
            close(fds[1])
        }
        let registry = MetricsRegistry()
        let log = try AccessLog(path: "/dev/fd/\(fds[1])", hop: "test", registry: registry, capacity: 16)
        let total = 5000
        let start = ContinuousClock.now
        for _ in 0..<total { log.enqueue(AccessLogTests.entry()) }
        // A blocking enqueue would never return; the bound only has to tell "returned" from that.
        #expect(ContinuousClock.now - start < .seconds(20))
        let dropped = log.dropped
        #expect(dropped > 0)
        let series = "insight_access_log_dropped_total{hop=\"test\",reason=\"queue_full\"}"
        #expect(registry.render().contains("\(series) \(dropped)\n"))

        _ = fcntl(fds[0], F_SETFL, O_NONBLOCK)
        var read = 0
        var buffer = [UInt8](repeating: 0, count: 65536)
        var stopped = false
        while true {
            let n = buffer.withUnsafeMutableBytes { Foundation.read(fds[0], $0.baseAddress, $0.count) }
            if n > 0 {
                read += buffer[0..<n].filter { $0 == UInt8(ascii: "\n") }.count
            } else if stopped {
                break
            } else {
                stopped = log.stop(timeout: .milliseconds(20))
            }
        }
        #expect(UInt64(read) + dropped == UInt64(total))
        #expect(log.dropped == dropped)
    }

    @Test func linesReachTheOutputAfterStop() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("al-\(UUID().uuidString).jsonl").path
        defer { unlink(path) }
        let log = try AccessLog(path: path, hop: "test", registry: nil)
        for _ in 0..<3 { log.enqueue(AccessLogTests.entry()) }
        #expect(log.stop())
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text == String(repeating: AccessLog.line(AccessLogTests.entry()) + "\n", count: 3))
        #expect(!log.enqueue(AccessLogTests.entry()))
    }
}
