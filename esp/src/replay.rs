//! The anti-replay window (RFC 4303 §3.4.3), as a ring of bitmap words in
//! the manner of RFC 6479: sliding the window clears whole words instead of
//! shifting bits.

const WORD_BITS: u64 = 64;
const WORDS: usize = 64;
/// Packets of reordering tolerated: 4032 (one word of the ring is the
/// moving edge), comfortably beyond the 1024 required.
pub const WINDOW: u64 = (WORDS as u64 - 1) * WORD_BITS;

/// Which sequence numbers have been seen.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest sequence number accepted so far (0: none yet).
    top: u64,
    ring: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            top: 0,
            ring: [0; WORDS],
        }
    }
}

fn slot(seq: u64) -> (usize, u64) {
    (
        ((seq / WORD_BITS) % WORDS as u64) as usize,
        1 << (seq % WORD_BITS),
    )
}

impl ReplayWindow {
    /// Whether `seq` may be new: checked before the ICV is verified, so that
    /// replays cost no decryption. Sequence number 0 is never sent
    /// (RFC 4303 §3.3.3).
    pub fn check(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            return true;
        }
        if self.top - seq >= WINDOW {
            return false;
        }
        let (w, bit) = slot(seq);
        self.ring[w] & bit == 0
    }

    /// Records `seq` after its ICV verified; false if it was seen meanwhile
    /// (a replay racing the first copy) or fell out of the window.
    pub fn update(&mut self, seq: u64) -> bool {
        if !self.check(seq) {
            return false;
        }
        if seq > self.top {
            let old_word = self.top / WORD_BITS;
            let new_word = seq / WORD_BITS;
            let clear = (new_word - old_word).min(WORDS as u64);
            for i in 1..=clear {
                self.ring[((old_word + i) % WORDS as u64) as usize] = 0;
            }
            self.top = seq;
        }
        let (w, bit) = slot(seq);
        self.ring[w] |= bit;
        true
    }

    /// Highest sequence number accepted.
    pub fn top(&self) -> u64 {
        self.top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_refused() {
        let mut w = ReplayWindow::default();
        assert!(!w.check(0));
        for s in 1..=100 {
            assert!(w.update(s));
        }
        for s in 1..=100 {
            assert!(!w.check(s));
            assert!(!w.update(s));
        }
    }

    #[test]
    fn reordering_inside_the_window_is_accepted() {
        let mut w = ReplayWindow::default();
        assert!(w.update(5000));
        // Everything up to WINDOW behind is fine once, then not again.
        for s in (5000 - WINDOW + 1..5000).rev().step_by(7) {
            assert!(w.update(s), "{s}");
            assert!(!w.update(s));
        }
        assert!(!w.check(5000 - WINDOW));
        assert!(!w.check(1));
    }

    #[test]
    fn big_jumps_clear_the_ring() {
        let mut w = ReplayWindow::default();
        for s in 1..=64 * 70 {
            assert!(w.update(s));
        }
        assert!(w.update(1_000_000));
        assert!(w.update(1_000_000 - 1));
        assert!(w.update(1_000_000 - 3000));
        assert!(!w.update(1_000_000 - 3000));
        assert_eq!(w.top(), 1_000_000);
    }
}
