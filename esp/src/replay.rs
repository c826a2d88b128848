//! The anti-replay window (RFC 4303 §3.4.3 and Appendix A), shared by every
//! inbound worker without a lock.
//!
//! A ring of bitmap words in the manner of RFC 6479, where each word also
//! carries a tag for the block of 32 sequence numbers it currently holds:
//! `(tag << 32) | bitmap`. Marking a sequence number is one
//! compare-and-swap on its word: a word holding an older block is taken
//! over (that block is out of the window by then), one holding a newer
//! block means the number is too old. So sliding the window never clears
//! words a concurrent worker may be marking, and no number can be accepted
//! twice whatever the interleaving. Written by hand: the crates that offer
//! replay windows are single-threaded.
//!
//! Sequence numbers are 64 bits (Extended Sequence Numbers, RFC 4303
//! §2.2.1) but a block number of up to 59 bits does not fit beside the
//! bitmap, so the tag is the low 32 bits of the block number, compared in
//! serial-number arithmetic (the wrapping difference read as signed, as
//! RFC 1982 does). That is exact whenever the two blocks are less than
//! 2^31 blocks apart, and it has to be exact in one direction only:
//!
//! - A number is accepted only when, reading its word and *then* `top`
//!   (so `top` is at least the one the word's writer checked against), it
//!   lies in `[top - WINDOW + 1, top + AHEAD]`; a word's writer checked the
//!   same of its own number. So a word's block is never more than
//!   `(AHEAD + WINDOW) / 32 + 1` (about 2^27) blocks ahead of the block
//!   being marked: a newer word is always seen as newer, and refused.
//! - Hence a word's (true) block only ever grows: it is taken over only by
//!   a truly newer block, or merged into when the tags are equal, which
//!   with a block up to 2^31 behind means the same block and otherwise a
//!   block a multiple of 2^32 blocks newer. Bits are cleared only when the
//!   block changes, so a block, once left, never comes back, and a number
//!   whose bit was set is refused for as long as it is inside the window.
//! - A word more than 2^31 blocks (2^36 numbers) behind may be misread as
//!   newer or equal: that refuses numbers that were new, never accepts an
//!   old one. It takes 2^24 consecutive blocks of one word with no packet
//!   accepted while the top moved on, which a sender counting one by one
//!   never causes; only the peer holding the keys could, to its own loss.

use std::sync::atomic::{AtomicU64, Ordering};

const BLOCK_BITS: u64 = 32;
const WORDS: usize = 128;
/// Packets of reordering tolerated: 4064 (one word of the ring is the
/// moving edge), beyond what the network and the senders' parallel
/// workers cause (a worker seals at most 128 packets per batch). The ring
/// is 1 KiB per SA.
pub const WINDOW: u64 = (WORDS as u64 - 1) * BLOCK_BITS;
/// How far beyond the top a number may be: one sequence number subspace,
/// the most the ESN reconstruction of RFC 4303 Appendix A2.2 can yield
/// (and more than any 32-bit number can be). It bounds how far apart the
/// blocks compared through their 32-bit tags are.
pub const AHEAD: u64 = 1 << 32;

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

