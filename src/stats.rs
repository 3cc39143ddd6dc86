//! Paired significance tests between two classifiers scored on the same
//! images: McNemar's exact test on the discordant pairs, and a paired
//! bootstrap interval of the accuracy difference. Numbers in, numbers out:
//! which runs and images are paired is the caller's business
//! (`crate::sweep::paired`).
//!
//! Everything here is exact or reproducible outside Rust: the binomial
//! tail is summed without factorials (a product of ratios with the binary
//! exponent kept apart, so `b + c` of many thousands neither overflows nor
//! underflows before the end), and the bootstrap draws its indices from
//! [`SplitMix64`], a generator a few lines of numpy reproduce.

/// The two-sided p-value of McNemar's exact test: `b` pairs where only the
/// first classifier is right, `c` where only the second is, tested against
/// "either is as likely" as `min(1, 2·P(X ≤ min(b, c)))` with
/// `X ~ Binomial(b + c, ½)`, as statsmodels' `mcnemar(exact=True)` and
/// scipy's `binomtest(min(b, c), b + c, 0.5).pvalue` give it; 1 when no
/// pair is discordant.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let (k, n) = (b.min(c), b + c);
    (2.0 * binomial_half_cdf(k, n)).min(1.0)
}

/// `P(X ≤ k)` for `X ~ Binomial(n, ½)`, to a relative error of about
/// `4·k` units in the last place (`k ≤ n / 2` or not).
pub fn binomial_half_cdf(k: u64, n: u64) -> f64 {
    if k >= n {
        return 1.0;
    }
    if 2 * k > n {
        // The upper part is the smaller sum: P(X ≤ k) = 1 − P(X ≤ n − k − 1).
        return 1.0 - binomial_half_cdf(n - k - 1, n);
    }
    // P(X = k) = C(n, k) / 2ⁿ, the largest term of the tail; the terms
    // below it relative to it shrink by i / (n − i + 1) each step.
    let (mut ratio_sum, mut term) = (1.0f64, 1.0f64);
    for i in (1..=k).rev() {
        term *= i as f64 / (n - i + 1) as f64;
        ratio_sum += term;
        if term < ratio_sum * f64::EPSILON * 1e-3 {
            break;
        }
    }
    let (mantissa, exponent) = binomial_coefficient(n, k);
    let (sum_mantissa, sum_exponent) = split_exponent(mantissa * ratio_sum);
    times_power_of_two(sum_mantissa, exponent + sum_exponent - n as i64)
}

/// `C(n, k)` as (mantissa in [1, 2), binary exponent): a product of the
/// ratios `(n − k + i) / i`, renormalised at every step.
fn binomial_coefficient(n: u64, k: u64) -> (f64, i64) {
    let (mut mantissa, mut exponent) = (1.0f64, 0i64);
    for i in 1..=k {
        let (m, e) = split_exponent(mantissa * ((n - k + i) as f64 / i as f64));
        mantissa = m;
        exponent += e;
    }
    (mantissa, exponent)
}

/// `x` (finite, positive) as (mantissa in [1, 2), exponent): `x = m·2ᵉ`.
fn split_exponent(x: f64) -> (f64, i64) {
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mantissa = f64::from_bits((bits & !(0x7ff << 52)) | (1023 << 52));
    (mantissa, exponent)
}

/// `x·2ᵉ`, by exact steps of powers of two (rounded once, if at all, where
/// the result is subnormal; 0 below that).
fn times_power_of_two(mut x: f64, mut exponent: i64) -> f64 {
    let power = |e: i64| f64::from_bits(((e + 1023) as u64) << 52);
    while exponent < -1000 {
        x *= power(-1000);
        exponent += 1000;
    }
    while exponent > 1000 {
        x *= power(1000);
        exponent -= 1000;
    }
    x * power(exponent)
}

