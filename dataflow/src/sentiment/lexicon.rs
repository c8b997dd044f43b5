//! Loading the word, emoji and emote lexicons from their tab-separated text form.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::hashing::fnv1a;

const BUILTIN_WORDS: &str = include_str!("../../lexicon/vader_lexicon.txt");
const BUILTIN_EMOJI: &str = include_str!("../../lexicon/emoji_utf8_lexicon.txt");
const BUILTIN_EMOTES: &str = include_str!("../../lexicon/emotes.txt");

/// The three lexicons the scorer reads.
#[derive(Debug, Clone)]
pub struct Lexicons {
    /// Lowercase word or emoticon -> valence (-4..4).
    pub(crate) words: HashMap<String, f64>,
    /// Emoji code point -> textual description, scored as words (VADER's approach).
    pub(crate) emoji: HashMap<char, String>,
    /// Case-sensitive emote name -> valence; an emote is never boosted for being in capitals.
    pub(crate) emotes: HashMap<String, f64>,
    /// FNV-1a of the three texts: equal lexicons score alike in every process.
    pub(crate) digest: u64,
}

impl Lexicons {
    /// The lexicons shipped with the binary.
    pub fn builtin() -> Self {
        Self::from_texts(None, None, None).expect("the embedded lexicons parse")
    }

    /// Parses lexicons from text; `None` takes the embedded one.
    /// Word and emote lines are `token<TAB>valence[<TAB>...]`; emoji lines are `emoji<TAB>description`;
    /// blank lines and lines starting with `#` are skipped.
    pub fn from_texts(
        words: Option<&str>,
        emoji: Option<&str>,
        emotes: Option<&str>,
    ) -> Result<Self> {
        let (words, emoji, emotes) = (
            words.unwrap_or(BUILTIN_WORDS),
            emoji.unwrap_or(BUILTIN_EMOJI),
            emotes.unwrap_or(BUILTIN_EMOTES),
        );
        Ok(Self {
            words: parse_valences("word", words, true)?,
            emoji: parse_emoji(emoji)?,
            emotes: parse_valences("emote", emotes, false)?,
            digest: fnv1a(format!("{words}\0{emoji}\0{emotes}").as_bytes()),
        })
    }
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line.trim_end_matches('\r')))
        .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'))
}

fn parse_valences(name: &str, text: &str, lowercase: bool) -> Result<HashMap<String, f64>> {
    let mut map = HashMap::new();
    for (line, content) in lines(text) {
        let mut fields = content.split('\t');
        let token = fields.next().unwrap_or_default().trim();
        let valence = fields
            .next()
            .map(str::trim)
            .and_then(|v| v.parse::<f64>().ok());
        match valence {
            Some(v) if !token.is_empty() && v.is_finite() => {
                let token = if lowercase {
                    token.to_lowercase()
                } else {
                    token.to_owned()
                };
                map.insert(token, v);
            }
            _ => {
                return Err(Error::Lexicon {
                    name: name.into(),
                    line,
                    message: format!("expected token<TAB>valence, got {content:?}"),
                })
            }
        }
    }
    Ok(map)
}

fn parse_emoji(text: &str) -> Result<HashMap<char, String>> {
    let mut map = HashMap::new();
    for (line, content) in lines(text) {
        let (emoji, description) = content.split_once('\t').ok_or_else(|| Error::Lexicon {
            name: "emoji".into(),
            line,
            message: format!("expected emoji<TAB>description, got {content:?}"),
        })?;
        // VADER replaces emoji one code point at a time, so multi-code-point keys never match.
        let mut chars = emoji.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            map.insert(c, description.trim().to_owned());
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_lexicons_load() {
        let lex = Lexicons::builtin();
        assert!(lex.words.len() > 7000);
        assert_eq!(lex.words["good"], 1.9);
        assert_eq!(lex.emoji[&'😂'], "face with tears of joy");
        assert_eq!(lex.emotes["PogChamp"], 2.7);
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let err = Lexicons::from_texts(Some("good\t1.9\nbad line\n"), None, None).unwrap_err();
        assert_eq!(
            err,
            Error::Lexicon {
                name: "word".into(),
                line: 2,
                message: "expected token<TAB>valence, got \"bad line\"".into()
            }
        );
    }
}
