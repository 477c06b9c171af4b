//! SentencePiece `spiece.model` files (a protobuf `ModelProto`) read without the SentencePiece
//! library, and turned into an equivalent `tokenizers` pipeline: the model's precompiled
//! normalisation (NFKC and friends), SentencePiece's whitespace rules (strip, collapse runs,
//! a `▁` before every word), and a Unigram model with the file's pieces and scores.
//!
//! Only what tokenisation needs is decoded: pieces (text, score, type), the trainer's model
//! type and special ids, and the normaliser spec. Unknown fields are skipped, as protobuf
//! readers do.

use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{precompiled::Precompiled, replace::Replace, strip::Strip, Sequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, Tokenizer};

/// A piece's type (`SentencePiece.Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

/// One vocabulary entry.
#[derive(Clone, Debug)]
pub struct Piece {
    pub text: String,
    pub score: f32,
    pub kind: PieceType,
}

/// The decoded parts of a `ModelProto`.
#[derive(Clone, Debug)]
pub struct SpModel {
    pub pieces: Vec<Piece>,
    /// `TrainerSpec.model_type`: 1 unigram, 2 BPE, 3 word, 4 char.
    pub model_type: u64,
    pub unk_id: i64,
    pub eos_id: i64,
    pub pad_id: i64,
    pub byte_fallback: bool,
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

/// A protobuf field: number and value.
enum Field<'a> {
    Varint(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// Iterates over the fields of one protobuf message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("field runs past the end")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn next_field(&mut self) -> std::result::Result<Option<(u64, Field<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let f = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Varint(0)
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Field::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((key >> 3, f)))
    }
}

