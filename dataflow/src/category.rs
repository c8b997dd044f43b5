//! Message categories (praise, toxic, humor, question, other) from a lexicon of terms and rules
//! shipped as a data file (`lexicon/categories.txt`), replaceable like the sentiment lexicons.
//!
//! Each matching entry adds its weight to its category; the heaviest category wins, ties going
//! to the earlier of toxic, question, praise, humor (a moderator would rather see an insult
//! that also made someone laugh); a message that matches nothing is `other`. One category per
//! message, so a window's category counts add up to its chat messages.

use std::collections::HashMap;

use crate::error::{Error, Result};

const BUILTIN: &str = include_str!("../lexicon/categories.txt");

/// What a chat message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// Weights of the lexicon's entries by the shape they match.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    /// Whole token (lowercase, surrounding punctuation stripped; or the raw lowercase token,
    /// for emoticons such as `<3`; or one emoji).
    words: HashMap<String, Vec<(Category, u32)>>,
    /// Token starting with (`haha*` matches `hahahaha`).
    prefixes: Vec<(String, Category, u32)>,
    /// Consecutive stripped tokens.
    phrases: Vec<(Vec<String>, Category, u32)>,
    /// The first stripped token.
    starts: HashMap<String, Vec<(Category, u32)>>,
    /// The end of the trimmed message.
    ends: Vec<(String, Category, u32)>,
}

/// Emoji variation selectors and joiners that make the same emoji several strings.
fn is_presentation(c: char) -> bool {
    matches!(c, '\u{fe0e}' | '\u{fe0f}' | '\u{200d}')
}

fn normalized(text: &str) -> String {
    text.chars()
        .filter(|c| !is_presentation(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

fn stripped(token: &str) -> &str {
    token.trim_matches(|c: char| c.is_ascii_punctuation())
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
    /// starting with `#` are skipped. Matching ignores case.
    pub fn from_text(text: &str) -> Result<Self> {
        let mut classifier = Self::default();
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
                    .filter(|w| *w > 0)
                    .ok_or_else(|| bad("the weight is not a positive integer"))?,
                None => 1,
            };
            let term = normalized(term.trim());
            if term.is_empty() {
                return Err(bad("the term is empty"));
            }
            match shape.trim() {
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
                    let words: Vec<String> = term.split_whitespace().map(str::to_owned).collect();
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

    /// The category of one chat message.
    pub fn classify(&self, text: &str) -> Category {
        let text = normalized(text);
        let mut weights = [0u32; 5];
        let mut add = |entries: Option<&Vec<(Category, u32)>>| {
            for (category, weight) in entries.into_iter().flatten() {
                weights[*category as usize] += weight;
            }
        };
        let raw: Vec<&str> = text.split_whitespace().collect();
        let words: Vec<&str> = raw
            .iter()
            .map(|t| stripped(t))
            .filter(|t| !t.is_empty())
            .collect();
        for token in &raw {
            let word = stripped(token);
            add(self.words.get(word));
            if word != *token {
                add(self.words.get(*token));
            }
            // Emoji count alone, also when written against a word or each other.
            for c in token.chars().filter(|c| !c.is_ascii()) {
                if !c.is_alphanumeric() {
                    add(self.words.get(c.encode_utf8(&mut [0; 4]) as &str));
                }
            }
        }
        add(words.first().and_then(|w| self.starts.get(*w)));
        // The raw token too, for masked words (`f***` starts with `f**`).
        for token in &raw {
            let word = stripped(token);
            for (prefix, category, weight) in &self.prefixes {
                if word.starts_with(prefix.as_str()) || token.starts_with(prefix.as_str()) {
                    weights[*category as usize] += weight;
                }
            }
        }
        for (phrase, category, weight) in &self.phrases {
            let found = words
                .windows(phrase.len())
                .filter(|w| w.iter().zip(phrase).all(|(a, b)| *a == b))
                .count() as u32;
            weights[*category as usize] += found * weight;
        }
        let trimmed = text.trim_end();
        for (end, category, weight) in &self.ends {
            if trimmed.ends_with(end.as_str()) {
                weights[*category as usize] += weight;
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
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, reason) in [
            ("praise\tgg", "expected"),
            ("love\tword\tgg", "none of toxic"),
            ("other\tword\tgg", "none of toxic"),
            ("praise\tregex\tgg", "the shape"),
            ("praise\tword\tgg\tzero", "positive integer"),
            ("praise\tword\tgg\t0", "positive integer"),
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
    fn the_builtin_lexicon_parses() {
        let classifier = Classifier::builtin();
        assert_eq!(classifier.classify("you are trash"), Category::Toxic);
    }
}
