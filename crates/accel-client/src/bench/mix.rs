//! What request number `n` sends: one of the good images (round-robin) or,
//! for a deterministic share of the numbers, one of a few malformed inputs
//! that a server must refuse as invalid (gRPC `INVALID_ARGUMENT`, HTTP 400).

/// The malformed inputs `--malformed` mixes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MalformedKind {
    /// The first half of the first image (a JPEG cut before its
    /// end-of-image marker, or a PNG cut mid-stream).
    TruncatedImage,
    /// 1 KiB of pseudo-random bytes, no known image signature.
    RandomBytes,
    /// Zero bytes.
    EmptyImage,
    /// A well-formed PNG header (valid CRCs) announcing 100000 × 100000
    /// pixels, and no image data.
    HugePng,
}

/// Every kind, in the order request numbers cycle through them.
pub const MALFORMED_KINDS: [MalformedKind; 4] = [
    MalformedKind::TruncatedImage,
    MalformedKind::RandomBytes,
    MalformedKind::EmptyImage,
    MalformedKind::HugePng,
];

/// What one request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// Good image at this index of the plan's images.
    Good(usize),
    /// Malformed input at this index of [`MALFORMED_KINDS`].
    Malformed(usize),
}

impl Slot {
    /// The index into the prepared requests: the good images, then the
    /// malformed inputs.
    pub(super) fn index(self, images: usize) -> usize {
        match self {
            Slot::Good(i) => i,
            Slot::Malformed(k) => images + k,
        }
    }
}

/// SplitMix64: a fixed, well-mixed hash of the request number.
pub(super) fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Request number `n`'s slot: malformed for `malformed_pct` % of the
/// numbers (chosen by a hash of `n`, so the same numbers every run), else
/// the good image `n % images`.
pub(super) fn slot(n: usize, images: usize, malformed_pct: f64) -> Slot {
    if malformed_pct > 0.0 {
        let h = mix(n as u64);
        // Parts per million of the low 32 bits decide; the high bits pick the kind.
        let ppm = ((h & 0xFFFF_FFFF) % 1_000_000) as f64;
        if ppm < malformed_pct * 10_000.0 {
            return Slot::Malformed(((h >> 32) % MALFORMED_KINDS.len() as u64) as usize);
        }
    }
    Slot::Good(n % images.max(1))
}

/// The bytes of a malformed input of `kind`, derived from `image` (the
/// plan's first image) where the kind needs one.
pub fn malformed_input(kind: MalformedKind, image: &[u8]) -> Vec<u8> {
    match kind {
        MalformedKind::TruncatedImage => truncated(image),
        MalformedKind::RandomBytes => {
            let mut v: Vec<u8> = (0..1024u64).map(|i| mix(i ^ 0xACCE1) as u8).collect();
            // No JPEG (FF D8), PNG (89 50) or other image signature starts so.
            v[..4].copy_from_slice(b"\0ACL");
            v
        }
        MalformedKind::EmptyImage => Vec::new(),
        MalformedKind::HugePng => huge_png(100_000, 100_000),
    }
}

/// The first half of `image`; if that still holds an end-of-image marker
/// after a start-of-scan (a JPEG whose EXIF thumbnail sits in the first
/// half), cut right after the first start-of-scan marker instead.
fn truncated(image: &[u8]) -> Vec<u8> {
    let half = &image[..image.len() / 2];
    let sos = half.windows(2).position(|w| w == [0xFF, 0xDA]);
    let eoi = half.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    match (sos, eoi) {
        (Some(s), Some(e)) if e > s => image[..s + 2].to_vec(),
        _ => half.to_vec(),
    }
}

/// A PNG of signature, IHDR (8-bit RGB, `width` × `height`) and IEND.
fn huge_png(width: u32, height: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut v, b"IHDR", &ihdr);
    chunk(&mut v, b"IEND", &[]);
    v
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// CRC-32 (IEEE, as PNG uses it), bit by bit: a few bytes per run.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        // IEND's CRC as every PNG file carries it.
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn huge_png_header_states_absurd_dimensions() {
        let png = malformed_input(MalformedKind::HugePng, &[]);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 100_000);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 100_000);
        assert_eq!(
            u32::from_be_bytes(png[29..33].try_into().unwrap()),
            crc32(&png[12..29])
        );
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    }

    #[test]
    fn truncated_jpeg_has_no_end_of_image_after_its_scan() {
        // SOI, an APP1 "thumbnail" with its own SOS and EOI, then the main
        // scan and EOI: the first half still holds the thumbnail's EOI.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1, 0, 8, 0xFF, 0xDA, 1, 2, 0xFF, 0xD9];
        jpeg.extend_from_slice(&[0xFF, 0xDA]);
        jpeg.extend(std::iter::repeat_n(0x55, 40));
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        let t = malformed_input(MalformedKind::TruncatedImage, &jpeg);
        assert_eq!(t, jpeg[..8].to_vec());
        let sos = t.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        assert!(!t[sos..].windows(2).any(|w| w == [0xFF, 0xD9]));
        // A plain JPEG is cut in half.
        let mut plain = vec![0xFF, 0xD8, 0xFF, 0xDA];
        plain.extend(std::iter::repeat_n(0x11, 60));
        plain.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(
            malformed_input(MalformedKind::TruncatedImage, &plain),
            plain[..33].to_vec()
        );
    }

    #[test]
    fn random_and_empty_inputs() {
        let r = malformed_input(MalformedKind::RandomBytes, &[]);
        assert_eq!(r.len(), 1024);
        assert_eq!(&r[..4], b"\0ACL");
        assert_eq!(r, malformed_input(MalformedKind::RandomBytes, &[1, 2]));
        assert!(malformed_input(MalformedKind::EmptyImage, &[1, 2]).is_empty());
    }

    #[test]
    fn the_malformed_share_is_deterministic_and_close_to_the_percentage() {
        let n = 200_000;
        let slots: Vec<Slot> = (0..n).map(|i| slot(i, 3, 5.0)).collect();
        assert_eq!(slots, (0..n).map(|i| slot(i, 3, 5.0)).collect::<Vec<_>>());
        let mut kinds = [0usize; 4];
        let mut good = 0;
        for (i, s) in slots.iter().enumerate() {
            match *s {
                Slot::Malformed(k) => kinds[k] += 1,
                Slot::Good(g) => {
                    assert_eq!(g, i % 3);
                    good += 1;
                }
            }
        }
        let bad: usize = kinds.iter().sum();
        let share = bad as f64 / n as f64;
        assert!((0.047..0.053).contains(&share), "share {share}");
        for k in kinds {
            assert!(k > bad / 5, "kinds {kinds:?}");
        }
        assert_eq!(good + bad, n);
        // 0 % sends only good images, round-robin as before; 100 % none.
        assert!((0..1000).all(|i| slot(i, 2, 0.0) == Slot::Good(i % 2)));
        assert!((0..1000).all(|i| matches!(slot(i, 2, 100.0), Slot::Malformed(_))));
        assert_eq!(Slot::Malformed(1).index(3), 4);
        assert_eq!(Slot::Good(2).index(3), 2);
    }
}