fn fields(
    buf: &[u8],
    mut f: impl FnMut(u64, Field<'_>) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    let mut r = Reader { buf, pos: 0 };
    while let Some((n, v)) = r.next_field()? {
        f(n, v)?;
    }
    Ok(())
}

/// The normaliser's precompiled charsmap, checked before and after parsing: the header's trie
/// size must fit the buffer (the parser would reserve memory by it first), and the result must
/// normalise a probe text without panicking (a malformed trie indexes out of bounds).
fn checked_charsmap(map: &[u8]) -> std::result::Result<Precompiled, String> {
    let size = map.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    match size {
        Some(n) if n % 4 == 0 && n <= map.len() - 4 => {}
        _ => return Err("precompiled_charsmap: corrupt header".into()),
    }
    let parse = |m: &[u8]| Precompiled::from(m).map_err(|e| format!("precompiled_charsmap: {e}"));
    let probe = parse(map)?;
    let ok = std::panic::catch_unwind(move || {
        use tokenizers::{NormalizedString, Normalizer};
        let mut text = NormalizedString::from("Probe ÀÉ ﬁ ①２ text\u{3000}…\t“x”");
        probe.normalize(&mut text).is_ok()
    });
    match ok {
        Ok(true) => parse(map),
        _ => Err("precompiled_charsmap: corrupt trie".into()),
    }
}

/// Protobuf's int32 as a varint (negative values are sign-extended to 64 bits).
fn int32(v: u64) -> i64 {
    v as i64 as i32 as i64
}

impl SpModel {
    /// Reads `spiece.model`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes).map_err(|m| Error::format(path, format!("not a SentencePiece model ({m})")))
    }

    /// Decodes a serialised `ModelProto`.
    pub fn parse(buf: &[u8]) -> std::result::Result<Self, String> {
        let mut m = SpModel {
            pieces: Vec::new(),
            model_type: 1,
            unk_id: 0,
            eos_id: 2,
            pad_id: -1,
            byte_fallback: false,
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        };
        fields(buf, |n, f| {
            match (n, f) {
                (1, Field::Bytes(b)) => {
                    let mut p = Piece { text: String::new(), score: 0.0, kind: PieceType::Normal };
                    fields(b, |n, f| {
                        match (n, f) {
                            (1, Field::Bytes(s)) => {
                                p.text = String::from_utf8(s.to_vec()).map_err(|_| "a piece is not UTF-8")?
                            }
                            (2, Field::Fixed32(x)) => p.score = f32::from_bits(x),
                            (3, Field::Varint(t)) => {
                                p.kind = match t {
                                    1 => PieceType::Normal,
                                    2 => PieceType::Unknown,
                                    3 => PieceType::Control,
                                    4 => PieceType::UserDefined,
                                    5 => PieceType::Unused,
                                    6 => PieceType::Byte,
                                    t => return Err(format!("piece type {t}")),
                                }
                            }
                            _ => {}
                        }
                        Ok(())
                    })?;
                    m.pieces.push(p);
                }
                (2, Field::Bytes(b)) => fields(b, |n, f| {
                    match (n, f) {
                        (3, Field::Varint(t)) => m.model_type = t,
                        (35, Field::Varint(v)) => m.byte_fallback = v != 0,
                        (40, Field::Varint(v)) => m.unk_id = int32(v),
                        (42, Field::Varint(v)) => m.eos_id = int32(v),
                        (43, Field::Varint(v)) => m.pad_id = int32(v),
                        _ => {}
                    }
                    Ok(())
                })?,
                (3, Field::Bytes(b)) => fields(b, |n, f| {
                    match (n, f) {
                        (2, Field::Bytes(c)) => m.precompiled_charsmap = c.to_vec(),
                        (3, Field::Varint(v)) => m.add_dummy_prefix = v != 0,
                        (4, Field::Varint(v)) => m.remove_extra_whitespaces = v != 0,
                        (5, Field::Varint(v)) => m.escape_whitespaces = v != 0,
                        _ => {}
                    }
                    Ok(())
                })?,
                _ => {}
            }
            Ok(())
        })?;
        if m.pieces.is_empty() {
            return Err("no pieces".into());
        }
        Ok(m)
    }

    /// The id of a piece.
    pub fn id_of(&self, text: &str) -> Option<u32> {
        self.pieces.iter().position(|p| p.text == text).map(|i| i as u32)
    }

    /// A `tokenizers` pipeline that tokenises as SentencePiece does with this model, appending
    /// the end-of-sequence piece (`eos`) to every caption.
    pub fn to_tokenizer(&self, path: &Path, eos: &str) -> Result<Tokenizer> {
        let bad = |m: String| Error::format(path, m);
        if self.model_type != 1 {
            return Err(Error::Unsupported(format!(
                "{}: SentencePiece model type {} (only unigram, type 1, is implemented)",
                path.display(),
                self.model_type
            )));
        }
        if !self.escape_whitespaces {
            return Err(Error::Unsupported(format!("{}: escape_whitespaces = false", path.display())));
        }
        let unk = usize::try_from(self.unk_id).ok().filter(|&u| u < self.pieces.len());
        let vocab = self.pieces.iter().map(|p| (p.text.clone(), f64::from(p.score))).collect();
        let model = Unigram::from(vocab, unk, self.byte_fallback).map_err(|e| bad(format!("unigram model: {e}")))?;
        let mut tok = Tokenizer::new(model);
        let mut norms: Vec<NormalizerWrapper> = Vec::new();
        if !self.precompiled_charsmap.is_empty() {
            norms.push(NormalizerWrapper::Precompiled(checked_charsmap(&self.precompiled_charsmap).map_err(bad)?));
        }
        if self.remove_extra_whitespaces {
            norms.push(NormalizerWrapper::StripNormalizer(Strip::new(true, true)));
            let collapse = Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(" {2,}".into()), " ")
                .map_err(|e| bad(format!("whitespace rule: {e}")))?;
            norms.push(NormalizerWrapper::Replace(collapse));
        }
        let _ = tok.with_normalizer(Some(NormalizerWrapper::Sequence(Sequence::new(norms))));
        let scheme = if self.add_dummy_prefix { PrependScheme::Always } else { PrependScheme::Never };
        tok.with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(Metaspace::new('▁', scheme, true))));
        tok.with_decoder(Some(DecoderWrapper::Metaspace(Metaspace::new('▁', scheme, true))));
        let eos_id = self.id_of(eos).ok_or_else(|| bad(format!("the vocabulary has no '{eos}' piece")))?;
        let specials: Vec<AddedToken> = self
            .pieces
            .iter()
            .filter(|p| p.kind == PieceType::Control || p.kind == PieceType::Unknown)
            .map(|p| AddedToken::from(p.text.clone(), true))
            .collect();
        let _ = tok.add_special_tokens(specials);
        let post = tokenizers::processors::template::TemplateProcessing::builder()
            .try_single(format!("$A:0 {eos}:0"))
            .and_then(|b| b.special_tokens(vec![(eos.to_string(), eos_id)]).build().map_err(|e| e.to_string()))
            .map_err(|e| bad(format!("post-processor: {e}")))?;
        tok.with_post_processor(Some(post));
        Ok(tok)
    }
}
