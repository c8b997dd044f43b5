//! Extractive chat summaries: what the last messages of a stream were about (key phrases, the
//! most representative messages, the dominant sentiment and category, the top emotes), computed
//! from the messages alone, deterministically: counts compared as integers, ties broken by text.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::category::Category;
use crate::event::Millis;
use crate::hashing::{FastMap, FastSet};
use crate::rows::ChatMessage;
use crate::sentiment::Label;

/// Key phrases a summary lists at most.
pub const KEY_PHRASES: usize = 5;
/// Representative messages a summary quotes at most.
pub const REPRESENTATIVE: usize = 3;
/// Emotes a summary lists at most.
pub const TOP_EMOTES: usize = 5;
/// Subject words read from one message at most: a 4 KiB message of short words costs what a
/// long chat line does.
const MAX_WORDS: usize = 32;

/// Words that say nothing about a conversation's subject.
const STOPWORDS: &[&str] = &[
    "a", "about", "all", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by",
    "can", "could", "did", "do", "does", "for", "from", "get", "go", "got", "had", "has", "have",
    "he", "her", "him", "his", "how", "i", "if", "im", "in", "is", "it", "its", "just", "me", "my",
    "no", "not", "of", "oh", "ok", "on", "or", "our", "out", "she", "so", "that", "the", "their",
    "them", "then", "there", "they", "this", "to", "too", "up", "us", "was", "we", "were", "what",
    "when", "where", "which", "who", "why", "will", "with", "would", "yes", "you", "your",
];

/// What a summary reads of a chat text: its emotes, subject words and phrases. They depend on
/// the text alone, so a worker keeps them with the text's sentiment and a repeated text (chat
/// repeats a lot: emote spam, copypasta) is read once, its lines sharing one allocation.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct TextFeatures {
    /// Its emotes (emoji and emote names of the sentiment lexicons, in order, repeats included).
    pub emotes: Vec<String>,
    /// Its distinct phrases (subject words and pairs of adjacent ones), sorted. Words hold no
    /// space and pairs do, so the words need no list of their own.
    phrases: Vec<String>,
}

impl TextFeatures {
    /// The features of `text`, given the emotes found in it.
    pub fn new(text: &str, emotes: Vec<String>) -> Self {
        Self {
            emotes,
            phrases: phrases(subject_words(text)),
        }
    }

    /// The bytes it takes on the heap behind an `Arc` (its counts, itself, its lists and their
    /// strings), for caches bounded in bytes.
    pub fn heap_bytes(&self) -> usize {
        let lists = (self.emotes.capacity() + self.phrases.capacity()) * size_of::<String>();
        let strings: usize = self
            .emotes
            .iter()
            .chain(&self.phrases)
            .map(String::capacity)
            .sum();
        2 * size_of::<usize>() + size_of::<Self>() + lists + strings
    }
}

/// One chat message as a summary reads it, read once where the message was (each message is in
/// `window / every` summaries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatLine {
    /// The message, shared with its `chat_messages` row.
    pub message: Arc<ChatMessage>,
    /// What its text says to a summary.
    pub features: Arc<TextFeatures>,
}

impl ChatLine {
    /// A message with the emotes found in it (its phrases are read here).
    pub fn new(message: ChatMessage, emotes: Vec<String>) -> Self {
        let features = Arc::new(TextFeatures::new(&message.text, emotes));
        Self::with_features(Arc::new(message), features)
    }

    /// A message with its text's features, read before (they must be those of its text).
    pub fn with_features(message: Arc<ChatMessage>, features: Arc<TextFeatures>) -> Self {
        Self { message, features }
    }

    /// Its distinct subject words, sorted.
    fn words(&self) -> impl Iterator<Item = &str> {
        self.features
            .phrases
            .iter()
            .map(String::as_str)
            .filter(|phrase| !phrase.contains(' '))
    }
}

/// A quoted message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Quote {
    /// The text (fields in alphabetical order, as every NDJSON object).
    pub text: String,
    /// Event time.
    pub ts: Millis,
    /// The author.
    pub user_id: String,
}

