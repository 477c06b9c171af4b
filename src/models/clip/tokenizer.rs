//! The CLIP byte-pair-encoding tokenizer, read from a Hugging Face `tokenizer.json`.

use crate::error::{Error, Result};
use std::path::Path;

/// A caption split into tokens: ids (with start/end tokens, never padded) and display strings.
#[derive(Clone, Debug, PartialEq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    /// One readable string per id (`"<|startoftext|>"`, `"coat"`, …).
    pub text: Vec<String>,
}

/// Wraps `tokenizers::Tokenizer` with CLIP's rules: add start/end tokens, no padding, no
/// silent truncation.
pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    max_len: usize,
}

impl ClipTokenizer {
    /// Loads `tokenizer.json`; captions longer than `max_len` tokens (the text tower's
    /// position count, 77 for CLIP) are rejected.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")));
        }
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::format(path, format!("not a valid tokenizer.json ({e})")))?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| Error::format(path, format!("cannot disable truncation ({e})")))?;
        Ok(ClipTokenizer { inner, max_len })
    }

    /// Tokenises one caption. Empty (or whitespace-only) captions and captions longer than the
    /// model's context are errors: M2IB of an empty caption has nothing to explain.
    pub fn encode(&self, caption: &str) -> Result<Tokens> {
        if caption.trim().is_empty() {
            return Err(Error::invalid("the caption is empty"));
        }
        let enc =
            self.inner.encode(caption, true).map_err(|e| Error::invalid(format!("cannot tokenise caption: {e}")))?;
        let ids = enc.get_ids().to_vec();
        if ids.len() > self.max_len {
            return Err(Error::invalid(format!(
                "the caption is {} tokens long; the model takes at most {} (including start and end tokens): shorten it",
                ids.len(),
                self.max_len
            )));
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
        if special.starts_with("<|") {
            return special;
        }
        match self.inner.decode(&[id], false) {
            Ok(s) if !s.trim().is_empty() && !s.contains('\u{FFFD}') => s.trim().trim_end_matches("</w>").to_string(),
            _ => special.trim_end_matches("</w>").to_string(),
        }
    }
}
