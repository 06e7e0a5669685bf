//! Storage layer, reversible pixel filters: byte shuffle and the MED predictor.
//!
//! These run before zstd on native pixel data. Every function here is an exact bijection on
//! its input (wrapping arithmetic, no assumptions about the values), so a filter can never
//! lose a byte whatever the pixel module claims about bits stored or signedness; those only
//! make the prediction better or worse.
//!
//! MED is the median edge detector of JPEG-LS (ISO 14495-1 / ITU-T T.87 A.4.1): with `a` the
//! left, `b` the upper and `c` the upper-left neighbour, the prediction is `min(a, b)` when
//! `c >= max(a, b)`, `max(a, b)` when `c <= min(a, b)`, else `a + b - c`. Residuals are taken
//! modulo 2^bits and zigzag-mapped so small negative and positive residuals both become small
//! unsigned numbers, which zstd compresses well after the bytes are shuffled into planes.

/// Geometry of a run of samples for the predictor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Samples per row (columns x samples per pixel for interleaved colour).
    pub row_len: usize,
    /// Distance in samples to the left neighbour (samples per pixel, or 1 for planar data).
    pub stride: usize,
    /// Bytes per sample: 1 or 2 for MED.
    pub sample_bytes: usize,
    /// Samples are stored big endian.
    pub big_endian: bool,
    /// Samples are two's complement (Pixel Representation 1): predict on signed values.
    pub signed: bool,
}

/// Splits `data` into byte planes: all first bytes of each `width`-byte word, then all second
/// bytes, and so on. A trailing partial word is copied unchanged at the end.
pub fn shuffle(data: &[u8], width: usize) -> Vec<u8> {
    if width <= 1 {
        return data.to_vec();
    }
    let n = data.len() / width;
    let mut out = vec![0u8; data.len()];
    for (i, word) in data.chunks_exact(width).enumerate() {
        for (b, &byte) in word.iter().enumerate() {
            out[b * n + i] = byte;
        }
    }
    out[n * width..].copy_from_slice(&data[n * width..]);
    out
}

/// Inverse of [`shuffle`].
pub fn unshuffle(data: &[u8], width: usize) -> Vec<u8> {
    if width <= 1 {
        return data.to_vec();
    }
    let n = data.len() / width;
    let mut out = vec![0u8; data.len()];
    for (i, word) in out.chunks_exact_mut(width).enumerate() {
        for (b, byte) in word.iter_mut().enumerate() {
            *byte = data[b * n + i];
        }
    }
    out[n * width..].copy_from_slice(&data[n * width..]);
    out
}

#[inline(always)]
fn med(a: i32, b: i32, c: i32) -> i32 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    if c >= hi {
        lo
    } else if c <= lo {
        hi
    } else {
        a + b - c
    }
}

#[inline(always)]
fn zigzag16(r: u16) -> u16 {
    let s = r as i16;
    ((s << 1) ^ (s >> 15)) as u16
}

#[inline(always)]
fn unzigzag16(z: u16) -> u16 {
    (z >> 1) ^ (0u16.wrapping_sub(z & 1))
}

#[inline(always)]
fn zigzag8(r: u8) -> u8 {
    let s = r as i8;
    ((s << 1) ^ (s >> 7)) as u8
}

#[inline(always)]
fn unzigzag8(z: u8) -> u8 {
    (z >> 1) ^ (0u8.wrapping_sub(z & 1))
}

/// Whether MED applies to `len` bytes with this geometry (whole rows of 8/16-bit samples).
pub fn med_applies(len: usize, g: &Geometry) -> bool {
    (g.sample_bytes == 1 || g.sample_bytes == 2)
        && g.row_len > 0
        && g.stride > 0
        && g.stride <= g.row_len
        && len / (g.row_len * g.sample_bytes) * (g.row_len * g.sample_bytes) == len
}

/// Maps a stored 16-bit word onto the integer the predictor works on.
#[inline(always)]
fn value16(word: u16, signed: bool) -> i32 {
    if signed {
        word as i16 as i32
    } else {
        word as i32
    }
}

/// Predicts the sample at `i` from already known samples `v`.
#[inline(always)]
fn predict(v: &[i32], i: usize, row_len: usize, stride: usize) -> i32 {
    let col = i % row_len;
    if i < row_len {
        // First row: left neighbour only (the very first sample predicts 0).
        if col >= stride {
            v[i - stride]
        } else {
            0
        }
    } else if col < stride {
        // First pixel of a row: the one above.
        v[i - row_len]
    } else {
        med(v[i - stride], v[i - row_len], v[i - row_len - stride])
    }
}