/// `chat_summaries`: the summary of a stream's latest messages, made after every
/// `summary.every` messages in event order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChatSummary {
    /// The stream.
    pub stream_id: String,
    /// Its number: the summary made after the stream's `seq * every`-th message since reading
    /// began.
    pub seq: u64,
    /// Messages it covers (at most `summary.window`).
    pub messages: u64,
    /// Time of the first message covered.
    pub first_ts: Millis,
    /// Time of the last message covered.
    pub last_ts: Millis,
    /// Where the last message covered was read: with `last_ts`, the summary's identity, which
    /// a replay or a run started elsewhere in the input makes again for the same message (a
    /// `seq` counts from where reading began).
    pub last_source: String,
    /// Its partition.
    pub last_partition: u32,
    /// Its offset.
    pub last_offset: u64,
    /// (phrase, messages containing it), most frequent first.
    pub key_phrases: Vec<(String, u64)>,
    /// The messages closest to what the chat talked about, most representative first.
    pub representative: Vec<Quote>,
    /// Mean compound score in [`crate::sentiment::COMPOUND_SCALE`] units, rounded.
    pub sentiment: i64,
    /// Messages per category, in [`Category::ALL`] order (the enum's order).
    pub categories: [u64; 5],
    /// (emote, occurrences), most frequent first.
    pub top_emotes: Vec<(String, u64)>,
}

impl ChatSummary {
    /// The label of the mean sentiment.
    pub fn sentiment_label(&self) -> Label {
        Label::of_scaled(self.sentiment)
    }

    /// The most frequent category (ties in [`Category::ALL`] order).
    pub fn category(&self) -> Category {
        let mut best = Category::ALL[0];
        for (category, count) in Category::ALL.into_iter().zip(self.categories) {
            if count > self.categories[best as usize] {
                best = category;
            }
        }
        best
    }
}

/// The subject words of a text: lowercase runs of letters and digits, two characters or more,
/// not all digits, not stop words; in order, the first [`MAX_WORDS`].
fn subject_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().nth(1).is_some() && !w.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|w| {
            if w.is_ascii() {
                (!is_ascii_stopword(w)).then(|| w.to_ascii_lowercase())
            } else {
                // Lowercased as Unicode says: the Kelvin sign makes "oK" a stop word.
                let lower = w.to_lowercase();
                STOPWORDS
                    .binary_search(&lower.as_str())
                    .is_err()
                    .then_some(lower)
            }
        })
        .take(MAX_WORDS)
        .collect()
}

/// Stop words are ASCII and at most this long.
const STOPWORD_BYTES: usize = 8;

/// Whether an ASCII word is a stop word once lowercased. Most chat words are ASCII: they are
/// lowercased on the stack, so only the words kept are allocated.
fn is_ascii_stopword(word: &str) -> bool {
    if word.len() > STOPWORD_BYTES {
        return false;
    }
    let mut lower = [0u8; STOPWORD_BYTES];
    let lower = &mut lower[..word.len()];
    lower.copy_from_slice(word.as_bytes());
    lower.make_ascii_lowercase();
    std::str::from_utf8(lower).is_ok_and(|lower| STOPWORDS.binary_search(&lower).is_ok())
}

/// A message's distinct phrases, sorted: its subject words and pairs of adjacent ones.
fn phrases(words: Vec<String>) -> Vec<String> {
    let mut phrases = Vec::with_capacity((2 * words.len()).saturating_sub(1));
    for pair in words.windows(2) {
        let mut phrase = String::with_capacity(pair[0].len() + 1 + pair[1].len());
        phrase.push_str(&pair[0]);
        phrase.push(' ');
        phrase.push_str(&pair[1]);
        phrases.push(phrase);
    }
    phrases.extend(words);
    phrases.sort_unstable();
    phrases.dedup();
    phrases
}

