//! A time-decayed exponentially weighted moving average (time passed in, as linkerd does).

use std::time::{Duration, Instant};

/// EWMA whose weight decays with the time between samples: a sample `tau` after the last one
/// keeps `1/e` of the old value. Irregular sample spacing is handled correctly.
#[derive(Debug, Clone, Copy)]
pub struct Ewma {
    value: f64,
    at: Option<Instant>,
    tau: Duration,
}

impl Ewma {
    /// An empty average with decay constant `tau`.
    pub fn new(tau: Duration) -> Self {
        Self {
            value: 0.0,
            at: None,
            tau,
        }
    }

    /// Add a sample taken at `now`.
    pub fn observe(&mut self, sample: f64, now: Instant) {
        match self.at {
            None => self.value = sample,
            Some(prev) => {
                let dt = now.saturating_duration_since(prev).as_secs_f64();
                let tau = self.tau.as_secs_f64().max(f64::MIN_POSITIVE);
                // A floor keeps bursts of samples at one instant from being ignored entirely.
                let w = (-dt / tau).exp().min(0.98);
                self.value = w * self.value + (1.0 - w) * sample;
            }
        }
        self.at = Some(now);
    }

    /// Add a sample the peak way (linkerd's peak EWMA): a sample above the average replaces
    /// it at once, one below pulls it down with the usual decay. A deployment that turns
    /// slow is seen at its first slow answer; a recovery shows over `tau`.
    pub fn observe_peak(&mut self, sample: f64, now: Instant) {
        if self.at.is_none() || sample > self.value {
            self.value = sample;
            self.at = Some(now);
        } else {
            self.observe(sample, now);
        }
    }

    /// The current average, `None` before the first sample.
    pub fn get(&self) -> Option<f64> {
        self.at.map(|_| self.value)
    }

    /// The average as read at `now` (linkerd's `get_at`): decayed toward zero for the time
    /// since the last sample, exactly as a sample of 0 at `now` would pull it. An estimate
    /// nobody refreshes (a deployment left alone because it was slow) looks better and
    /// better, until a request measures it again. `None` before the first sample.
    pub fn get_at(&self, now: Instant) -> Option<f64> {
        let at = self.at?;
        let dt = now.saturating_duration_since(at).as_secs_f64();
        let tau = self.tau.as_secs_f64().max(f64::MIN_POSITIVE);
        Some(self.value * (-dt / tau).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_is_the_value() {
        let t0 = Instant::now();
        let mut e = Ewma::new(Duration::from_secs(10));
        assert_eq!(e.get(), None);
        e.observe(100.0, t0);
        assert_eq!(e.get(), Some(100.0));
    }

    #[test]
    fn decays_toward_new_samples_with_time() {
        let t0 = Instant::now();
        let mut slow = Ewma::new(Duration::from_secs(10));
        slow.observe(100.0, t0);
        slow.observe(0.0, t0 + Duration::from_secs(10));
        let v = slow.get().unwrap();
        assert!((v - 100.0 / std::f64::consts::E).abs() < 1e-9, "{v}");
        // A long gap forgets the past almost entirely.
        slow.observe(50.0, t0 + Duration::from_secs(1000));
        assert!((slow.get().unwrap() - 50.0).abs() < 1e-6);
    }

    #[test]
    fn peak_jumps_up_at_once_and_decays_down() {
        let t0 = Instant::now();
        let mut e = Ewma::new(Duration::from_secs(1));
        e.observe_peak(5.0, t0);
        e.observe_peak(50.0, t0 + Duration::from_millis(1));
        assert_eq!(e.get(), Some(50.0));
        e.observe_peak(5.0, t0 + Duration::from_secs(1));
        let v = e.get().unwrap();
        assert!(v < 50.0 && v > 5.0, "{v}");
    }

    #[test]
    fn a_reading_decays_toward_zero_while_no_sample_comes() {
        let t0 = Instant::now();
        let mut e = Ewma::new(Duration::from_secs(10));
        assert_eq!(e.get_at(t0), None);
        e.observe_peak(100.0, t0);
        assert_eq!(e.get_at(t0), Some(100.0));
        let v = e.get_at(t0 + Duration::from_secs(10)).unwrap();
        assert!((v - 100.0 / std::f64::consts::E).abs() < 1e-9, "{v}");
        // Reading does not change the average.
        assert_eq!(e.get(), Some(100.0));
    }

    #[test]
    fn same_instant_samples_still_move_it() {
        let t0 = Instant::now();
        let mut e = Ewma::new(Duration::from_secs(10));
        e.observe(0.0, t0);
        for _ in 0..200 {
            e.observe(10.0, t0);
        }
        assert!(e.get().unwrap() > 9.0);
    }
}
