import Foundation

/// The one-sided Mann–Whitney U (Wilcoxon rank-sum) test of "recent samples are larger than
/// baseline samples": how often a recent sample beats a baseline one, and how surprising that
/// is if both came from the same distribution. Pure; no assumption about the shape of the
/// latency distribution, and one outlier moves it by one rank at most.
struct MannWhitneyTest: Equatable {
    /// U of the recent samples: the number of (recent, baseline) pairs where the recent sample
    /// is larger, ties counting one half.
    var u: Double
    /// The Vargha–Delaney A effect size, U / (recent count × baseline count): the probability
    /// that a recent sample is larger than a baseline one (ties half). 0.5 when nothing moved;
    /// 0.71 and above is conventionally a large effect.
    var superiority: Double
    /// One-sided p-value: the chance of a U at least this large if recent and baseline samples
    /// came from one distribution. Normal approximation with tie and continuity corrections;
    /// 1 when either side is empty or every sample is equal.
    var pValue: Double

    /// - Parameters:
    ///   - recent: recent samples, sorted ascending.
    ///   - baseline: baseline samples, sorted ascending.
    init(sortedRecent recent: [Double], sortedBaseline baseline: [Double]) {
        let (m, n) = (Double(recent.count), Double(baseline.count))
        guard m > 0, n > 0 else {
            (self.u, self.superiority, self.pValue) = (0, 0.5, 1)
            return
        }
        // One merge pass over both sorted lists, a group of equal values at a time.
        var u = 0.0
        var ties = 0.0  // Σ (t³ − t) over groups of t equal values
        var (i, j) = (0, 0)
        while i < recent.count || j < baseline.count {
            let value = min(i < recent.count ? recent[i] : .infinity, j < baseline.count ? baseline[j] : .infinity)
            let baselineBelow = Double(j)
            var (inRecent, inBaseline) = (0.0, 0.0)
            while i < recent.count && recent[i] == value {
                inRecent += 1
                i += 1
            }
            while j < baseline.count && baseline[j] == value {
                inBaseline += 1
                j += 1
            }
            u += inRecent * (baselineBelow + inBaseline / 2)
            let t = inRecent + inBaseline
            ties += t * t * t - t
        }
        let total = m + n
        let variance = m * n / 12 * ((total + 1) - ties / (total * (total - 1)))
        self.u = u
        self.superiority = u / (m * n)
        guard variance > 0 else {
            self.pValue = 1
            return
        }
        let z = (u - m * n / 2 - 0.5) / variance.squareRoot()
        self.pValue = min(1, max(0, 0.5 * erfc(z / 2.0.squareRoot())))
    }
}