/// MED + zigzag residuals, then byte-shuffled for 16-bit samples. `data.len()` must satisfy
/// [`med_applies`]; the output has the same length.
pub fn med_encode(data: &[u8], g: &Geometry) -> Vec<u8> {
    if g.sample_bytes == 1 {
        let v: Vec<i32> = data.iter().map(|&b| b as i32).collect();
        let mut out = vec![0u8; data.len()];
        for i in 0..v.len() {
            let p = predict(&v, i, g.row_len, g.stride);
            out[i] = zigzag8((v[i] as u8).wrapping_sub(p as u8));
        }
        return out;
    }
    let n = data.len() / 2;
    let words: Vec<u16> = data
        .chunks_exact(2)
        .map(|w| {
            let pair = [w[0], w[1]];
            if g.big_endian {
                u16::from_be_bytes(pair)
            } else {
                u16::from_le_bytes(pair)
            }
        })
        .collect();
    let v: Vec<i32> = words.iter().map(|&w| value16(w, g.signed)).collect();
    let mut out = vec![0u8; data.len()];
    let (lo, hi) = out.split_at_mut(n);
    for i in 0..n {
        let p = predict(&v, i, g.row_len, g.stride);
        let z = zigzag16(words[i].wrapping_sub(p as u16));
        lo[i] = z as u8;
        hi[i] = (z >> 8) as u8;
    }
    out
}

/// Inverse of [`med_encode`].
pub fn med_decode(data: &[u8], g: &Geometry) -> Vec<u8> {
    if g.sample_bytes == 1 {
        let mut v = vec![0i32; data.len()];
        let mut out = vec![0u8; data.len()];
        for i in 0..data.len() {
            let p = predict(&v, i, g.row_len, g.stride);
            let x = unzigzag8(data[i]).wrapping_add(p as u8);
            out[i] = x;
            v[i] = x as i32;
        }
        return out;
    }
    let n = data.len() / 2;
    let (lo, hi) = data.split_at(n);
    let mut v = vec![0i32; n];
    let mut out = vec![0u8; data.len()];
    for i in 0..n {
        let p = predict(&v, i, g.row_len, g.stride);
        let z = u16::from(lo[i]) | (u16::from(hi[i]) << 8);
        let x = unzigzag16(z).wrapping_add(p as u16);
        v[i] = value16(x, g.signed);
        let bytes = if g.big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        };
        out[2 * i] = bytes[0];
        out[2 * i + 1] = bytes[1];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn shuffle_round_trips_with_partial_words() {
        let data: Vec<u8> = (0..103u32).map(|i| (i * 7) as u8).collect();
        for w in 1..9 {
            assert_eq!(unshuffle(&shuffle(&data, w), w), data);
        }
    }

    #[test]
    fn zigzag_is_a_bijection() {
        for x in 0..=u16::MAX {
            assert_eq!(unzigzag16(zigzag16(x)), x);
        }
        for x in 0..=u8::MAX {
            assert_eq!(unzigzag8(zigzag8(x)), x);
        }
    }

    #[test]
    fn med_round_trips_random_and_smooth_data() {
        let mut seed = 42;
        for &(bytes, row_len, stride, be, signed) in &[
            (2usize, 16usize, 1usize, false, false),
            (2, 16, 1, true, true),
            (2, 12, 3, false, true),
            (1, 30, 3, false, false),
            (1, 7, 1, false, false),
            (2, 1, 1, false, false),
        ] {
            let g = Geometry {
                row_len,
                stride,
                sample_bytes: bytes,
                big_endian: be,
                signed,
            };
            for rows in [1usize, 2, 5] {
                let len = rows * row_len * bytes;
                let noise: Vec<u8> = (0..len).map(|_| lcg(&mut seed) as u8).collect();
                let smooth: Vec<u8> = (0..len).map(|i| (i / 3) as u8).collect();
                for data in [noise, smooth] {
                    assert!(med_applies(data.len(), &g));
                    let enc = med_encode(&data, &g);
                    assert_eq!(enc.len(), data.len());
                    assert_eq!(med_decode(&enc, &g), data);
                }
            }
        }
    }

    #[test]
    fn med_makes_smooth_data_small() {
        let g = Geometry {
            row_len: 64,
            stride: 1,
            sample_bytes: 2,
            big_endian: false,
            signed: false,
        };
        let data: Vec<u8> = (0..64 * 64u32)
            .flat_map(|i| ((i % 64) * 10 + (i / 64) * 3 + 1000).to_le_bytes()[..2].to_vec())
            .collect();
        let enc = med_encode(&data, &g);
        let big = enc.iter().filter(|&&b| b > 40).count();
        assert!(big < 100, "{big} large residual bytes");
    }
}
