//! Caption tokenizers of the dual-encoder families, one interface: `tokenizer.json` (CLIP's
//! byte-pair encoding, or any Hugging Face fast tokenizer), SentencePiece `spiece.model`
//! (SigLIP; read directly, see [`super::spiece`]) and BERT WordPiece `vocab.txt`
//! (BiomedCLIP). Each family's own text clean-up runs first (see [`TextClean`]).

use super::spiece::SpModel;
use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{NormalizerWrapper, PreTokenizerWrapper, Tokenizer};

/// A caption split into tokens: ids (with start/end tokens, padded only where the model
/// family requires it) and display strings.
#[derive(Clone, Debug, PartialEq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    /// One readable string per id (`"<|startoftext|>"`, `"coat"`, …).
    pub text: Vec<String>,
}

/// The text clean-up a family's reference tokenizer applies before tokenising.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextClean {
    /// None beyond what `tokenizer.json` itself does (HF CLIP).
    None,
    /// open_clip's `basic_clean` + `whitespace_clean`: HTML entities decoded (twice), typographic
    /// quotes and ligatures made plain (the parts of ftfy's `fix_text` that change captions),
    /// whitespace runs collapsed, ends stripped.
    OpenClip,
    /// SigLIP's tokenizer: `▁` read as a space, then `canonicalize_text`: lower-cased, ASCII
    /// punctuation removed, whitespace runs collapsed, ends stripped.
    Siglip,
}

/// Wraps `tokenizers::Tokenizer` with the family's rules: add start/end tokens, pad only where
/// the model was trained padded (SigLIP), never truncate silently.
pub struct ClipTokenizer {
    inner: Tokenizer,
    max_len: usize,
    clean: TextClean,
    /// Pad every caption to `max_len` with this id.
    pad: Option<u32>,
}

