//! The anti-replay window (RFC 4303 §3.4.3), shared by every inbound
//! worker without a lock.
//!
//! A ring of bitmap words in the manner of RFC 6479, where each word also
//! carries the number of the block of 32 sequence numbers it currently
//! holds: `(block << 32) | bitmap`. Marking a sequence number is one
//! compare-and-swap on its word: a word holding an older block is taken
//! over (that block is out of the window by then), one holding a newer
//! block means the number is too old. So sliding the window never clears
//! words a concurrent worker may be marking, and no number can be accepted
//! twice whatever the interleaving. Written by hand: the crates that offer
//! replay windows are single-threaded.

use std::sync::atomic::{AtomicU64, Ordering};

const BLOCK_BITS: u64 = 32;
const WORDS: usize = 128;
/// Packets of reordering tolerated: 4064 (one word of the ring is the
/// moving edge), beyond what the network and the senders' parallel
/// workers cause (a worker seals at most 128 packets per batch). The ring
/// is 1 KiB per SA.
pub const WINDOW: u64 = (WORDS as u64 - 1) * BLOCK_BITS;

/// Which sequence numbers have been seen.
#[derive(Debug)]
pub struct ReplayWindow {
    /// Highest sequence number accepted so far (0: none yet).
    top: AtomicU64,
    ring: [AtomicU64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            top: AtomicU64::new(0),
            ring: [const { AtomicU64::new(0) }; WORDS],
        }
    }
}

/// The word, block tag and bit of `seq`. Sequence numbers are 32 bits
/// (no ESN), so a block number always fits the tag.
fn slot(seq: u64) -> (usize, u64, u64) {
    let block = seq / BLOCK_BITS;
    (
        (block % WORDS as u64) as usize,
        block,
        1 << (seq % BLOCK_BITS),
    )
}

/// What a ring word says about one sequence number.
enum Seen {
    /// Not seen; the word's new value with it marked.
    New(u64),
    /// Seen before, or its word already holds a newer block.
    Refused,
}

fn mark(word: u64, block: u64, bit: u64) -> Seen {
    let (tag, bits) = (word >> 32, word & 0xffff_ffff);
    if word == 0 || tag < block {
        Seen::New((block << 32) | bit)
    } else if tag == block && bits & bit == 0 {
        Seen::New(word | bit)
    } else {
        Seen::Refused
    }
}

impl ReplayWindow {
    fn in_window(&self, seq: u64) -> bool {
        seq != 0 && seq <= u64::from(u32::MAX) && {
            let top = self.top.load(Ordering::Acquire);
            seq > top || top - seq < WINDOW
        }
    }

    /// Whether `seq` may be new: checked before the ICV is verified, so that
    /// replays cost no decryption. Sequence number 0 is never sent
    /// (RFC 4303 §3.3.3).
    pub fn check(&self, seq: u64) -> bool {
        if !self.in_window(seq) {
            return false;
        }
        let (w, block, bit) = slot(seq);
        matches!(
            mark(self.ring[w].load(Ordering::Acquire), block, bit),
            Seen::New(_)
        )
    }

    /// Records `seq` after its ICV verified; false if it was seen meanwhile
    /// (a replay racing the first copy, perhaps on another worker) or fell
    /// out of the window.
    pub fn update(&self, seq: u64) -> bool {
        if !self.in_window(seq) {
            return false;
        }
        let (w, block, bit) = slot(seq);
        let word = &self.ring[w];
        let mut current = word.load(Ordering::Acquire);
        loop {
            let Seen::New(next) = mark(current, block, bit) else {
                return false;
            };
            match word.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        self.top.fetch_max(seq, Ordering::AcqRel);
        true
    }

    /// Highest sequence number accepted.
    pub fn top(&self) -> u64 {
        self.top.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_refused() {
        let w = ReplayWindow::default();
        assert!(!w.check(0));
        assert!(!w.update(0));
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
        let w = ReplayWindow::default();
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
    fn big_jumps_leave_old_numbers_behind() {
        let w = ReplayWindow::default();
        for s in 1..=32 * 140 {
            assert!(w.update(s));
        }
        assert!(w.update(1_000_000));
        assert!(w.update(1_000_000 - 1));
        assert!(w.update(1_000_000 - 4000));
        assert!(!w.update(1_000_000 - 4000));
        // Never seen, but behind the window.
        assert!(!w.update(1_000_000 - WINDOW));
        assert!(!w.update(32 * 141));
        assert_eq!(w.top(), 1_000_000);
        // The highest 32-bit number is fine; beyond it there is no ESN.
        assert!(w.update(u64::from(u32::MAX)));
        assert!(!w.check(u64::from(u32::MAX) + 1));
    }

    /// Against a plain set: in any order, a number is accepted exactly
    /// when it is inside the window and not accepted before.
    #[test]
    fn matches_a_reference_model() {
        let w = ReplayWindow::default();
        let mut seen = std::collections::HashSet::new();
        let mut top = 0u64;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly forward, sometimes back within (or beyond) the window.
            let seq = match x % 10 {
                0..=5 => i + 1,
                6..=8 => (i + 1).saturating_sub(x % 5000).max(1),
                _ => i + 1 + x % 100,
            };
            let expect = (seq > top || top - seq < WINDOW) && !seen.contains(&seq);
            assert_eq!(w.check(seq), expect, "check {seq} (top {top})");
            assert_eq!(w.update(seq), expect, "update {seq} (top {top})");
            if expect {
                seen.insert(seq);
                top = top.max(seq);
            }
        }
    }

    #[test]
    fn parallel_workers_never_accept_a_number_twice() {
        let w = ReplayWindow::default();
        let mut accepted: Vec<u64> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4u64)
                .map(|t| {
                    let w = &w;
                    s.spawn(move || {
                        (1..=100_000u64)
                            // Each worker in its own slightly shuffled
                            // order, every number offered to several.
                            .map(|i| if (i + t) % 3 == 0 { i + 1 } else { i })
                            .filter(|&seq| w.update(seq))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let n = accepted.len();
        accepted.sort_unstable();
        accepted.dedup();
        assert_eq!(accepted.len(), n, "a number was accepted twice");
        assert!(n > 0 && accepted.iter().all(|&s| (1..=100_001).contains(&s)));
    }
}
