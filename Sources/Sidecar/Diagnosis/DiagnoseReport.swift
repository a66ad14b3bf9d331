struct DiagnoseReport: Codable {
    var hop: String
    var now: Double
    var windowSeconds: Double
    var paths: [Diagnosis.PathVerdict]

    enum CodingKeys: String, CodingKey {
        case hop, now, paths
        case windowSeconds = "window_seconds"
    }
}
