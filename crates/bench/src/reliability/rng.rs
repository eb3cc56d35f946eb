//! A tiny deterministic generator (splitmix64) for the workload's choices: a run is
//! reproducible from its seed, and the choice of operation needs no cryptographic quality.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..100).map(|_| r.below(10)).collect()
        };
        let mut r = Rng::new(7);
        let b: Vec<u64> = (0..100).map(|_| r.below(10)).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|&x| x < 10));
        assert!((0..10).all(|d| a.contains(&d)));
    }
}
