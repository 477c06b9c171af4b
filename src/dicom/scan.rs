//! A length check of a whole DICOM file before any parser sees it.
//!
//! DICOM parsers allocate a value's declared length before reading it (dicom-rs reserves and
//! zero-fills the buffer), so a hostile or corrupt header that declares 4 GB for one element
//! makes them allocate 4 GB. [`check_lengths`] walks every element, item and fragment of the
//! file and refuses any declared length that runs past the bytes that are really there, with
//! the element and its offset in the message. After it passes, no value the parser reads can
//! ask for more memory than the file's own size (or, for a deflated data set, than the inflated
//! size, which is capped here too).

use std::io::Read;
use std::path::Path;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_encoding::transfer_syntax::{Codec, Endianness};
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::error::{Error, Result};

/// Nested sequences deeper than this are refused (real files nest a handful of levels).
const MAX_DEPTH: usize = 64;
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// The file meta information needed before the data set can be walked.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// Transfer Syntax UID (0002,0010), without padding.
    pub transfer_syntax: String,
    /// Byte offset of the data set (after the 128-byte preamble, "DICM" and group 0002).
    pub dataset_offset: usize,
}

/// Checks that `bytes` is a DICOM file (128-byte preamble, "DICM", explicit VR little endian
/// file meta group) whose every declared length fits in the file; returns its meta
/// information. A deflated data set is inflated to at most `max_inflated` bytes for the check.
///
/// The walk reads the file the way dicom-rs 0.10 does: the meta group ends where its group
/// length says; the data set's encoding comes from the transfer syntax registry; any
/// undefined-length element other than Pixel Data is a sequence in the current encoding.
///
/// # Errors
/// [`Error::Format`] naming `path`, the element and its byte offset.
pub fn check_lengths(path: &Path, bytes: &[u8], max_inflated: usize) -> Result<Meta> {
    let bad = |msg: String| Error::format(path, msg);
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Err(bad(format!(
            "not a DICOM file: no \"DICM\" marker at byte 128 ({} bytes{})",
            bytes.len(),
            if bytes.len() >= 132 {
                format!(", found {:?}", String::from_utf8_lossy(&bytes[128..132]))
            } else {
                String::new()
            }
        )));
    }
    // File meta group: explicit VR little endian, introduced by its group length (0002,0000)
    // UL, which is where the parser ends it.
    let mut meta = Walker { buf: bytes, pos: 132, explicit: true, big: false, base: 0 };
    let (tag, vr, len) = meta.header().map_err(bad)?.ok_or_else(|| bad("no file meta information".into()))?;
    if tag != Tag(0x0002, 0x0000) || vr != Some(VR::UL) || len != 4 || meta.buf.len() - meta.pos < 4 {
        return Err(bad(format!(
            "the file meta information must start with its group length (0002,0000) UL of 4 bytes, found {tag} {vr:?} of {len} bytes"
        )));
    }
    let group_length =
        u32::from_le_bytes([bytes[meta.pos], bytes[meta.pos + 1], bytes[meta.pos + 2], bytes[meta.pos + 3]]);
    meta.pos += 4;
    let meta_end = meta
        .pos
        .checked_add(group_length as usize)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| bad(format!("the file meta group length {group_length} runs past the end of the file")))?;
    let mut transfer_syntax = None;
    while meta.pos < meta_end {
        let start = meta.pos;
        let (tag, _vr, len) =
            meta.header().map_err(bad)?.ok_or_else(|| bad("truncated file meta information".into()))?;
        if tag.0 != 0x0002 || meta.pos > meta_end {
            return Err(bad(format!("element {tag} at byte {start} is inside the file meta group's length")));
        }
        let len = meta.within(tag, start, len, meta_end).map_err(bad)?;
        if tag == Tag(0x0002, 0x0010) {
            let raw = &bytes[meta.pos..meta.pos + len];
            transfer_syntax = Some(String::from_utf8_lossy(raw).trim_end_matches(['\0', ' ']).to_string());
        }
        meta.pos += len;
    }
    let transfer_syntax = transfer_syntax
        .ok_or_else(|| bad("the file meta information has no Transfer Syntax UID (0002,0010)".into()))?;
    let dataset_offset = meta.pos;
    let rest = &bytes[dataset_offset..];
    // How the parser will read the data set: the registry's byte order and data set codec
    // (deflate, for every transfer syntax that deflates); implicit VR for the one implicit
    // transfer syntax. Unknown transfer syntaxes are refused later, before parsing.
    let Some(ts) = TransferSyntaxRegistry.get(&transfer_syntax) else {
        return Ok(Meta { transfer_syntax, dataset_offset });
    };
    let explicit = transfer_syntax != "1.2.840.10008.1.2";
    let big = ts.endianness() == Endianness::Big;
    let deflated = matches!(ts.codec(), Codec::Dataset(Some(_)));
    if matches!(ts.codec(), Codec::Dataset(None)) {
        // The parser cannot read this data set either: refused before parsing.
        return Ok(Meta { transfer_syntax, dataset_offset });
    }
    let inflated;
    let data = if deflated {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(rest)
            .take(max_inflated as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("the deflated data set cannot be inflated: {e}")))?;
        if out.len() > max_inflated {
            return Err(bad(format!("the deflated data set inflates to more than {max_inflated} bytes")));
        }
        inflated = out;
        &inflated[..]
    } else {
        rest
    };
    let base = if deflated { 0 } else { dataset_offset };
    let mut walker = Walker { buf: data, pos: 0, explicit, big, base };
    walker.dataset(None, 0).map_err(bad)?;
    Ok(Meta { transfer_syntax, dataset_offset })
}

