//! The Internet checksum's one folding step (RFC 1071), shared by the
//! packet parser (`packet`: header checksums, the TTL update) and the
//! segmentation offload (`gso`: transport checksums of large segments),
//! which each sum their bytes in the way that suits them.

/// Folds a one's-complement sum to 16 bits (not complemented).
#[inline]
pub fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_fold_back_until_sixteen_bits_are_left() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xffff), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0x1_fffe), 0xffff);
        // RFC 1071's example: 0x0001 + 0xf203 + 0xf4f5 + 0xf6f7 = 0x2ddf0.
        assert_eq!(fold(0x0001 + 0xf203 + 0xf4f5 + 0xf6f7), 0xddf2);
        assert_eq!(fold(u64::MAX), 0xffff);
    }
}
