import Logging

/// swift-otel's diagnostic logger, read for what its batch processor did with each batch.
///
/// swift-otel 1.6 keeps its drop counts to itself and says them only in its diagnostic log
/// ("Exported batch.", "Failed to export batch.", "Spans were dropped this iteration because
/// queue was full", each with the batch size or drop count as metadata). This handler turns
/// those lines into ``SpanExportHealth`` events and `insight_spans_dropped_total`, and passes
/// swift-otel's other warnings and errors to the sidecar's log. The e2e tests (collector
/// down, answering 500, hanging) fail if a later swift-otel says them differently.
struct SpanExportLogHandler: LogHandler {
    let report: @Sendable (SpanExportHealth.Event) -> Void
    let forward: Logger
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let message = event.message.description
        switch message {
        case "Exported batch.":
            self.report(.exported(spans: self.integer("batch_size", event) ?? 0))
        case "Failed to export batch.":
            // swift-otel's own export timeout (`TimeoutError`) or AsyncHTTPClient's request
            // deadline (`HTTPClientError.deadlineExceeded`, `.readTimeout`…): a collector that
            // does not answer.
            let timedOut =
                event.error.map { e in
                    let text = "\(type(of: e)) \(e)".lowercased()
                    return text.contains("timeout") || text.contains("deadline")
                } ?? false
            self.report(
                .dropped(timedOut ? .exportTimeout : .exportFailed, spans: self.integer("batch_size", event) ?? 0))
        case "Spans were dropped this iteration because queue was full":
            self.report(.dropped(.queueFull, spans: self.integer("dropped_count", event) ?? 0))
        default:
            guard event.level >= .warning else { return }
            var metadata = self.metadata
            if let m = event.metadata { metadata.merge(m) { $1 } }
            if let e = event.error { metadata["error"] = "\(e)" }
            self.forward.log(level: event.level, "swift-otel: \(message)", metadata: metadata)
        }
    }

    private func integer(_ key: String, _ event: LogEvent) -> Int? {
        let value = event.metadata?[key] ?? self.metadata[key]
        return value.flatMap { Int("\($0)") }
    }
}
