/// xoshiro256** (Blackman and Vigna): fast, non-cryptographic; only for correlation ids.
struct Xoshiro256: RandomNumberGenerator {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    init<G: RandomNumberGenerator>(seed: inout G) {
        self.s = (seed.next(), seed.next(), seed.next(), seed.next())
        if self.s == (0, 0, 0, 0) { self.s.0 = 1 }
    }

    mutating func next() -> UInt64 {
        let result = rotl(self.s.1 &* 5, 7) &* 9
        let t = self.s.1 << 17
        self.s.2 ^= self.s.0
        self.s.3 ^= self.s.1
        self.s.1 ^= self.s.2
        self.s.0 ^= self.s.3
        self.s.2 ^= t
        self.s.3 = rotl(self.s.3, 45)
        return result
    }
}

@inline(__always)
private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }
