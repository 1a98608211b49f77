//! A cheap fuzz for the pure readers of answers (tests only): every prefix
//! of a seed, then single-byte mutations drawn with xorshift32, optionally
//! cut short after the mutated byte.

/// Calls `f` with every prefix of `seed` and `rounds` mutations of it.
pub(crate) fn variants(
    seed: &[u8],
    rounds: usize,
    cut: bool,
    state: &mut u32,
    mut f: impl FnMut(&[u8]),
) {
    for end in 0..=seed.len() {
        f(&seed[..end]);
    }
    if seed.is_empty() {
        return;
    }
    for _ in 0..rounds {
        let mut b = seed.to_vec();
        *state ^= *state << 13;
        *state ^= *state >> 17;
        *state ^= *state << 5;
        let at = *state as usize % b.len();
        b[at] = (*state >> 8) as u8;
        if cut {
            b.truncate(((*state >> 16) as usize % (b.len() + 1)).max(at));
        }
        f(&b);
    }
}
