//! The `activity_drop` test: window sums, baseline moments and the one-sided p-value.

use serde::{Deserialize, Serialize};
use statrs::distribution::{DiscreteCDF, NegativeBinomial, Poisson};

use super::ring::Ring;

/// Which distribution modelled the recent-window sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    NegativeBinomial,
    Poisson,
}

impl Model {
    pub fn as_str(self) -> &'static str {
        match self {
            Model::NegativeBinomial => "negative_binomial",
            Model::Poisson => "poisson",
        }
    }
}

/// Observed recent sum and baseline moments for the day closing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Sum of the daily metric over the recent days.
    pub observed: u64,
    /// Mean of the daily metric over the baseline days.
    pub mean: f64,
    /// Expected recent sum: `mean * recent_days`.
    pub expected: f64,
}

/// Reads the recent window `d-recent+1..=d` and the `baseline` days before it.
pub fn window(ring: &Ring, d: i64, recent: u32, baseline: u32) -> Window {
    let recent_start = d - recent as i64 + 1;
    let observed = ring.sum(recent_start, d);
    let base_sum = ring.sum(recent_start - baseline as i64, recent_start - 1);
    let mean = base_sum as f64 / baseline as f64;
    Window {
        observed,
        mean,
        expected: mean * recent as f64,
    }
}

/// Sample variance (n - 1) of the baseline days.
pub fn baseline_variance(ring: &Ring, d: i64, recent: u32, baseline: u32, mean: f64) -> f64 {
    let recent_start = d - recent as i64 + 1;
    let ss: f64 = (recent_start - baseline as i64..recent_start)
        .map(|day| {
            let dev = ring.get(day) as f64 - mean;
            dev * dev
        })
        .sum();
    ss / (baseline as f64 - 1.0)
}

/// Negative binomial parameters `(r, p)` for the sum of `recent` over-dispersed days
/// with daily mean `m` and variance `v > m > 0`: `r_day = m² / (v - m)`,
/// `r = r_day * recent`, `p = r_day / (r_day + m)`.
pub fn negative_binomial_params(m: f64, v: f64, recent: u32) -> (f64, f64) {
    let r_day = m * m / (v - m);
    (r_day * recent as f64, r_day / (r_day + m))
}

/// One-sided p-value of observing at most `x` when the recent sum follows the baseline.
pub fn p_value(x: u64, m: f64, v: f64, recent: u32) -> (Model, f64) {
    let expected = m * recent as f64;
    if v > m && m > 0.0 {
        let (r, p) = negative_binomial_params(m, v, recent);
        if let Ok(nb) = NegativeBinomial::new(r, p) {
            return (Model::NegativeBinomial, nb.cdf(x));
        }
    }
    match Poisson::new(expected) {
        Ok(pois) => (Model::Poisson, pois.cdf(x)),
        // expected == 0: every outcome is at least as likely as observed.
        Err(_) => (Model::Poisson, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_sums_and_moments() {
        let slots = [4, 6, 8, 1, 1];
        let ring = Ring {
            head: 4,
            slots: &slots,
        };
        let w = window(&ring, 4, 2, 3);
        assert_eq!(w.observed, 2);
        assert_eq!(w.mean, 6.0);
        assert_eq!(w.expected, 12.0);
        assert_eq!(baseline_variance(&ring, 4, 2, 3, w.mean), 4.0);
    }

    #[test]
    fn poisson_when_not_over_dispersed() {
        let (model, p) = p_value(3, 10.0, 9.0, 2);
        assert_eq!(model, Model::Poisson);
        // P(X <= 3) for Poisson(20), from the series.
        let mut term = (-20f64).exp();
        let mut sum = term;
        for k in 1..=3 {
            term *= 20.0 / k as f64;
            sum += term;
        }
        assert!((p - sum).abs() < 1e-12 * sum.max(1e-300), "{p} vs {sum}");
    }

    #[test]
    fn negative_binomial_matches_direct_pmf_sum() {
        let (m, v, recent, x) = (10.0, 30.0, 7u32, 20u64);
        let (model, p) = p_value(x, m, v, recent);
        assert_eq!(model, Model::NegativeBinomial);
        let (r, q) = negative_binomial_params(m, v, recent);
        // pmf(k) = Γ(k + r) / (k! Γ(r)) q^r (1 - q)^k, summed by recurrence.
        let mut term = q.powf(r);
        let mut sum = term;
        for k in 1..=x {
            term *= (k as f64 - 1.0 + r) / k as f64 * (1.0 - q);
            sum += term;
        }
        assert!((p - sum).abs() < 1e-9 * sum, "{p} vs {sum}");
    }

    #[test]
    fn zero_baseline_gives_certainty() {
        assert_eq!(p_value(0, 0.0, 0.0, 7), (Model::Poisson, 1.0));
    }

    proptest! {
        /// The negative binomial built from (m, v) has mean m*recent and variance
        /// v*recent, as the spec's parametrisation intends.
        #[test]
        fn nb_params_reproduce_moments(m in 0.1f64..500.0, extra in 0.01f64..5000.0, recent in 1u32..30) {
            let v = m + extra;
            let (r, p) = negative_binomial_params(m, v, recent);
            let mean = r * (1.0 - p) / p;
            let var = r * (1.0 - p) / (p * p);
            prop_assert!((mean - m * recent as f64).abs() <= 1e-9 * mean.max(1.0));
            prop_assert!((var - v * recent as f64).abs() <= 1e-9 * var.max(1.0));
        }

        /// p-values are probabilities and grow with the observation.
        #[test]
        fn p_value_monotone(m in 0.5f64..200.0, extra in 0.0f64..400.0, recent in 1u32..15, x in 0u64..500) {
            let (_, a) = p_value(x, m, m + extra, recent);
            let (_, b) = p_value(x + 1, m, m + extra, recent);
            prop_assert!((0.0..=1.0).contains(&a));
            prop_assert!(b + 1e-12 >= a);
        }
    }
}