/// The `limit` first of (key, count) by count descending then key (keys are distinct, so the
/// order is total): the few wanted are selected, not the whole list sorted.
fn ranked<'a>(
    counts: impl IntoIterator<Item = (&'a str, u64)>,
    limit: usize,
) -> Vec<(String, u64)> {
    let mut entries: Vec<(&str, u64)> = counts.into_iter().collect();
    let order = |a: &(&str, u64), b: &(&str, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
    if entries.len() > limit {
        entries.select_nth_unstable_by(limit, order);
        entries.truncate(limit);
    }
    entries.sort_unstable_by(order);
    entries
        .into_iter()
        .map(|(key, count)| (key.to_owned(), count))
        .collect()
}

/// Summarizes `lines` (in event order, at least one), as summary `seq` of `stream_id`.
///
/// - key phrases: phrases in at least two messages, by how many messages contain them; a word
///   is left out when a pair containing it (listed or not) is in as many messages;
/// - representative messages: distinct texts by the mean, over their distinct words, of how
///   many messages contain the word (a message about what most messages are about scores
///   high), ties to the later message;
/// - sentiment: the mean compound score; category counts; emotes by occurrences.
pub fn summarize(stream_id: &str, seq: u64, lines: &[ChatLine]) -> ChatSummary {
    // Hash maps for counting: every result is sorted by (count, text) before it is used. Sized
    // for every phrase up front: a summary's map would otherwise grow (and rehash) ten times.
    let phrase_count = lines.iter().map(|line| line.features.phrases.len()).sum();
    let mut in_messages: FastMap<&str, u64> =
        FastMap::with_capacity_and_hasher(phrase_count, Default::default());
    for line in lines {
        for phrase in &line.features.phrases {
            *in_messages.entry(phrase).or_default() += 1;
        }
    }
    let mut shadowed: FastSet<&str> = FastSet::default();
    for (phrase, count) in &in_messages {
        if *count >= 2 && phrase.contains(' ') {
            for word in phrase.split(' ') {
                if in_messages.get(word) == Some(count) {
                    shadowed.insert(word);
                }
            }
        }
    }
    let candidates = in_messages
        .iter()
        .filter(|(phrase, count)| **count >= 2 && !shadowed.contains(*phrase))
        .map(|(phrase, count)| (*phrase, *count));
    let key_phrases = ranked(candidates, KEY_PHRASES);

    // Mean document frequency as a fraction (sum, words), compared by cross-multiplication.
    let mut scored: Vec<(u64, u64, usize)> = Vec::new();
    let mut seen_texts: FastSet<&str> =
        FastSet::with_capacity_and_hasher(lines.len(), Default::default());
    for (index, line) in lines.iter().enumerate().rev() {
        let (mut sum, mut words) = (0, 0);
        for word in line.words() {
            sum += in_messages[word];
            words += 1;
        }
        if words == 0 || !seen_texts.insert(line.message.text.as_str()) {
            continue;
        }
        scored.push((sum, words, index));
    }
    // Stable: among equal means the later message (pushed first) stays first.
    scored.sort_by(|a, b| (b.0 * a.1).cmp(&(a.0 * b.1)));
    let representative = scored
        .iter()
        .take(REPRESENTATIVE)
        .map(|(_, _, index)| {
            let message = &lines[*index].message;
            Quote {
                text: message.text.clone(),
                ts: message.ts,
                user_id: message.user_id.clone(),
            }
        })
        .collect();

    let mut categories = [0u64; 5];
    let mut emotes: FastMap<&str, u64> = FastMap::default();
    let mut sentiment_sum: i64 = 0;
    for line in lines {
        categories[line.message.category as usize] += 1;
        sentiment_sum += line.message.sentiment;
        for emote in &line.features.emotes {
            *emotes.entry(emote).or_default() += 1;
        }
    }
    let count = lines.len() as i64;
    ChatSummary {
        stream_id: stream_id.to_owned(),
        seq,
        messages: lines.len() as u64,
        first_ts: lines.first().map_or(0, |l| l.message.ts),
        last_ts: lines.last().map_or(0, |l| l.message.ts),
        last_source: lines
            .last()
            .map_or_else(String::new, |l| l.message.source.to_string()),
        last_partition: lines.last().map_or(0, |l| l.message.partition),
        last_offset: lines.last().map_or(0, |l| l.message.offset),
        key_phrases,
        representative,
        sentiment: (sentiment_sum as f64 / count.max(1) as f64).round() as i64,
        categories,
        top_emotes: ranked(emotes, TOP_EMOTES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn line(offset: u64, user: &str, text: &str, sentiment: i64, category: Category) -> ChatLine {
        ChatLine::new(
            ChatMessage {
                stream_id: "s".into(),
                ts: 1_000 + offset,
                source: Arc::from("t"),
                partition: 0,
                offset,
                user_id: user.into(),
                text: text.into(),
                sentiment,
                category,
            },
            text.split_whitespace()
                .filter(|w| ["PogChamp", "🔥"].contains(w))
                .map(str::to_owned)
                .collect(),
        )
    }

    #[test]
    fn stopwords_are_sorted_for_the_binary_search() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(STOPWORDS
            .iter()
            .all(|w| w.is_ascii() && w.len() <= STOPWORD_BYTES));
    }

    /// Worked out by hand: case, digits, one-letter words, non-ASCII letters and the Kelvin
    /// sign (U+212A, which lowercases to an ASCII k).
    #[test]
    fn subject_words_are_lowercase_and_leave_stop_words_out() {
        assert_eq!(
            subject_words("The GOAL by Messi, 2024 x 3rd Ünter o\u{212A} WOULD café"),
            ["goal", "messi", "3rd", "ünter", "café"]
        );
    }

    /// Every figure worked out by hand.
    #[test]
    fn a_summary_of_a_small_chat() {
        let lines = [
            line(0, "ann", "What a goal by Messi!", 5_000, Category::Praise),
            line(
                1,
                "bob",
                "messi goal again PogChamp",
                3_000,
                Category::Other,
            ),
            line(2, "cy", "ref is blind", -4_000, Category::Toxic),
            line(3, "dee", "messi goal 🔥 🔥", 2_000, Category::Praise),
            line(4, "eve", "is the ref blind?", -1_000, Category::Question),
        ];
        let summary = summarize("s", 7, &lines);
        // Words: [goal, messi], [messi, goal, again, pogchamp], [ref, blind], [messi, goal],
        // [ref, blind]. "messi goal" is in 2 messages (1 and 3), "goal" and "messi" in 3 each;
        // "ref blind" in 2 and so are "ref" and "blind": those two words go.
        assert_eq!(
            summary.key_phrases,
            [
                ("goal".to_owned(), 3),
                ("messi".to_owned(), 3),
                ("messi goal".to_owned(), 2),
                ("ref blind".to_owned(), 2),
            ]
        );
        // Means: 0 -> (3+3)/2 = 3; 1 -> (3+3+1+1)/4 = 2; 2 -> 2; 3 -> 3; 4 -> 2.
        // Ties go to the later message: 3 before 0, then 4 before 2 before 1.
        let quoted: Vec<&str> = summary
            .representative
            .iter()
            .map(|q| q.user_id.as_str())
            .collect();
        assert_eq!(quoted, ["dee", "ann", "eve"]);
        assert_eq!(summary.sentiment, 1_000);
        assert_eq!(summary.sentiment_label(), Label::Positive);
        // toxic, question, praise, humor, other
        assert_eq!(summary.categories, [1, 1, 2, 0, 1]);
        assert_eq!(summary.category(), Category::Praise);
        assert_eq!(
            summary.top_emotes,
            [("🔥".to_owned(), 2), ("PogChamp".to_owned(), 1)]
        );
        assert_eq!(
            (
                summary.messages,
                summary.first_ts,
                summary.last_ts,
                summary.seq
            ),
            (5, 1_000, 1_004, 7)
        );
    }

    #[test]
    fn repeated_texts_are_quoted_once() {
        let lines: Vec<ChatLine> = (0..4)
            .map(|i| line(i, "u", "gg wp", 0, Category::Other))
            .collect();
        let summary = summarize("s", 1, &lines);
        assert_eq!(summary.representative.len(), 1);
        assert_eq!(summary.representative[0].ts, 1_003);
        assert_eq!(summary.key_phrases, [("gg wp".to_owned(), 4)]);
        assert_eq!(summary.category(), Category::Other);
    }
}
