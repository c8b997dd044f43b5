//! Message categories (praise, toxic, humor, question, other) from a lexicon of terms and rules
//! shipped as a data file (`lexicon/categories.txt`), replaceable like the sentiment lexicons.
//!
//! Each matching entry adds its weight to its category; the heaviest category wins, ties going
//! to the earlier of toxic, question, praise, humor (a moderator would rather see an insult
//! that also made someone laugh); a message that matches nothing is `other`. One category per
//! message, so a window's category counts add up to its chat messages.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hashing::fnv1a;

const BUILTIN: &str = include_str!("../lexicon/categories.txt");

/// What a chat message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Insults, slurs, harassment.
    Toxic,
    /// Asks something.
    Question,
    /// Compliments, thanks, cheering.
    Praise,
    /// Laughter, jokes.
    Humor,
    /// None of those.
    Other,
}

impl Category {
    /// Every category, in tie-break order.
    pub const ALL: [Category; 5] = [
        Category::Toxic,
        Category::Question,
        Category::Praise,
        Category::Humor,
        Category::Other,
    ];

    /// Lowercase name, as in the lexicon and the output columns.
    pub fn name(self) -> &'static str {
        match self {
            Category::Toxic => "toxic",
            Category::Question => "question",
            Category::Praise => "praise",
            Category::Humor => "humor",
            Category::Other => "other",
        }
    }

    fn named(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name && *c != Category::Other)
    }
}

/// The largest weight a lexicon entry may have: sums over a 4 KiB message stay far from
/// overflowing.
const MAX_WEIGHT: u32 = 1_000;

/// Weights of the lexicon's entries by the shape they match.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    /// Whole token (lowercase, surrounding punctuation stripped; or the raw lowercase token,
    /// for emoticons such as `<3`; or one emoji, which is always a token of its own).
    words: HashMap<String, Vec<(Category, u32)>>,
    /// Token starting with (`haha*` matches `hahahaha`).
    prefixes: Vec<(String, Category, u32)>,
    /// Consecutive stripped tokens.
    phrases: Vec<(Vec<String>, Category, u32)>,
    /// The first stripped token.
    starts: HashMap<String, Vec<(Category, u32)>>,
    /// The end of the trimmed message.
    ends: Vec<(String, Category, u32)>,
    /// FNV-1a of the lexicon's text.
    digest: u64,
}

/// Characters that change nothing a reader sees: emoji variation selectors and joiners (the
/// same emoji written several ways), and the invisible characters chat clients append to get
/// past duplicate-message filters (zero-width space and joiners, U+034F, tag characters).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{fe00}'..='\u{fe0f}' | '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}'
        | '\u{034f}' | '\u{feff}' | '\u{e0000}'..='\u{e007f}')
}

