//! An image's pixel size read from its header (PNG, JPEG, GIF, WebP), without decoding
//! its pixels: the per-image token formulas of the providers depend on it.

/// Width and height in pixels, or `None` for another format or a damaged header.
pub(super) fn image_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let size = png(bytes)
        .or_else(|| gif(bytes))
        .or_else(|| webp(bytes))
        .or_else(|| jpeg(bytes))?;
    (size.0 > 0 && size.1 > 0).then_some(size)
}

fn be16(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 2)?;
    Some(u32::from(u16::from_be_bytes([b[0], b[1]])))
}

fn le16(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 2)?;
    Some(u32::from(u16::from_le_bytes([b[0], b[1]])))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn le24(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 3)?;
    Some(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
}

/// The IHDR chunk comes first: width and height at bytes 16 and 20.
fn png(bytes: &[u8]) -> Option<(u32, u32)> {
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") || bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    Some((be32(bytes, 16)?, be32(bytes, 20)?))
}

/// The logical screen's size (providers read the first frame, which fits in it).
fn gif(bytes: &[u8]) -> Option<(u32, u32)> {
    if !(bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a")) {
        return None;
    }
    Some((le16(bytes, 6)?, le16(bytes, 8)?))
}

/// The three WebP encodings: lossy (`VP8 `), lossless (`VP8L`) and extended (`VP8X`).
fn webp(bytes: &[u8]) -> Option<(u32, u32)> {
    if !bytes.starts_with(b"RIFF") || bytes.get(8..12)? != b"WEBP" {
        return None;
    }
    match bytes.get(12..16)? {
        b"VP8 " => {
            // Frame tag (3 bytes) and start code 9d 01 2a, then 14-bit sizes.
            if bytes.get(23..26)? != [0x9d, 0x01, 0x2a] {
                return None;
            }
            Some((le16(bytes, 26)? & 0x3fff, le16(bytes, 28)? & 0x3fff))
        }
        b"VP8L" => {
            let b = bytes.get(21..25)?;
            let width = 1 + (u32::from(b[0]) | (u32::from(b[1]) & 0x3f) << 8);
            let height =
                1 + (u32::from(b[1]) >> 6 | u32::from(b[2]) << 2 | (u32::from(b[3]) & 0x0f) << 10);
            Some((width, height))
        }
        b"VP8X" => Some((le24(bytes, 24)? + 1, le24(bytes, 27)? + 1)),
        _ => None,
    }
}

/// The first start-of-frame segment (SOF0–SOF15 but DHT, JPG and DAC), after any number
/// of APP/EXIF segments.
fn jpeg(bytes: &[u8]) -> Option<(u32, u32)> {
    if !bytes.starts_with(&[0xff, 0xd8]) {
        return None;
    }
    let mut at = 2;
    loop {
        if *bytes.get(at)? != 0xff {
            return None;
        }
        // Fill bytes before a marker.
        while *bytes.get(at + 1)? == 0xff {
            at += 1;
        }
        let marker = *bytes.get(at + 1)?;
        match marker {
            0xd8 | 0x01 | 0xd0..=0xd7 => at += 2,
            // End of image or start of scan before any frame header: no size.
            0xd9 | 0xda => return None,
            0xc0..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => {
                // Length (2), precision (1), height (2), width (2).
                return Some((be16(bytes, at + 7)?, be16(bytes, at + 5)?));
            }
            _ => at += 2 + usize::try_from(be16(bytes, at + 2)?).ok()?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_gif_and_webp_headers() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend(1800u32.to_be_bytes());
        png.extend(2400u32.to_be_bytes());
        png.extend([1, 0, 0, 0, 0]);
        assert_eq!(image_size(&png), Some((1800, 2400)));

        let gif = b"GIF89a\x20\x03\x58\x02\xf7\0\0";
        assert_eq!(image_size(gif), Some((800, 600)));

        // Lossy: 1024 × 768.
        let mut lossy = b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0\0\0\0\x9d\x01\x2a".to_vec();
        lossy.extend(1024u16.to_le_bytes());
        lossy.extend(768u16.to_le_bytes());
        assert_eq!(image_size(&lossy), Some((1024, 768)));
        // Lossless: 14-bit sizes minus one, packed.
        let (w, h) = (4000u32 - 1, 3000u32 - 1);
        let packed = w | h << 14;
        let mut lossless = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
        lossless.extend(packed.to_le_bytes());
        assert_eq!(image_size(&lossless), Some((4000, 3000)));
        // Extended: 24-bit canvas sizes minus one.
        let mut extended = b"RIFF\0\0\0\0WEBPVP8X\0\0\0\0\0\0\0\0".to_vec();
        extended.extend(&(5000u32 - 1).to_le_bytes()[..3]);
        extended.extend(&(200u32 - 1).to_le_bytes()[..3]);
        assert_eq!(image_size(&extended), Some((5000, 200)));
    }

    #[test]
    fn jpeg_frame_after_exif() {
        let mut jpeg = vec![0xff, 0xd8];
        // An APP1 (EXIF) segment of 1,000 bytes, then a DQT, then SOF2 (progressive).
        jpeg.extend([0xff, 0xe1]);
        jpeg.extend(1000u16.to_be_bytes());
        jpeg.extend(vec![0u8; 998]);
        jpeg.extend([0xff, 0xdb, 0x00, 0x04, 0x00, 0x00]);
        jpeg.extend([0xff, 0xff, 0xc2, 0x00, 0x11, 0x08]);
        jpeg.extend(3024u16.to_be_bytes()); // height
        jpeg.extend(4032u16.to_be_bytes()); // width
        jpeg.extend([0x03; 10]);
        assert_eq!(image_size(&jpeg), Some((4032, 3024)));
        // A huffman table (0xc4) is not a frame; a scan before any frame has no size.
        assert_eq!(
            image_size(&[0xff, 0xd8, 0xff, 0xc4, 0x00, 0x02, 0xff, 0xda]),
            None
        );
    }

    #[test]
    fn damaged_or_unknown_headers_have_no_size() {
        assert_eq!(image_size(b""), None);
        assert_eq!(image_size(b"\x89PNG\r\n\x1a\n\0\0"), None);
        assert_eq!(image_size(b"BM\0\0\0\0"), None);
        assert_eq!(image_size(&[0xff, 0xd8, 0xff, 0xe0, 0xff, 0xff]), None);
        let mut zero = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        zero.extend([0u8; 8]);
        assert_eq!(image_size(&zero), None);
    }
}
