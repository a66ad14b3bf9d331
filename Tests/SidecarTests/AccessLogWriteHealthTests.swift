import Foundation
import Metrics
import Testing

@testable import Sidecar

@Suite struct AccessLogWriteHealthTests {
    @Test func logsOnceWhenWritesStartFailingAndOnceWhenTheyRecover() {
        var h = AccessLogWriteHealth()
        #expect(h.event(.written) == .none)
        #expect(h.event(.failed(errno: ENOSPC, lines: 3)) == .logFailing(errno: ENOSPC))
        #expect(h.event(.failed(errno: EPIPE, lines: 4)) == .none)
        #expect(h.state == .failing(errno: ENOSPC))
        #expect(h.lostWhileFailing == 7)
        #expect(h.event(.written) == .logRecovered(lost: 7))
        #expect(h.state == .healthy && h.lostWhileFailing == 0)
        #expect(h.event(.written) == .none)
        #expect(h.event(.failed(errno: EIO, lines: 1)) == .logFailing(errno: EIO))
    }

    /// A short write followed by an error: the lines that ended within the written bytes went
    /// out; the one cut in the middle and the rest are lost.
    @Test func countsTheLinesAShortWriteLeftUnwritten() {
        let ends = [10, 25, 40]
        #expect(AccessLogWriteHealth.linesLost(lineEnds: ends, written: 0) == 3)
        #expect(AccessLogWriteHealth.linesLost(lineEnds: ends, written: 9) == 3)
        #expect(AccessLogWriteHealth.linesLost(lineEnds: ends, written: 10) == 2)
        #expect(AccessLogWriteHealth.linesLost(lineEnds: ends, written: 30) == 1)
        #expect(AccessLogWriteHealth.linesLost(lineEnds: ends, written: 40) == 0)
        #expect(AccessLogWriteHealth.linesLost(lineEnds: [], written: 0) == 0)
    }

    /// `/dev/full` fails every write with `ENOSPC`: each line is counted as a write error, none
    /// as a full queue.
    @Test func aFullDeviceCountsEveryLineAsAWriteError() throws {
        let registry = MetricsRegistry()
        let log = try AccessLog(path: "/dev/full", hop: "test", registry: registry)
        for _ in 0..<25 { log.enqueue(AccessLogTests.entry()) }
        #expect(log.stop(timeout: .seconds(5)))
        #expect(log.lostToWriteError == 25)
        #expect(log.dropped == 0)
        let text = registry.render()
        #expect(text.contains("insight_access_log_dropped_total{hop=\"test\",reason=\"write_error\"} 25\n"))
        #expect(text.contains("insight_access_log_dropped_total{hop=\"test\",reason=\"queue_full\"} 0\n"))
    }
}