fn normalized(text: &str) -> String {
    text.chars()
        .filter(|c| !is_invisible(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// A symbol outside ASCII (an emoji, a skin tone): a token of its own, so `trash😂` is both
/// `trash` and `😂`.
fn is_symbol(c: char) -> bool {
    !c.is_ascii() && !c.is_alphanumeric() && !c.is_whitespace() && !is_punctuation(c)
}

/// Punctuation in the Unicode sense (`“`, `…`, `¿`) as well as ASCII's.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c, '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{205e}' | '\u{00a1}' | '\u{00ab}' | '\u{00bb}' | '\u{00bf}' | '\u{3001}' | '\u{3002}')
}

/// A token without the punctuation around it (`“trash…”` is `trash`).
fn stripped(token: &str) -> &str {
    token.trim_matches(is_punctuation)
}

/// The tokens of normalized text: runs between whitespace, with each symbol its own token.
fn tokens(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    for run in text.split_whitespace() {
        let mut start = 0;
        for (at, c) in run.char_indices() {
            if is_symbol(c) {
                if start < at {
                    tokens.push(&run[start..at]);
                }
                tokens.push(&run[at..at + c.len_utf8()]);
                start = at + c.len_utf8();
            }
        }
        if start < run.len() {
            tokens.push(&run[start..]);
        }
    }
    tokens
}

impl Classifier {
    /// The lexicon shipped with the binary.
    pub fn builtin() -> Self {
        Self::from_text(BUILTIN).expect("the embedded category lexicon parses")
    }

    /// Parses a lexicon: lines `category<TAB>shape<TAB>term[<TAB>weight]` with category one of
    /// toxic, question, praise, humor; shape one of `word` (a trailing `*` makes it a prefix),
    /// `phrase` (words separated by spaces), `starts` (the first word), `ends` (the message's
    /// last characters); weight a positive integer (1 when absent). Blank lines and lines
    /// starting with `#` are skipped. Matching ignores case. A term ending in `*` is always a
    /// prefix (`f***` is the prefix `f**`).
    pub fn from_text(text: &str) -> Result<Self> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut classifier = Self {
            digest: fnv1a(text.as_bytes()),
            ..Self::default()
        };
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| Error::Lexicon {
                name: "category".to_owned(),
                line: number + 1,
                message: what.to_owned(),
            };
            let fields: Vec<&str> = line.split('\t').collect();
            let (category, shape, term) = match fields.as_slice() {
                [category, shape, term] | [category, shape, term, _] => (*category, *shape, *term),
                _ => return Err(bad("expected category<TAB>shape<TAB>term[<TAB>weight]")),
            };
            let category = Category::named(category.trim())
                .ok_or_else(|| bad("the category is none of toxic, question, praise, humor"))?;
            let weight = match fields.get(3) {
                Some(weight) => weight
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|w| (1..=MAX_WEIGHT).contains(w))
                    .ok_or_else(|| bad("the weight is not an integer from 1 to 1000"))?,
                None => 1,
            };
            let term = normalized(term);
            let term = term.trim().to_owned();
            if term.is_empty() {
                return Err(bad("the term is empty"));
            }
            let shape = shape.trim();
            if matches!(shape, "word" | "starts") && term.contains(char::is_whitespace) {
                return Err(bad(
                    "a word or starts term is one word (a phrase takes several)",
                ));
            }
            match shape {
                "word" => match term.strip_suffix('*') {
                    Some(prefix) if !prefix.is_empty() => {
                        classifier
                            .prefixes
                            .push((prefix.to_owned(), category, weight))
                    }
                    _ => classifier
                        .words
                        .entry(term)
                        .or_default()
                        .push((category, weight)),
                },
                "phrase" => {
                    // Matched against the message's stripped tokens, so stripped alike.
                    let words: Vec<String> = tokens(&term)
                        .into_iter()
                        .map(|t| stripped(t).to_owned())
                        .filter(|w| !w.is_empty())
                        .collect();
                    if words.is_empty() {
                        return Err(bad("the phrase has no words"));
                    }
                    classifier.phrases.push((words, category, weight));
                }
                "starts" => classifier
                    .starts
                    .entry(term)
                    .or_default()
                    .push((category, weight)),
                "ends" => classifier.ends.push((term, category, weight)),
                _ => return Err(bad("the shape is none of word, phrase, starts, ends")),
            }
        }
        Ok(classifier)
    }

    /// A digest of the rules: equal digests classify alike.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The category of one chat message.
    pub fn classify(&self, text: &str) -> Category {
        let text = normalized(text);
        let mut weights = [0u64; 5];
        let mut add = |category: Category, weight: u64| {
            weights[category as usize] = weights[category as usize].saturating_add(weight);
        };
        let raw = tokens(&text);
        let words: Vec<&str> = raw
            .iter()
            .map(|t| stripped(t))
            .filter(|t| !t.is_empty())
            .collect();
        for token in &raw {
            let word = stripped(token);
            // The raw token too, for emoticons (`<3`) and masked words.
            let raw_entries = (word != *token).then(|| self.words.get(*token)).flatten();
            for (category, weight) in self
                .words
                .get(word)
                .into_iter()
                .chain(raw_entries)
                .flatten()
            {
                add(*category, u64::from(*weight));
            }
            for (prefix, category, weight) in &self.prefixes {
                if word.starts_with(prefix.as_str()) || token.starts_with(prefix.as_str()) {
                    add(*category, u64::from(*weight));
                }
            }
        }
        if let Some(entries) = words.first().and_then(|w| self.starts.get(*w)) {
            for (category, weight) in entries {
                add(*category, u64::from(*weight));
            }
        }
        for (phrase, category, weight) in &self.phrases {
            let found = words
                .windows(phrase.len())
                .filter(|w| w.iter().zip(phrase).all(|(a, b)| *a == b))
                .count() as u64;
            add(*category, found.saturating_mul(u64::from(*weight)));
        }
        let trimmed = text.trim_end();
        for (end, category, weight) in &self.ends {
            if trimmed.ends_with(end.as_str()) {
                add(*category, u64::from(*weight));
            }
        }
        // The first of the heaviest in tie-break order (max_by_key would take the last).
        Category::ALL[..4]
            .iter()
            .copied()
            .filter(|c| weights[*c as usize] > 0)
            .fold(None::<Category>, |best, c| match best {
                Some(b) if weights[b as usize] >= weights[c as usize] => Some(b),
                _ => Some(c),
            })
            .unwrap_or(Category::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shape_matches_and_ties_go_to_the_earlier_category() {
        let classifier = Classifier::from_text(
            "# test\n\
             praise\tword\tgg\n\
             humor\tword\thaha*\n\
             humor\tword\t😂\n\
             toxic\tphrase\tshut up\t2\n\
             question\tstarts\thow\n\
             question\tends\t?\n\
             praise\tword\t<3\n\
             toxic\tword\tf***\n",
        )
        .unwrap();
        let cases = [
            ("GG!", Category::Praise),
            ("hahahaha", Category::Humor),
            ("dead😂😂", Category::Humor),
            ("oh shut up", Category::Toxic),
            ("How", Category::Question),
            ("really?", Category::Question),
            ("<3", Category::Praise),
            ("f****", Category::Toxic),
            ("gg hahaha", Category::Praise),
            ("nothing here", Category::Other),
            ("", Category::Other),
        ];
        for (text, expected) in cases {
            assert_eq!(classifier.classify(text), expected, "{text:?}");
        }
        // Two humor matches outweigh one praise match.
        assert_eq!(classifier.classify("gg 😂 hahaha"), Category::Humor);
        // An emoji counts once, and against a word it hides neither.
        assert_eq!(classifier.classify("gg 😂"), Category::Praise);
        assert_eq!(classifier.classify("gg😂"), Category::Praise);
        assert_eq!(classifier.classify("oh shut up😂"), Category::Toxic);
        // Invisible characters and Unicode punctuation change nothing.
        assert_eq!(classifier.classify("really? \u{e0000}"), Category::Question);
        assert_eq!(
            classifier.classify("\u{201c}GG\u{201d}\u{2026}"),
            Category::Praise
        );
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, reason) in [
            ("praise\tgg", "expected"),
            ("love\tword\tgg", "none of toxic"),
            ("other\tword\tgg", "none of toxic"),
            ("praise\tregex\tgg", "the shape"),
            ("praise\tword\tgg\tzero", "from 1 to 1000"),
            ("praise\tword\tgg\t0", "from 1 to 1000"),
            ("praise\tword\tgg\t4000000000", "from 1 to 1000"),
            ("praise\tphrase\t\u{fe0f} \u{fe0f}", "is empty"),
            ("praise\tphrase\t! ?", "no words"),
            ("praise\tword\twell played", "one word"),
        ] {
            let error = Classifier::from_text(&format!("# header\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("line 2") && error.contains(reason),
                "{text:?}: {error}"
            );
        }
    }

    #[test]
    fn the_builtin_lexicon_parses_and_other_rules_digest_otherwise() {
        let classifier = Classifier::builtin();
        assert_eq!(classifier.classify("you are trash"), Category::Toxic);
        let house = Classifier::from_text("praise\tword\tgg\n").unwrap();
        assert_ne!(house.digest(), classifier.digest());
        assert_eq!(
            house.digest(),
            Classifier::from_text("praise\tword\tgg\n")
                .unwrap()
                .digest()
        );
    }
}
