//! Weighted choice among a model's targets.
//!
//! Smooth weighted round-robin (as in nginx): deterministic, spreads picks
//! evenly (weights 3:1 give a,a,b,a rather than a,a,a,b), needs no random
//! source inside the VM, and is exact over every window of sum(weights)
//! picks. State is per VM (per Envoy worker); see docs/configuration.md.

use std::cell::RefCell;

#[derive(Debug)]
pub struct WeightedPicker {
    weights: Vec<i64>,
    total: i64,
    current: RefCell<Vec<i64>>,
}

impl WeightedPicker {
    /// `weights` must be non-empty and positive (validated with the config).
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Vec<i64> = weights.into_iter().map(i64::from).collect();
        let total = weights.iter().fold(0i64, |t, w| t.saturating_add(*w));
        let current = RefCell::new(vec![0; weights.len()]);
        WeightedPicker {
            weights,
            total,
            current,
        }
    }

    pub fn pick(&self) -> usize {
        if self.weights.len() <= 1 {
            return 0;
        }
        // Smooth weighted round robin. Weights are u32 and counters stay
        // within ±total, so i64 arithmetic never saturates in practice.
        let mut cur = self.current.borrow_mut();
        let mut best = 0;
        let mut best_value = i64::MIN;
        for (c, w) in cur.iter_mut().zip(&self.weights) {
            *c = c.saturating_add(*w);
        }
        for (i, c) in cur.iter().enumerate() {
            if *c > best_value {
                best = i;
                best_value = *c;
            }
        }
        if let Some(c) = cur.get_mut(best) {
            *c = c.saturating_sub(self.total);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_proportions_per_window() {
        let p = WeightedPicker::new([3, 1]);
        let picks: Vec<usize> = (0..8).map(|_| p.pick()).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 0, 0, 1, 0]);
        let p = WeightedPicker::new([5, 3, 2]);
        let mut counts = [0; 3];
        for _ in 0..100 {
            counts[p.pick()] += 1;
        }
        assert_eq!(counts, [50, 30, 20]);
    }

    #[test]
    fn single_target() {
        let p = WeightedPicker::new([7]);
        assert_eq!((p.pick(), p.pick()), (0, 0));
    }
}
