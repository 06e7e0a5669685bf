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

/// MED as `median(a, b, a + b - c)`, which equals the three-way rule above, branch free.
#[inline(always)]
fn med(a: i32, b: i32, c: i32) -> i32 {
    (a + b - c).clamp(a.min(b), a.max(b))
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

fn load_values(data: &[u8], g: &Geometry) -> Vec<i32> {
    match (g.sample_bytes, g.signed, g.big_endian) {
        (1, false, _) => data.iter().map(|&b| i32::from(b)).collect(),
        (1, true, _) => data.iter().map(|&b| i32::from(b as i8)).collect(),
        (_, false, false) => data
            .chunks_exact(2)
            .map(|w| i32::from(u16::from_le_bytes([w[0], w[1]])))
            .collect(),
        (_, false, true) => data
            .chunks_exact(2)
            .map(|w| i32::from(u16::from_be_bytes([w[0], w[1]])))
            .collect(),
        (_, true, false) => data
            .chunks_exact(2)
            .map(|w| i32::from(i16::from_le_bytes([w[0], w[1]])))
            .collect(),
        (_, true, true) => data
            .chunks_exact(2)
            .map(|w| i32::from(i16::from_be_bytes([w[0], w[1]])))
            .collect(),
    }
}

/// Residuals `x - prediction` for every sample (wrapping later to the sample width).
fn residuals(v: &[i32], w: usize, stride: usize) -> Vec<i32> {
    let s = stride.min(w);
    let mut res = vec![0i32; v.len()];
    for (r, (cur, out)) in v.chunks_exact(w).zip(res.chunks_exact_mut(w)).enumerate() {
        if r == 0 {
            out[..s].copy_from_slice(&cur[..s]);
            for ((o, &x), &a) in out[s..].iter_mut().zip(&cur[s..]).zip(&cur[..w - s]) {
                *o = x - a;
            }
            continue;
        }
        let up = &v[(r - 1) * w..r * w];
        for ((o, &x), &b) in out[..s].iter_mut().zip(&cur[..s]).zip(&up[..s]) {
            *o = x - b;
        }
        let it = out[s..]
            .iter_mut()
            .zip(&cur[s..])
            .zip(cur[..w - s].iter().zip(&up[s..]).zip(&up[..w - s]));
        for ((o, &x), ((&a, &b), &c)) in it {
            *o = x - med(a, b, c);
        }
    }
    res
}

/// MED + zigzag residuals, then byte-shuffled for 16-bit samples. `data.len()` must satisfy
/// [`med_applies`]; the output has the same length.
pub fn med_encode(data: &[u8], g: &Geometry) -> Vec<u8> {
    let v = load_values(data, g);
    let res = residuals(&v, g.row_len, g.stride);
    if g.sample_bytes == 1 {
        return res.iter().map(|&r| zigzag8(r as u8)).collect();
    }
    let n = res.len();
    let mut out = vec![0u8; data.len()];
    let (lo, hi) = out.split_at_mut(n);
    for ((l, h), &r) in lo.iter_mut().zip(hi.iter_mut()).zip(&res) {
        let z = zigzag16(r as u16);
        *l = z as u8;
        *h = (z >> 8) as u8;
    }
    out
}

/// Inverse of [`med_encode`].
pub fn med_decode(data: &[u8], g: &Geometry) -> Vec<u8> {
    match (g.sample_bytes, g.signed, g.big_endian) {
        (1, false, _) => decode_impl::<true, false, false>(data, g),
        (1, true, _) => decode_impl::<true, true, false>(data, g),
        (_, false, false) => decode_impl::<false, false, false>(data, g),
        (_, false, true) => decode_impl::<false, false, true>(data, g),
        (_, true, false) => decode_impl::<false, true, false>(data, g),
        (_, true, true) => decode_impl::<false, true, true>(data, g),
    }
}

#[inline(always)]
fn to_value<const B8: bool, const SIGNED: bool>(x: u16) -> i32 {
    match (B8, SIGNED) {
        (true, true) => i32::from(x as u8 as i8),
        (true, false) => i32::from(x as u8),
        (false, true) => i32::from(x as i16),
        (false, false) => i32::from(x),
    }
}

fn decode_impl<const B8: bool, const SIGNED: bool, const BE: bool>(
    data: &[u8],
    g: &Geometry,
) -> Vec<u8> {
    let n = if B8 { data.len() } else { data.len() / 2 };
    let w = g.row_len;
    let s = g.stride.min(w);
    // Unzigzagged residuals, as words.
    let z: Vec<u16> = if B8 {
        data.iter().map(|&b| u16::from(unzigzag8(b))).collect()
    } else {
        let (lo, hi) = data.split_at(n);
        lo.iter()
            .zip(hi)
            .map(|(&l, &h)| unzigzag16(u16::from(l) | (u16::from(h) << 8)))
            .collect()
    };
    let rows = n / w;
    let mut vals = vec![0i32; n];
    let val = |z: u16, p: i32| to_value::<B8, SIGNED>(z.wrapping_add(p as u16));
    if rows > 0 {
        let (cur, zr) = (&mut vals[..w], &z[..w]);
        for i in 0..s {
            cur[i] = val(zr[i], 0);
        }
        for i in s..w {
            cur[i] = val(zr[i], cur[i - s]);
        }
    }
    // Two rows at a time: row r+1's pixel i needs only row r's pixels i and i - s, so the
    // two left-neighbour dependency chains run side by side.
    let mut r = 1;
    while r + 1 < rows {
        let (done, rest) = vals.split_at_mut(r * w);
        let up = &done[(r - 1) * w..];
        let (c0, rest) = rest.split_at_mut(w);
        let c1 = &mut rest[..w];
        let (z0, z1) = (&z[r * w..(r + 1) * w], &z[(r + 1) * w..(r + 2) * w]);
        for i in 0..s {
            c0[i] = val(z0[i], up[i]);
            c1[i] = val(z1[i], c0[i]);
        }
        for i in s..w {
            c0[i] = val(z0[i], med(c0[i - s], up[i], up[i - s]));
            c1[i] = val(z1[i], med(c1[i - s], c0[i], c0[i - s]));
        }
        r += 2;
    }
    if r < rows {
        let (done, rest) = vals.split_at_mut(r * w);
        let up = &done[(r - 1) * w..];
        let (c0, z0) = (&mut rest[..w], &z[r * w..(r + 1) * w]);
        for i in 0..s {
            c0[i] = val(z0[i], up[i]);
        }
        for i in s..w {
            c0[i] = val(z0[i], med(c0[i - s], up[i], up[i - s]));
        }
    }
    // A value truncated to the sample width is the stored word again.
    if B8 {
        vals.iter().map(|&x| x as u8).collect()
    } else {
        let mut out = vec![0u8; data.len()];
        for (o, &x) in out.chunks_exact_mut(2).zip(&vals) {
            let x = x as u16;
            o.copy_from_slice(&if BE { x.to_be_bytes() } else { x.to_le_bytes() });
        }
        out
    }
}

/// Activity classes of [`med_classes_encode`]: thresholds on `|d-b| + |b-c| + |c-a|`.
pub const CLASS_THRESHOLDS: [i32; 3] = [4, 16, 64];
pub const CLASSES: usize = CLASS_THRESHOLDS.len() + 1;

/// Activity class of a sample from its causal neighbours (left `a`, up `b`, up-left `c`,
/// up-right `d`): flat regions and edges get residual streams of their own, which is what
/// JPEG-LS's context modelling exploits (ITU-T T.87 A.3).
#[inline(always)]
fn class_of(a: i32, b: i32, c: i32, d: i32) -> usize {
    let act = (d - b).abs() + (b - c).abs() + (c - a).abs();
    usize::from(act >= CLASS_THRESHOLDS[0])
        + usize::from(act >= CLASS_THRESHOLDS[1])
        + usize::from(act >= CLASS_THRESHOLDS[2])
}

/// Class of sample `i` of a row (`cur` decoded up to `i`), with `up` the previous row;
/// class 0 on the first row and the first `s` samples of each row.
#[inline(always)]
fn row_class(cur: &[i32], up: &[i32], i: usize, s: usize) -> usize {
    let w = up.len();
    let b = up[i];
    let d = if i + s < w { up[i + s] } else { b };
    class_of(cur[i - s], b, up[i - s], d)
}

/// MED residuals (zigzag) split into [`CLASSES`] streams by activity class, each stream the
/// low bytes then (for 2-byte samples) the high bytes of its residuals in raster order.
pub fn med_classes_encode(data: &[u8], g: &Geometry) -> Vec<Vec<u8>> {
    let v = load_values(data, g);
    let res = residuals(&v, g.row_len, g.stride);
    let w = g.row_len;
    let s = g.stride.min(w);
    let mut lo: Vec<Vec<u8>> = vec![Vec::new(); CLASSES];
    let mut hi: Vec<Vec<u8>> = vec![Vec::new(); CLASSES];
    for (r, (cur, rr)) in v.chunks_exact(w).zip(res.chunks_exact(w)).enumerate() {
        for (i, &x) in rr.iter().enumerate() {
            let k = if r == 0 || i < s {
                0
            } else {
                row_class(cur, &v[(r - 1) * w..r * w], i, s)
            };
            if g.sample_bytes == 1 {
                lo[k].push(zigzag8(x as u8));
            } else {
                let z = zigzag16(x as u16);
                lo[k].push(z as u8);
                hi[k].push((z >> 8) as u8);
            }
        }
    }
    lo.into_iter()
        .zip(hi)
        .map(|(mut l, h)| {
            l.extend_from_slice(&h);
            l
        })
        .collect()
}

/// Inverse of [`med_classes_encode`]: `streams` as it returned them, `len` the output size.
pub fn med_classes_decode(
    streams: &[Vec<u8>],
    len: usize,
    g: &Geometry,
) -> Result<Vec<u8>, String> {
    match (g.sample_bytes, g.signed, g.big_endian) {
        (1, false, _) => classes_impl::<true, false, false>(streams, len, g),
        (1, true, _) => classes_impl::<true, true, false>(streams, len, g),
        (_, false, false) => classes_impl::<false, false, false>(streams, len, g),
        (_, false, true) => classes_impl::<false, false, true>(streams, len, g),
        (_, true, false) => classes_impl::<false, true, false>(streams, len, g),
        (_, true, true) => classes_impl::<false, true, true>(streams, len, g),
    }
}

fn classes_impl<const B8: bool, const SIGNED: bool, const BE: bool>(
    streams: &[Vec<u8>],
    len: usize,
    g: &Geometry,
) -> Result<Vec<u8>, String> {
    let sb = if B8 { 1 } else { 2 };
    let n = len / sb;
    let w = g.row_len;
    let s = g.stride.min(w);
    if streams.len() != CLASSES || !med_applies(len, g) {
        return Err("class streams do not fit the chunk geometry".into());
    }
    let counts: Vec<usize> = streams.iter().map(|st| st.len() / sb).collect();
    if streams.iter().any(|st| st.len() % sb != 0) || counts.iter().sum::<usize>() != n {
        return Err("class stream lengths do not add up to the chunk".into());
    }
    let mut pos = [0usize; CLASSES];
    let mut next = |k: usize| -> u16 {
        let st = &streams[k];
        let j = pos[k];
        pos[k] += 1;
        if B8 {
            u16::from(unzigzag8(st[j]))
        } else {
            unzigzag16(u16::from(st[j]) | (u16::from(st[counts[k] + j]) << 8))
        }
    };
    // Every stream holds exactly the samples of its class (checked as they are taken).
    let mut vals = vec![0i32; n];
    let mut taken = [0usize; CLASSES];
    for r in 0..n / w {
        let (done, rest) = vals.split_at_mut(r * w);
        let cur = &mut rest[..w];
        if r == 0 {
            for i in 0..w {
                if taken[0] >= counts[0] {
                    return Err("class stream 0 exhausted".into());
                }
                taken[0] += 1;
                let p = if i >= s { cur[i - s] } else { 0 };
                cur[i] = to_value::<B8, SIGNED>(next(0).wrapping_add(p as u16));
            }
            continue;
        }
        let up = &done[(r - 1) * w..];
        for i in 0..w {
            let (k, p) = if i < s {
                (0, up[i])
            } else {
                (row_class(cur, up, i, s), med(cur[i - s], up[i], up[i - s]))
            };
            if taken[k] >= counts[k] {
                return Err(format!("class stream {k} exhausted"));
            }
            taken[k] += 1;
            cur[i] = to_value::<B8, SIGNED>(next(k).wrapping_add(p as u16));
        }
    }
    if B8 {
        Ok(vals.iter().map(|&x| x as u8).collect())
    } else {
        let mut out = vec![0u8; len];
        for (o, &x) in out.chunks_exact_mut(2).zip(&vals) {
            let x = x as u16;
            o.copy_from_slice(&if BE { x.to_be_bytes() } else { x.to_le_bytes() });
        }
        Ok(out)
    }
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
                    let streams = med_classes_encode(&data, &g);
                    assert_eq!(med_classes_decode(&streams, data.len(), &g).unwrap(), data);
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

#[cfg(test)]
mod probe {
    use super::*;

    #[test]
    #[ignore = "timing probe"]
    fn probe_med_parts() {
        let n = 512 * 512 * 20;
        let data: Vec<u8> = (0..n * 2).map(|i| (i * 7 % 251) as u8).collect();
        let g = Geometry {
            row_len: 512,
            stride: 1,
            sample_bytes: 2,
            big_endian: false,
            signed: false,
        };
        let best = |f: &dyn Fn()| {
            (0..7)
                .map(|_| {
                    let cpu = || {
                        let mut ts = libc::timespec {
                            tv_sec: 0,
                            tv_nsec: 0,
                        };
                        // SAFETY: clock_gettime writes into the timespec we own.
                        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
                        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
                    };
                    let t = cpu();
                    f();
                    cpu() - t
                })
                .fold(f64::MAX, f64::min)
        };
        let mb = (n * 2) as f64 / 1e6;
        let v = load_values(&data, &g);
        println!(
            "load {:.0}",
            mb / best(&|| drop(std::hint::black_box(load_values(&data, &g))))
        );
        println!(
            "resid {:.0}",
            mb / best(&|| drop(std::hint::black_box(residuals(&v, 512, 1))))
        );
        let r = residuals(&v, 512, 1);
        println!(
            "zz {:.0}",
            mb / best(&|| {
                let mut out = vec![0u8; n * 2];
                let (lo, hi) = out.split_at_mut(n);
                for ((l, h), &x) in lo.iter_mut().zip(hi.iter_mut()).zip(&r) {
                    let z = zigzag16(x as u16);
                    *l = z as u8;
                    *h = (z >> 8) as u8;
                }
                std::hint::black_box(&out);
            })
        );
        println!("encode {:.0}", mb / best(&|| drop(med_encode(&data, &g))));
        let e = med_encode(&data, &g);
        println!("decode {:.0}", mb / best(&|| drop(med_decode(&e, &g))));
        println!("copy {:.0}", mb / best(&|| drop(data.to_vec())));
    }
}