impl ClipTokenizer {
    /// Loads `tokenizer.json`; captions longer than `max_len` tokens (the text tower's
    /// position count, 77 for CLIP) are rejected.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")));
        }
        let inner =
            Tokenizer::from_file(path).map_err(|e| Error::format(path, format!("not a valid tokenizer.json ({e})")))?;
        Self::wrap(inner, path, max_len)
    }

    /// Reads a SentencePiece `spiece.model` (unigram), appending `eos` to every caption.
    pub fn from_spiece(path: &Path, eos: &str, max_len: usize) -> Result<Self> {
        let sp = SpModel::from_file(path)?;
        Self::wrap(sp.to_tokenizer(path, eos)?, path, max_len)
    }

    /// Builds BERT's WordPiece tokenizer from `vocab.txt` (`[CLS] … [SEP]`, BERT's
    /// normaliser and pre-tokenizer).
    pub fn from_wordpiece(path: &Path, lowercase: bool, max_len: usize) -> Result<Self> {
        let bad = |m: String| Error::format(path, m);
        let file = path.to_str().ok_or_else(|| bad("path is not UTF-8".into()))?;
        let wp = WordPiece::from_file(file)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| bad(format!("not a WordPiece vocab.txt ({e})")))?;
        let mut inner = Tokenizer::new(wp);
        let id = |t: &str| inner.token_to_id(t).ok_or_else(|| bad(format!("the vocabulary has no '{t}' token")));
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let _ = inner
            .with_normalizer(Some(NormalizerWrapper::BertNormalizer(BertNormalizer::new(true, true, None, lowercase))));
        inner.with_pre_tokenizer(Some(PreTokenizerWrapper::BertPreTokenizer(BertPreTokenizer)));
        inner.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
        inner.with_decoder(Some(tokenizers::DecoderWrapper::WordPiece(
            tokenizers::decoders::wordpiece::WordPiece::default(),
        )));
        let specials: Vec<tokenizers::AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .filter(|t| inner.token_to_id(t).is_some())
            .map(|t| tokenizers::AddedToken::from(*t, true))
            .collect();
        let _ = inner.add_special_tokens(specials);
        Self::wrap(inner, path, max_len)
    }

    fn wrap(mut inner: Tokenizer, path: &Path, max_len: usize) -> Result<Self> {
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| Error::format(path, format!("cannot disable truncation ({e})")))?;
        Ok(ClipTokenizer { inner, max_len, clean: TextClean::None, pad: None })
    }

    /// The family's text clean-up.
    pub fn with_clean(mut self, clean: TextClean) -> Self {
        self.clean = clean;
        self
    }

    /// Pads every caption to the context length with `pad` (SigLIP).
    pub fn with_padding(mut self, pad: Option<u32>) -> Self {
        self.pad = pad;
        self
    }

    /// Number of ids the tokenizer can produce (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The ids of a caption as the family's reference tokenizer gives them: clean-up, start
    /// and end tokens; no padding, no length limit (for tests against reference ids).
    pub fn raw_ids(&self, caption: &str) -> Result<Vec<u32>> {
        let text = clean(caption, self.clean);
        let enc = self
            .inner
            .encode(text.as_str(), true)
            .map_err(|e| Error::invalid(format!("cannot tokenise caption: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Tokenises one caption. Empty (or whitespace-only) captions and captions longer than the
    /// model's context are errors: M2IB of an empty caption has nothing to explain. SigLIP
    /// captions are padded to the context with `</s>`, as the model was trained.
    pub fn encode(&self, caption: &str) -> Result<Tokens> {
        if caption.trim().is_empty() {
            return Err(Error::invalid("the caption is empty"));
        }
        if clean(caption, self.clean).trim().is_empty() {
            return Err(Error::invalid(format!(
                "the caption {caption:?} is empty once cleaned as the model's tokenizer does (punctuation, entities)"
            )));
        }
        let mut ids = self.raw_ids(caption)?;
        if ids.len() > self.max_len {
            return Err(Error::invalid(format!(
                "the caption is {} tokens long; the model takes at most {} (including start and end tokens): shorten it",
                ids.len(),
                self.max_len
            )));
        }
        if let Some(pad) = self.pad {
            ids.resize(self.max_len, pad);
        }
        let text = ids.iter().map(|&id| self.token_text(id)).collect();
        Ok(Tokens { ids, text })
    }

    /// The ids only (as the official code computes them), with the same checks as [`encode`](Self::encode).
    pub fn ids(&self, caption: &str) -> Result<Vec<u32>> {
        Ok(self.encode(caption)?.ids)
    }

    fn token_text(&self, id: u32) -> String {
        let special = self.inner.id_to_token(id).unwrap_or_default();
        if special.starts_with("<|") || (special.starts_with('[') && special.ends_with(']')) || special == "</s>" {
            return special;
        }
        match self.inner.decode(&[id], false) {
            Ok(s) if !s.trim().is_empty() && !s.contains('\u{FFFD}') => s.trim().trim_end_matches("</w>").to_string(),
            _ => special.trim_end_matches("</w>").trim_start_matches('▁').to_string(),
        }
    }
}

/// Applies a family's clean-up.
pub fn clean(text: &str, how: TextClean) -> String {
    match how {
        TextClean::None => text.to_string(),
        TextClean::OpenClip => {
            let t = plain_typography(&html_unescape(&html_unescape(text)));
            collapse_whitespace(&t)
        }
        TextClean::Siglip => {
            let t: String =
                text.replace('▁', " ").to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect();
            collapse_whitespace(&t)
        }
    }
}

/// Python's `re.sub(r"\s+", " ", t).strip()`.
fn collapse_whitespace(t: &str) -> String {
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The parts of ftfy's `fix_text` that touch ordinary captions: curly quotes to straight ones
/// (`uncurl_quotes`) and Latin ligatures spelled out (`fix_latin_ligatures`).
fn plain_typography(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => out.push('\''),
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => out.push('"'),
            '\u{FB00}' => out.push_str("ff"),
            '\u{FB01}' => out.push_str("fi"),
            '\u{FB02}' => out.push_str("fl"),
            '\u{FB03}' => out.push_str("ffi"),
            '\u{FB04}' => out.push_str("ffl"),
            '\u{FB05}' | '\u{FB06}' => out.push_str("st"),
            c => out.push(c),
        }
    }
    out
}

/// Python's `html.unescape` for numeric references and the named entities captions use.
fn html_unescape(t: &str) -> String {
    const NAMED: [(&str, &str); 8] = [
        ("amp", "&"),
        ("lt", "<"),
        ("gt", ">"),
        ("quot", "\""),
        ("apos", "'"),
        ("nbsp", "\u{a0}"),
        ("#39", "'"),
        ("hellip", "\u{2026}"),
    ];
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        let end = tail.find(';').filter(|&e| e > 0 && e <= 10);
        let decoded = end.and_then(|e| {
            let name = &tail[..e];
            if let Some(num) = name.strip_prefix('#') {
                let v = match num.strip_prefix(['x', 'X']) {
                    Some(h) => u32::from_str_radix(h, 16).ok(),
                    None => num.parse::<u32>().ok(),
                };
                v.and_then(char::from_u32).map(|c| (c.to_string(), e))
            } else {
                NAMED.iter().find(|(n, _)| *n == name).map(|(_, s)| (s.to_string(), e))
            }
        });
        match decoded {
            Some((s, e)) => {
                out.push_str(&s);
                rest = &tail[e + 1..];
            }
            None => {
                out.push('&');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_ups_follow_the_reference_tokenizers() {
        assert_eq!(clean("  “curly”  &amp;amp; ‘single’ ﬁne ", TextClean::OpenClip), "\"curly\" & 'single' fine");
        assert_eq!(clean("&#x41;&#66;&bogus; & x", TextClean::OpenClip), "AB&bogus; & x");
        assert_eq!(clean("A photo, of a cat!  (big)▁x", TextClean::Siglip), "a photo of a cat big x");
        assert_eq!(clean("tab\there", TextClean::None), "tab\there");
    }
}