/// The word, block tag (the block number's low 32 bits) and bit of `seq`.
fn slot(seq: u64) -> (usize, u32, u64) {
    let block = seq / BLOCK_BITS;
    (
        (block % WORDS as u64) as usize,
        block as u32,
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

fn mark(word: u64, tag: u32, bit: u64) -> Seen {
    let (held, bits) = ((word >> 32) as u32, word & 0xffff_ffff);
    // Serial-number comparison of the tags (see the module comment for
    // why the blocks compared are close enough for it).
    let ahead = tag.wrapping_sub(held) as i32;
    if word == 0 || ahead > 0 {
        // Never written, or an older block: take the word over.
        Seen::New((u64::from(tag) << 32) | bit)
    } else if ahead == 0 && bits & bit == 0 {
        Seen::New(word | bit)
    } else {
        Seen::Refused
    }
}

/// Whether `seq` is a number the window may still accept with `top` the
/// highest accepted: never 0 (RFC 4303 §3.3.3), not more than [`WINDOW`]
/// behind, not more than [`AHEAD`] ahead.
fn in_window(seq: u64, top: u64) -> bool {
    seq != 0
        && if seq > top {
            seq - top <= AHEAD
        } else {
            top - seq < WINDOW
        }
}

impl ReplayWindow {
    /// Makes `top` the highest number accepted, with nothing else seen
    /// (tests start SAs near the 2^32 boundary with it).
    #[cfg(test)]
    pub(crate) fn skip_to(&self, top: u64) {
        self.top.store(top, Ordering::Relaxed);
    }

    /// The full 64-bit sequence number of a packet whose header carries
    /// `low`, for an SA with Extended Sequence Numbers (RFC 4303 Appendix
    /// A2.2): Seqh is Th, Th + 1 or Th - 1, whichever puts the number in
    /// `[B, B + 2^32)` with `B = T - W + 1` the bottom of the window. Case
    /// A (Tl >= W - 1): Seql >= Bl gives Th, Seql < Bl gives Th + 1. Case
    /// B (Tl < W - 1, the window spans two subspaces): Seql >= Bl (mod
    /// 2^32) gives Th - 1, Seql < Bl gives Th. `None` when that number
    /// would be 0 or below (no subspace before the first) or beyond the
    /// 64-bit space. A wrong guess (more than 2^32 - W packets lost in a
    /// row) fails the ICV and the packet is dropped; the resynchronisation
    /// of Appendix A3 is not done.
    pub fn estimate(&self, low: u32) -> Option<u64> {
        let top = self.top.load(Ordering::Acquire);
        let w = WINDOW - 1;
        let bottom_low = (top as u32).wrapping_sub(w as u32);
        let offset = low.wrapping_sub(bottom_low);
        let seq = i128::from(top) - i128::from(w) + i128::from(offset);
        u64::try_from(seq).ok().filter(|&seq| seq != 0)
    }

    /// Whether `seq` may be new: checked before the ICV is verified, so that
    /// replays cost no decryption. Sequence number 0 is never sent
    /// (RFC 4303 §3.3.3).
    pub fn check(&self, seq: u64) -> bool {
        let (w, tag, bit) = slot(seq);
        let word = self.ring[w].load(Ordering::Acquire);
        in_window(seq, self.top.load(Ordering::Acquire))
            && matches!(mark(word, tag, bit), Seen::New(_))
    }

    /// Records `seq` after its ICV verified; false if it was seen meanwhile
    /// (a replay racing the first copy, perhaps on another worker) or fell
    /// out of the window.
    pub fn update(&self, seq: u64) -> bool {
        let (w, tag, bit) = slot(seq);
        let word = &self.ring[w];
        let mut current = word.load(Ordering::Acquire);
        loop {
            // `top` is read after the word, every round: it is then at
            // least the top the word's writer checked its number against,
            // which is what keeps the tags comparable.
            if !in_window(seq, self.top.load(Ordering::Acquire)) {
                return false;
            }
            let Seen::New(next) = mark(current, tag, bit) else {
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

    const SUBSPACE: u64 = 1 << 32;

    fn starting_at(top: u64) -> ReplayWindow {
        let w = ReplayWindow::default();
        w.skip_to(top);
        w
    }
    /// Where block tags wrap: block 2^32.
    const TAG_WRAP: u64 = 1 << 37;

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
        // The highest 32-bit number, and on into the next subspace (ESN),
        // but never more than one subspace ahead of the top.
        assert!(w.update(u64::from(u32::MAX)));
        assert!(w.update(SUBSPACE + 5));
        assert!(!w.check(2 * SUBSPACE + 6));
        assert!(w.check(2 * SUBSPACE + 5));
        assert!(!w.update(u64::from(u32::MAX) - WINDOW));
    }

    /// RFC 4303 Appendix A2.2, both cases and both answers of each.
    #[test]
    fn esn_high_bits_follow_appendix_a() {
        let w1 = WINDOW - 1;
        // Nothing received yet: case B with Th = 0; numbers "before" the
        // first subspace do not exist.
        let w = ReplayWindow::default();
        assert_eq!(w.estimate(1), Some(1));
        assert_eq!(w.estimate(0), None);
        assert_eq!(w.estimate(u32::MAX), None);
        assert_eq!(
            w.estimate(u32::MAX - w1 as u32),
            Some(u64::from(u32::MAX - w1 as u32))
        );
        // Case A: Tl >= W - 1. Bl = Tl - W + 1.
        let th = 7 * SUBSPACE;
        let w = starting_at(th + 100_000);
        let bl = 100_000 - w1 as u32;
        assert_eq!(w.estimate(bl), Some(th + u64::from(bl)), "Seql >= Bl: Th");
        assert_eq!(w.estimate(u32::MAX), Some(th + u64::from(u32::MAX)));
        assert_eq!(
            w.estimate(bl - 1),
            Some(th + SUBSPACE + u64::from(bl - 1)),
            "Seql < Bl: Th + 1"
        );
        assert_eq!(w.estimate(0), Some(th + SUBSPACE));
        // Case B: Tl < W - 1, the window spans two subspaces.
        let w = starting_at(th + 10);
        let bl = 10u32.wrapping_sub(w1 as u32);
        assert_eq!(
            w.estimate(bl),
            Some(th - SUBSPACE + u64::from(bl)),
            "Seql >= Bl: Th - 1"
        );
        assert_eq!(w.estimate(u32::MAX), Some(th - 1));
        assert_eq!(
            w.estimate(bl - 1),
            Some(th + u64::from(bl - 1)),
            "Seql < Bl: Th"
        );
        assert_eq!(w.estimate(0), Some(th));
        assert_eq!(w.estimate(11), Some(th + 11));
        // The end of the 64-bit space.
        let w = starting_at(u64::MAX - 5);
        assert_eq!(w.estimate(u32::MAX), Some(u64::MAX));
        assert_eq!(w.estimate(3), None, "would be past 2^64 - 1");
        // Whatever the top, the guess is inside [T - W + 1, T - W + 2^32].
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let top = x >> (x % 64);
            let low = (x >> 17) as u32;
            let w = starting_at(top);
            if let Some(seq) = w.estimate(low) {
                assert_eq!(seq as u32, low);
                let (s, b) = (i128::from(seq), i128::from(top) - i128::from(w1));
                assert!(b <= s && s < b + i128::from(SUBSPACE), "{top} {low}");
                assert!(in_window(seq, top), "the guess is always acceptable");
            }
        }
    }

    /// Against a plain set: in any order, a number is accepted exactly
    /// when it is inside the window and not accepted before; at the start
    /// of the space, across the 2^32 boundary (ESN), across the wrap of
    /// the block tags at 2^37, and at the end of the 64-bit space.
    #[test]
    fn matches_a_reference_model() {
        for base in [
            0,
            SUBSPACE - 100_000,
            TAG_WRAP - 100_000,
            u64::MAX - 300_000,
        ] {
            let w = starting_at(base);
            let mut seen = std::collections::HashSet::new();
            let mut top = base;
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for i in 0..200_000u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly forward, sometimes back within (or beyond) the window.
                let rel = match x % 10 {
                    0..=5 => i + 1,
                    6..=8 => (i + 1).saturating_sub(x % 5000).max(1),
                    _ => i + 1 + x % 100,
                };
                let seq = base + rel;
                let expect = (seq > top || top - seq < WINDOW) && !seen.contains(&seq);
                assert_eq!(w.check(seq), expect, "check {seq} (top {top})");
                assert_eq!(w.update(seq), expect, "update {seq} (top {top})");
                if expect {
                    seen.insert(seq);
                    top = top.max(seq);
                }
            }
        }
    }

    #[test]
    fn parallel_workers_never_accept_a_number_twice() {
        for base in [0, SUBSPACE - 50_000, TAG_WRAP - 50_000] {
            let w = starting_at(base);
            let mut accepted: Vec<u64> = std::thread::scope(|s| {
                let workers: Vec<_> = (0..4u64)
                    .map(|t| {
                        let w = &w;
                        s.spawn(move || {
                            (1..=100_000u64)
                                // Each worker in its own slightly shuffled
                                // order, every number offered to several.
                                .map(|i| if (i + t) % 3 == 0 { i + 1 } else { i })
                                .map(|i| base + i)
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
            assert_eq!(
                accepted.len(),
                n,
                "a number was accepted twice (base {base})"
            );
            assert!(
                n > 0
                    && accepted
                        .iter()
                        .all(|&s| (base + 1..=base + 100_001).contains(&s))
            );
        }
    }

    /// Blocks 2^32 apart share word and tag. A number whose twin (2^37
    /// later) has been reached by jumps that never touched its word is
    /// still refused; the twin itself is refused too, the conservative
    /// side of the tag comparison (see the module comment).
    #[test]
    fn aliased_tags_never_accept_an_old_number() {
        let w = ReplayWindow::default();
        let x = 1000;
        assert!(w.update(x));
        let word = slot(x).0;
        // Jumps of just under a subspace, each landing in another word.
        let mut top = x;
        while top < x + TAG_WRAP - SUBSPACE {
            let mut next = top + SUBSPACE - 64;
            while slot(next).0 == word {
                next -= 32;
            }
            assert!(w.update(next), "{next}");
            top = next;
        }
        let twin = x + TAG_WRAP;
        assert!(twin - top <= AHEAD);
        assert_eq!(slot(twin).0, word);
        assert_eq!(slot(twin).1, slot(x).1);
        assert!(!w.update(x));
        assert!(!w.update(twin), "its word still looks like the same block");
        // Numbers of the twin's block that the stale word does not mark
        // are fine, and then the old block is gone for good.
        assert!(w.update(twin + 1));
        assert!(w.update(twin + 32 * WORDS as u64));
        assert!(!w.update(twin + 1));
        assert!(!w.update(x + 1));
    }
}