/// A cursor over a data set's bytes. `base` is added to offsets in messages.
struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
    explicit: bool,
    big: bool,
    base: usize,
}

type WalkResult<T> = std::result::Result<T, String>;

impl Walker<'_> {
    fn u16_at(&self, at: usize) -> u16 {
        let b = [self.buf[at], self.buf[at + 1]];
        if self.big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b = [self.buf[at], self.buf[at + 1], self.buf[at + 2], self.buf[at + 3]];
        if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn need(&self, n: usize, what: &str) -> WalkResult<()> {
        if self.buf.len() - self.pos < n {
            return Err(format!(
                "the file ends inside {what} at byte {} (truncated or corrupt file)",
                self.base + self.pos
            ));
        }
        Ok(())
    }

    /// Reads an element or item header; `None` at the end of the buffer. Items and delimiters
    /// (group FFFE) have no VR.
    fn header(&mut self) -> WalkResult<Option<(Tag, Option<VR>, u32)>> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        self.need(8, "an element header")?;
        let tag = Tag(self.u16_at(self.pos), self.u16_at(self.pos + 2));
        if tag.0 == 0xFFFE || !self.explicit {
            let len = self.u32_at(self.pos + 4);
            self.pos += 8;
            let vr = if tag.0 == 0xFFFE {
                None
            } else {
                Some(StandardDataDictionary.by_tag(tag).map(|e| e.vr().relaxed()).unwrap_or(VR::UN))
            };
            return Ok(Some((tag, vr, len)));
        }
        let code = [self.buf[self.pos + 4], self.buf[self.pos + 5]];
        let vr = VR::from_binary(code).ok_or_else(|| {
            format!(
                "element {tag} at byte {} has an unknown value representation {:?}",
                self.base + self.pos,
                String::from_utf8_lossy(&code)
            )
        })?;
        use VR::*;
        if matches!(vr, OB | OD | OF | OL | OV | OW | SQ | SV | UC | UN | UR | UT | UV) {
            self.need(12, "an element header")?;
            let len = self.u32_at(self.pos + 8);
            self.pos += 12;
            Ok(Some((tag, Some(vr), len)))
        } else {
            let len = u32::from(self.u16_at(self.pos + 6));
            self.pos += 8;
            Ok(Some((tag, Some(vr), len)))
        }
    }

    fn within(&self, tag: Tag, start: usize, len: u32, end: usize) -> WalkResult<usize> {
        let left = end.saturating_sub(self.pos);
        if len == UNDEFINED || len as usize > left {
            return Err(format!(
                "element {tag} at byte {} declares {} bytes, but only {left} remain{} (truncated or corrupt file)",
                self.base + start,
                if len == UNDEFINED { "an undefined length of".to_string() } else { len.to_string() },
                if end < self.buf.len() { " in its enclosing item" } else { "" },
            ));
        }
        Ok(len as usize)
    }

    /// Walks elements until `end` (a defined-length item), or an item delimiter (an
    /// undefined-length item, `end = None` and `depth > 0`), or the end of the buffer (the top
    /// level).
    fn dataset(&mut self, end: Option<usize>, depth: usize) -> WalkResult<()> {
        let limit = end.unwrap_or(self.buf.len());
        loop {
            if self.pos == limit {
                if end.is_none() && depth > 0 {
                    return Err(format!("an undefined-length item is not closed before byte {}", self.base + self.pos));
                }
                return Ok(());
            }
            let start = self.pos;
            let Some((tag, vr, len)) = self.header()? else { unreachable!("pos < limit") };
            if self.pos > limit {
                return Err(format!("element {tag} at byte {} runs past its enclosing item", self.base + start));
            }
            if tag.0 == 0xFFFE {
                if tag.1 == 0xE00D && end.is_none() && depth > 0 {
                    return Ok(());
                }
                return Err(format!("unexpected item tag {tag} at byte {}", self.base + start));
            }
            let vr = vr.unwrap_or(VR::UN);
            if len == UNDEFINED {
                if tag == Tag(0x7FE0, 0x0010) {
                    self.fragments(tag, limit)?;
                } else {
                    // The parser reads any other undefined-length element as a sequence in the
                    // current encoding (an undefined-length UN too), and so does this walk.
                    self.sequence(None, limit, depth + 1)?;
                }
            } else {
                let len = self.within(tag, start, len, limit)?;
                if vr == VR::SQ {
                    self.sequence(Some(self.pos + len), limit, depth + 1)?;
                } else {
                    self.pos += len;
                }
            }
        }
    }

    /// Walks the items of a sequence, until `end` (defined length) or a sequence delimiter.
    fn sequence(&mut self, end: Option<usize>, limit: usize, depth: usize) -> WalkResult<()> {
        if depth > MAX_DEPTH {
            return Err(format!("sequences nest deeper than {MAX_DEPTH} levels at byte {}", self.base + self.pos));
        }
        let limit = end.unwrap_or(limit);
        loop {
            if Some(self.pos) == end {
                return Ok(());
            }
            let start = self.pos;
            let Some((tag, _, len)) = self.header()? else {
                return Err(format!(
                    "a sequence is not closed before the end of the file (byte {})",
                    self.base + start
                ));
            };
            match (tag.0, tag.1) {
                (0xFFFE, 0xE000) if len == UNDEFINED => self.dataset(None, depth)?,
                (0xFFFE, 0xE000) => {
                    let len = self.within(tag, start, len, limit)?;
                    let item_end = self.pos + len;
                    self.dataset(Some(item_end), depth)?;
                }
                (0xFFFE, 0xE0DD) if end.is_none() => return Ok(()),
                _ => return Err(format!("expected a sequence item at byte {}, found {tag}", self.base + start)),
            }
        }
    }

    /// Walks the fragments of encapsulated pixel data up to the sequence delimiter.
    fn fragments(&mut self, pixel_data: Tag, limit: usize) -> WalkResult<()> {
        loop {
            let start = self.pos;
            let Some((tag, _, len)) = self.header()? else {
                return Err(format!("encapsulated {pixel_data} is not closed before the end of the file"));
            };
            match (tag.0, tag.1) {
                (0xFFFE, 0xE000) => self.pos += self.within(tag, start, len, limit)?,
                (0xFFFE, 0xE0DD) => return Ok(()),
                _ => return Err(format!("expected a pixel data fragment at byte {}, found {tag}", self.base + start)),
            }
        }
    }
}
