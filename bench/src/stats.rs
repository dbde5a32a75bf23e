//! Order statistics of a sample.

/// Median, 10th and 90th percentiles of a set of measurements.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for an empty sample.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        Some(Summary {
            median: percentile(&s, 0.5)?,
            p10: percentile(&s, 0.1)?,
            p90: percentile(&s, 0.9)?,
            min: *s.first()?,
            max: *s.last()?,
        })
    }
}

/// The `q`-quantile (0..=1) of sorted data, interpolating linearly between the two nearest
/// ranks (the "type 7" definition numpy and R use by default).
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = q.clamp(0.0, 1.0) * last as f64;
    #[allow(
        clippy::cast_possible_truncation,
        reason = "rank is in 0..=last, so its floor fits a usize"
    )]
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(last);
    let frac = rank - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let s = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&s, 0.5), Some(3.0));
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&s, 1.0), Some(5.0));
        assert_eq!(percentile(&[1.0, 2.0], 0.5), Some(1.5));
        assert!((percentile(&s, 0.1).unwrap() - 1.4).abs() < 1e-12);
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn summary_sorts() {
        let m = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((m.median, m.min, m.max), (3.0, 1.0, 5.0));
    }
}
