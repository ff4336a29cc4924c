//! The health of one backend as probe results come in: no clock, no I/O, one result at a time.

use std::fmt;

use super::Params;

/// Whether a backend gets new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    Up,
    Down,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Up => "up",
            Health::Down => "down",
        })
    }
}

/// One backend's state: its health, and how many consecutive results have disagreed with it.
///
/// A new tracker is up, provisionally: until a probe has succeeded, one failure is enough to
/// take it down (see the module documentation of `health` for why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    health: Health,
    /// Consecutive results that disagree with `health`; reset by one that agrees.
    against: u32,
    /// A probe has confirmed `health` (always true once down: only failures lead there).
    confirmed: bool,
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker::new()
    }
}

impl Tracker {
    /// A new backend: up, not yet confirmed.
    pub fn new() -> Tracker {
        Tracker {
            health: Health::Up,
            against: 0,
            confirmed: false,
        }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Takes one probe's result (`ok`: it succeeded) and returns the new health if this result
    /// changed it: `fall` consecutive failures take an up backend down (one, for a new backend
    /// never seen up), `rise` consecutive successes bring a down one up. Each change is returned
    /// exactly once; the results that follow and agree with it return `None`.
    pub fn observe(&mut self, ok: bool, params: &Params) -> Option<Health> {
        let agrees = ok == (self.health == Health::Up);
        if agrees {
            self.against = 0;
            self.confirmed = true;
            return None;
        }
        self.against += 1;
        let needed = match (self.health, self.confirmed) {
            (Health::Up, false) => 1,
            (Health::Up, true) => params.fall,
            (Health::Down, _) => params.rise,
        };
        if self.against < needed {
            return None;
        }
        self.health = match self.health {
            Health::Up => Health::Down,
            Health::Down => Health::Up,
        };
        self.against = 0;
        self.confirmed = true;
        Some(self.health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(rise: u32, fall: u32) -> Params {
        Params {
            rise,
            fall,
            ..Params::default()
        }
    }

    /// Feeds `script` (`+` success, `-` failure) and returns the transitions as `(index, health)`.
    fn run(t: &mut Tracker, p: &Params, script: &str) -> Vec<(usize, Health)> {
        script
            .chars()
            .enumerate()
            .filter_map(|(i, c)| t.observe(c == '+', p).map(|h| (i, h)))
            .collect()
    }

    #[test]
    fn a_new_backend_is_up_and_its_first_failure_takes_it_down() {
        let p = params(2, 3);
        let mut t = Tracker::new();
        assert_eq!(t.health(), Health::Up);
        assert_eq!(run(&mut t, &p, "-"), [(0, Health::Down)]);
        assert_eq!(run(&mut t, &p, "+-+-"), [], "rise 2: never two in a row");
        assert_eq!(run(&mut t, &p, "++"), [(1, Health::Up)]);
    }

    #[test]
    fn once_confirmed_fall_consecutive_failures_are_needed() {
        let p = params(2, 3);
        let mut t = Tracker::new();
        assert_eq!(
            run(&mut t, &p, "+--+--+"),
            [],
            "never three failures in a row"
        );
        assert_eq!(t.health(), Health::Up);
        assert_eq!(run(&mut t, &p, "---"), [(2, Health::Down)]);
    }

    #[test]
    fn each_transition_is_reported_exactly_once() {
        let p = Params::default();
        let mut t = Tracker::new();
        let script = "+++--------++++++--+-++--++";
        let got = run(&mut t, &p, script);
        assert_eq!(
            got,
            [
                (4, Health::Down),
                (12, Health::Up),
                (18, Health::Down),
                (22, Health::Up),
                (24, Health::Down),
                (26, Health::Up),
            ]
        );
        // The transitions alternate, so no state is ever reported twice in a row.
        assert!(got.windows(2).all(|w| w[0].1 != w[1].1));
    }

    #[test]
    fn rise_and_fall_of_one_flip_on_every_change() {
        let p = params(1, 1);
        let mut t = Tracker::new();
        assert_eq!(run(&mut t, &p, "+-+"), [(1, Health::Down), (2, Health::Up)]);
    }

    #[test]
    fn any_script_matches_a_counting_oracle() {
        // Exhaustive over every script of 12 results, for a few (rise, fall): the tracker agrees
        // with "down after `fall` failures in a row (one before the first success), up after
        // `rise` successes in a row".
        for (rise, fall) in [(1, 1), (2, 2), (3, 1), (1, 3)] {
            let p = params(rise, fall);
            for bits in 0u32..1 << 12 {
                let mut t = Tracker::new();
                let (mut up, mut seen_ok, mut run_ok, mut run_ko) = (true, false, 0, 0);
                for i in 0..12 {
                    let ok = bits >> i & 1 == 1;
                    if ok {
                        run_ok += 1;
                        run_ko = 0;
                    } else {
                        run_ko += 1;
                        run_ok = 0;
                    }
                    let before = up;
                    if up && run_ko >= if seen_ok { fall } else { 1 } {
                        up = false;
                        run_ko = 0;
                    } else if !up && run_ok >= rise {
                        up = true;
                        run_ok = 0;
                    }
                    seen_ok |= ok;
                    let expected =
                        (before != up).then_some(if up { Health::Up } else { Health::Down });
                    assert_eq!(
                        t.observe(ok, &p),
                        expected,
                        "rise {rise} fall {fall} bits {bits:012b} at {i}"
                    );
                }
            }
        }
    }
}
