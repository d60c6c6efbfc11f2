//! Internet checksums (RFC 1071). Words are summed in native byte order and the folded result
//! is stored back natively, so the byte order cancels out.
use core::ptr::null_mut;

use aya_ebpf::{helpers::bpf_csum_diff, programs::XdpContext};

use crate::parse::view;

/// Ones' complement sum of `N` bytes (`N` even) as native 16-bit words.
#[inline(always)]
pub fn sum_bytes<const N: usize>(bytes: &[u8; N]) -> u64 {
    let mut sum = 0u64;
    for i in 0..N / 2 {
        sum += u16::from_ne_bytes([bytes[2 * i], bytes[2 * i + 1]]) as u64;
    }
    sum
}

/// Folds a sum to 16 bits and complements it: the value of a checksum field, or 0 when `sum`
/// already covers a correct checksum field.
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Whether the IPv4 header of `ihl` bytes at `off` carries a correct checksum.
#[inline(always)]
pub fn ipv4_header_ok(ctx: &XdpContext, off: usize, ihl: usize) -> bool {
    let Ok(fixed) = view::<[u8; 20]>(ctx, off) else {
        return false;
    };
    let mut sum = sum_bytes(fixed);
    // Options: at most 40 bytes, in 4-byte words.
    for i in 0..10 {
        let at = 20 + 4 * i;
        if at >= ihl {
            break;
        }
        let Ok(word) = view::<[u8; 4]>(ctx, off + at) else {
            return false;
        };
        sum += sum_bytes(word);
    }
    fold(sum) == 0
}

/// Adds the ones' complement sum of `[data + off, data_end)` to `sum`: at most 1535 bytes (the
/// largest quote and its ICMP header are 1240).
///
/// The bytes go through the kernel's csum_partial (bpf_csum_diff) in at most eleven calls of
/// fixed sizes, the binary digits of the length (a word loop here cost the IPv6 answer more
/// than everything else together); the odd 2 and 1 bytes at the end are added here. Every block
/// starts at an even distance from `off`, so the 16-bit words pair up as in one sum. A call
/// covers at most 512 bytes: older kernels refuse more (their scratch buffer).
///
/// An answer with the longest quote ends `FULL` bytes after `off`: then one call covers it all
/// where the kernel takes that many bytes at once (newer kernels; older ones refuse, and the
/// blocks below follow). Each call costs about as much as csum_partial on a few hundred bytes.
#[inline(always)]
pub fn to_end<const FULL: usize>(ctx: &XdpContext, mut off: usize, mut sum: u64) -> u64 {
    const { assert!(FULL % 4 == 0) };
    let data = ctx.data();
    let end = ctx.data_end();
    let p = data + off;
    // Two tests: the verifier learns the range from the first, the second is the exact end.
    if p + FULL <= end && end - p == FULL {
        // SAFETY: [p, p + FULL) is the rest of the frame; the helper only reads it.
        let all = unsafe { bpf_csum_diff(null_mut(), 0, p as *mut u32, FULL as u32, 0) };
        if all >= 0 {
            return sum + all as u32 as u64;
        }
    }
    macro_rules! block {
        ($size:expr) => {
            let p = data + off;
            if p + $size <= end {
                // SAFETY: [p, p + size) is inside the frame; the helper only reads it.
                let part = unsafe { bpf_csum_diff(null_mut(), 0, p as *mut u32, $size as u32, 0) };
                sum += part as u32 as u64;
                off += $size;
            }
        };
    }
    block!(512);
    block!(512);
    block!(256);
    block!(128);
    block!(64);
    block!(32);
    block!(16);
    block!(8);
    block!(4);
    let p = data + off;
    if p + 2 <= end {
        // SAFETY: bounds checked.
        sum += unsafe { (p as *const u16).read_unaligned() } as u64;
        off += 2;
    }
    let p = data + off;
    if p < end {
        // The odd last byte is the high-order byte of a zero-padded word; in native (little
        // endian) order that is the byte's own value.
        // SAFETY: bounds checked.
        sum += unsafe { *(p as *const u8) } as u64;
    }
    sum
}