/// The SplitMix64 generator (Steele, Lea and Flood, 2014; as in Java's
/// `SplittableRandom`): the state advances by `0x9E3779B97F4A7C15` and each
/// value is the state mixed by
/// `z = (z ^ z >> 30)·0xBF58476D1CE4E5B9; z = (z ^ z >> 27)·0x94D049BB133111EB; z ^ z >> 31`
/// (wrapping). The `i`-th value (from 1) of seed `s` is the mix of
/// `s + i·0x9E3779B97F4A7C15`, so numpy computes a whole stream at once.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A percentile interval of a bootstrapped statistic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// The paired bootstrap `level` interval (0.95: from the 2.5th to the
/// 97.5th percentile) of `accuracy(first) − accuracy(second)`, where
/// `first[i]` and `second[i]` say whether each classifier got image `i`
/// right. Each of the `resamples` draws `n` images with replacement: draw
/// `j` of resample `r` is image `v mod n` for the `(r·n + j + 1)`-th value
/// `v` of [`SplitMix64`] seeded with `seed` (the modulo's bias is below
/// `n / 2⁶⁴`). Percentiles interpolate linearly between the sorted
/// differences, as numpy's default (`method="linear"`). `None` without
/// images or resamples.
pub fn paired_bootstrap(first: &[bool], second: &[bool], resamples: usize, seed: u64, level: f64) -> Option<Interval> {
    assert_eq!(first.len(), second.len(), "paired outcomes come in pairs");
    let n = first.len();
    if n == 0 || resamples == 0 {
        return None;
    }
    // Only the difference per image matters: +1, 0 or −1.
    let differences: Vec<i64> = first.iter().zip(second).map(|(&a, &b)| a as i64 - b as i64).collect();
    let mut generator = SplitMix64::new(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let sum: i64 = (0..n).map(|_| differences[(generator.next_u64() % n as u64) as usize]).sum();
            sum as f64 / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Some(Interval { low: percentile(&means, tail), high: percentile(&means, 1.0 - tail) })
}

/// The `q`-quantile (0 to 1) of `sorted`, interpolated linearly between
/// order statistics at position `q·(len − 1)`, as numpy's default.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let fraction = position - below as f64;
    sorted[below] + fraction * (sorted[above] - sorted[below])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// P(X ≤ k) for Binomial(n, ½) by exact integer arithmetic (n ≤ 60).
    fn exact_cdf(k: u64, n: u64) -> f64 {
        let mut coefficient = 1u128;
        let mut sum = 0u128;
        for i in 0..=k {
            sum += coefficient;
            coefficient = coefficient * (n - i) as u128 / (i + 1) as u128;
        }
        sum as f64 / (1u128 << n) as f64
    }

    #[test]
    fn the_binomial_tail_equals_integer_arithmetic_on_small_counts() {
        for n in 0..=60 {
            for k in 0..=n {
                let (ours, exact) = (binomial_half_cdf(k, n), exact_cdf(k, n));
                assert!((ours - exact).abs() <= 1e-14 * exact, "n {n} k {k}: {ours} against {exact}");
            }
        }
    }

    #[test]
    fn mcnemar_is_one_without_discordant_pairs_and_symmetric() {
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        assert_eq!(mcnemar_exact(3, 12), mcnemar_exact(12, 3));
        // P(X ≤ 1) for Binomial(3, ½) is 4/8: doubled, 1.
        assert_eq!(mcnemar_exact(1, 2), 1.0);
        assert_eq!(mcnemar_exact(0, 10), 2.0 / 1024.0);
    }

    #[test]
    fn large_counts_neither_overflow_nor_underflow_early() {
        let p = mcnemar_exact(4000, 5000);
        assert!(p > 0.0 && p < 1e-20, "{p}");
        let tail = binomial_half_cdf(0, 3000);
        assert_eq!(tail, 0.0, "2^-3000 is below the smallest double");
        assert!((binomial_half_cdf(5000, 10_000) - 0.5).abs() < 0.01);
    }

    #[test]
    fn splitmix_gives_its_published_first_values() {
        // Seed 0: the reference implementation's first outputs.
        let mut generator = SplitMix64::new(0);
        assert_eq!(generator.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(generator.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn percentiles_interpolate_as_numpy() {
        let sorted = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(percentile(&sorted, 0.0), 1.0);
        assert_eq!(percentile(&sorted, 1.0), 8.0);
        assert!((percentile(&sorted, 0.5) - 3.0).abs() < 1e-15);
        assert!((percentile(&sorted, 0.025) - 1.075).abs() < 1e-15);
    }

    #[test]
    fn identical_classifiers_have_a_zero_interval() {
        let outcomes = [true, false, true, true];
        assert_eq!(paired_bootstrap(&outcomes, &outcomes, 100, 1, 0.95), Some(Interval { low: 0.0, high: 0.0 }));
        assert_eq!(paired_bootstrap(&[], &[], 100, 1, 0.95), None);
    }
}
