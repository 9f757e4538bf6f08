//! Splitting one text into a training part and a held-out tail.
//!
//! A contiguous tail (rather than every n-th window) is the honest held-out set for a small
//! corpus of plays: interleaved windows would share scenes, speakers and even sentences with the
//! training windows beside them and flatter the perplexity.

use crate::error::{DistillError, Result};

/// Splits `text` so the last `fraction` of its bytes, starting at a line boundary, is held out.
///
/// Returns `(train, held_out)`; `train + held_out == text`. The cut is moved forward to just
/// after the next newline so no line is split.
pub fn split_tail(text: &str, fraction: f64) -> Result<(&str, &str)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(DistillError::InvalidConfig(format!(
            "held-out fraction must be in (0, 1), got {fraction}"
        )));
    }
    let target = ((text.len() as f64) * (1.0 - fraction)) as usize;
    let cut = text.as_bytes()[target..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| target + p + 1)
        .unwrap_or(text.len());
    if cut == 0 || cut == text.len() {
        return Err(DistillError::InvalidConfig(format!(
            "a text of {} bytes has no line boundary to hold out a {fraction} tail at",
            text.len()
        )));
    }
    Ok(text.split_at(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_after_a_newline() {
        let text = "aaaa\nbbbb\ncccc\ndddd\n";
        let (a, b) = split_tail(text, 0.3).unwrap();
        assert_eq!(format!("{a}{b}"), text);
        assert!(a.ends_with('\n'));
        assert_eq!(b, "dddd\n");
        assert!(split_tail("one line", 0.5).is_err());
        assert!(split_tail(text, 1.5).is_err());
    }
}
