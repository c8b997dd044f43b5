//! Extractive chat summaries: what the last messages of a stream were about (key phrases, the
//! most representative messages, the dominant sentiment and category, the top emotes), computed
//! from the messages alone, deterministically: counts compared as integers, ties broken by text.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::category::Category;
use crate::event::Millis;
use crate::hashing::FastMap;
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
    /// space and pairs do, so the words need no list of their own. Shared, so a summary window
    /// counting a phrase keeps it without a copy.
    phrases: Vec<Arc<str>>,
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
    /// strings, the phrases' with their counts), for caches bounded in bytes.
    pub fn heap_bytes(&self) -> usize {
        let counts = 2 * size_of::<usize>();
        let lists = self.emotes.capacity() * size_of::<String>()
            + self.phrases.capacity() * size_of::<Arc<str>>();
        let emotes: usize = self.emotes.iter().map(String::capacity).sum();
        let phrases: usize = self.phrases.iter().map(|p| counts + p.len()).sum();
        counts + size_of::<Self>() + lists + emotes + phrases
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
fn phrases(words: Vec<String>) -> Vec<Arc<str>> {
    let mut phrases: Vec<Arc<str>> = Vec::with_capacity((2 * words.len()).saturating_sub(1));
    for pair in words.windows(2) {
        phrases.push(Arc::from(format!("{} {}", pair[0], pair[1])));
    }
    phrases.extend(words.into_iter().map(Arc::from));
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

/// Summarizes `lines` (in event order, at least one), as summary `seq` of `stream_id`: what
/// [`SummaryWindow::summarize`] says of a window holding them.
pub fn summarize(stream_id: &str, seq: u64, lines: &[ChatLine]) -> ChatSummary {
    let mut window = SummaryWindow::default();
    for line in lines {
        window.push_back(line.clone());
    }
    window.summarize(stream_id, seq)
}

/// A stream's latest messages for its summaries, with how many of them contain each phrase.
///
/// The counts are kept as messages come and go, so a message is counted once rather than once
/// per summary covering it (`window / every` times), and a summary reads them by number, not by
/// text. Each phrase in the window has a number, reused once no message holds the phrase; the
/// numbering is made afresh once most numbers are free (a window the horizon shrank), and let
/// go with the last message, so the window's memory follows its messages, not its busiest
/// moment.
///
/// A message's features come from its text (or from a checkpoint written from it), so a pair's
/// words are among its message's words; features that break this (a hand-made checkpoint)
/// give summaries that may shadow the wrong words, never a panic.
#[derive(Debug, Clone, Default)]
pub struct SummaryWindow {
    /// The messages held, oldest first.
    lines: VecDeque<NumberedLine>,
    /// A phrase's number in `phrases`.
    numbers: FastMap<Arc<str>, u32>,
    /// By number.
    phrases: Vec<PhraseCount>,
    /// Numbers no message uses.
    free: Vec<u32>,
}

/// A window's phrases are numbered afresh once its free numbers are more than this many times
/// those in use, counting at least [`KEPT_NUMBERS`] in use.
const SPARSE_NUMBERING: usize = 4;
/// So that a window of a few messages is not numbered afresh every time one leaves.
const KEPT_NUMBERS: usize = 64;

/// A message in a window with its phrases' numbers.
#[derive(Debug, Clone)]
struct NumberedLine {
    line: ChatLine,
    /// Its subject words' numbers, then its pairs'.
    numbers: Box<[u32]>,
    /// How many of `numbers` are words.
    word_count: usize,
}

/// A phrase of a window.
#[derive(Debug, Clone, Default)]
struct PhraseCount {
    /// The phrase (None: the number is free).
    text: Option<Arc<str>>,
    /// Messages of the window containing it.
    messages: u64,
    /// A pair's two words' numbers: every message with the pair has both words, so they stay
    /// numbered while it does.
    pair_words: Option<[u32; 2]>,
}

impl SummaryWindow {
    /// Messages held.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether it holds no message.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The oldest message.
    pub fn front(&self) -> Option<&ChatLine> {
        self.lines.front().map(|numbered| &numbered.line)
    }

    /// Adds the latest message.
    pub fn push_back(&mut self, line: ChatLine) {
        let phrases = &line.features.phrases;
        let mut numbers = Vec::with_capacity(phrases.len());
        // Words first: a pair's words are numbered by the time the pair is.
        for phrase in phrases.iter().filter(|p| !p.contains(' ')) {
            numbers.push(self.count(phrase));
        }
        let word_count = numbers.len();
        for phrase in phrases.iter().filter(|p| p.contains(' ')) {
            numbers.push(self.count(phrase));
        }
        self.lines.push_back(NumberedLine {
            line,
            numbers: numbers.into_boxed_slice(),
            word_count,
        });
    }

    /// Counts one more message containing `phrase`, numbering it if it is new.
    fn count(&mut self, phrase: &Arc<str>) -> u32 {
        if let Some(&number) = self.numbers.get(&**phrase) {
            self.phrases[number as usize].messages += 1;
            return number;
        }
        let pair_words = phrase.split_once(' ').and_then(|(first, second)| {
            Some([*self.numbers.get(first)?, *self.numbers.get(second)?])
        });
        let counted = PhraseCount {
            text: Some(Arc::clone(phrase)),
            messages: 1,
            pair_words,
        };
        let number = match self.free.pop() {
            Some(number) => {
                self.phrases[number as usize] = counted;
                number
            }
            None => {
                self.phrases.push(counted);
                (self.phrases.len() - 1) as u32
            }
        };
        self.numbers.insert(Arc::clone(phrase), number);
        number
    }

    /// Lets the oldest message go.
    pub fn pop_front(&mut self) {
        let Some(numbered) = self.lines.pop_front() else {
            return;
        };
        for &number in numbered.numbers.iter() {
            let phrase = &mut self.phrases[number as usize];
            phrase.messages -= 1;
            if phrase.messages == 0 {
                if let Some(text) = phrase.text.take() {
                    self.numbers.remove(&text);
                }
                self.free.push(number);
            }
        }
        let in_use = self.phrases.len() - self.free.len();
        if self.lines.is_empty() {
            *self = Self::default();
        } else if self.free.len() > SPARSE_NUMBERING * in_use.max(KEPT_NUMBERS) {
            for numbered in std::mem::take(self).lines {
                self.push_back(numbered.line);
            }
        }
    }

    /// Summarizes the messages held (at least one), as summary `seq` of `stream_id`.
    ///
    /// - key phrases: phrases in at least two messages, by how many messages contain them; a
    ///   word is left out when a pair containing it (listed or not) is in as many messages;
    /// - representative messages: distinct texts by the mean, over their distinct words, of how
    ///   many messages contain the word (a message about what most messages are about scores
    ///   high), ties to the later message;
    /// - sentiment: the mean compound score; category counts; emotes by occurrences.
    pub fn summarize(&self, stream_id: &str, seq: u64) -> ChatSummary {
        let mut shadowed = vec![false; self.phrases.len()];
        for phrase in &self.phrases {
            if let (Some(words), 2..) = (phrase.pair_words, phrase.messages) {
                for word in words {
                    if self.phrases[word as usize].messages == phrase.messages {
                        shadowed[word as usize] = true;
                    }
                }
            }
        }
        let candidates = self
            .phrases
            .iter()
            .zip(shadowed)
            .filter(|(phrase, shadowed)| phrase.messages >= 2 && !shadowed)
            .filter_map(|(phrase, _)| Some((phrase.text.as_deref()?, phrase.messages)));
        let key_phrases = ranked(candidates, KEY_PHRASES);

        // Mean document frequency as a fraction (sum, words), compared by cross-multiplication;
        // the best few kept in order as the messages are read, latest first, a message placed
        // before another only when it scores higher (ties to the later message). A repeated text
        // scores what its later copy does, so it could only be placed behind that copy: it is
        // left out when the copy is among the best, and falls behind them otherwise.
        let mut best: Vec<(u64, u64, &ChatMessage)> = Vec::with_capacity(REPRESENTATIVE + 1);
        for numbered in self.lines.iter().rev() {
            let words = &numbered.numbers[..numbered.word_count];
            if words.is_empty() {
                continue;
            }
            let sum: u64 = words
                .iter()
                .map(|&word| self.phrases[word as usize].messages)
                .sum();
            let words = words.len() as u64;
            let place = best
                .iter()
                .position(|&(best_sum, best_words, _)| sum * best_words > best_sum * words)
                .unwrap_or(best.len());
            let message = &*numbered.line.message;
            if place < REPRESENTATIVE && best.iter().all(|(_, _, m)| m.text != message.text) {
                best.insert(place, (sum, words, message));
                best.truncate(REPRESENTATIVE);
            }
        }
        let representative = best
            .into_iter()
            .map(|(_, _, message)| Quote {
                text: message.text.clone(),
                ts: message.ts,
                user_id: message.user_id.clone(),
            })
            .collect();

        let mut categories = [0u64; 5];
        let mut emotes: FastMap<&str, u64> = FastMap::default();
        let mut sentiment_sum: i64 = 0;
        for numbered in &self.lines {
            let line = &numbered.line;
            categories[line.message.category as usize] += 1;
            sentiment_sum += line.message.sentiment;
            for emote in &line.features.emotes {
                *emotes.entry(emote).or_default() += 1;
            }
        }
        let count = self.lines.len() as i64;
        let (first, last) = (self.front(), self.lines.back().map(|n| &n.line));
        ChatSummary {
            stream_id: stream_id.to_owned(),
            seq,
            messages: self.lines.len() as u64,
            first_ts: first.map_or(0, |l| l.message.ts),
            last_ts: last.map_or(0, |l| l.message.ts),
            last_source: last.map_or_else(String::new, |l| l.message.source.to_string()),
            last_partition: last.map_or(0, |l| l.message.partition),
            last_offset: last.map_or(0, |l| l.message.offset),
            key_phrases,
            representative,
            sentiment: (sentiment_sum as f64 / count.max(1) as f64).round() as i64,
            categories,
            top_emotes: ranked(emotes, TOP_EMOTES),
        }
    }
}

/// A window is stored as its messages: the counts are made again as they are read back.
impl Serialize for SummaryWindow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.lines.iter().map(|numbered| &numbered.line))
    }
}

impl<'de> Deserialize<'de> for SummaryWindow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut window = SummaryWindow::default();
        for line in Vec::<ChatLine>::deserialize(deserializer)? {
            window.push_back(line);
        }
        Ok(window)
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

    /// How many of `lines` contain each phrase, counted by brute force.
    fn messages_containing(lines: &[ChatLine]) -> std::collections::BTreeMap<&str, u64> {
        let mut counts = std::collections::BTreeMap::new();
        for line in lines {
            let mut phrases: Vec<&str> = line.features.phrases.iter().map(|p| &**p).collect();
            phrases.sort_unstable();
            phrases.dedup();
            for phrase in phrases {
                *counts.entry(phrase).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The representative messages by their definition, with nothing kept between messages:
    /// every distinct text (its latest copy) scored by the mean over its distinct words of the
    /// messages containing the word, sorted (stable, latest first), the first three.
    fn representative(lines: &[ChatLine]) -> Vec<Quote> {
        let counts = messages_containing(lines);
        let mut scored: Vec<(u64, u64, &ChatMessage)> = Vec::new();
        for line in lines.iter().rev() {
            let words: Vec<&str> = line
                .features
                .phrases
                .iter()
                .filter(|p| !p.contains(' '))
                .map(|p| &**p)
                .collect();
            let taken = scored.iter().any(|(_, _, m)| m.text == line.message.text);
            if words.is_empty() || taken {
                continue;
            }
            let sum = words.iter().map(|w| counts[w]).sum();
            scored.push((sum, words.len() as u64, &line.message));
        }
        scored.sort_by(|a, b| (b.0 * a.1).cmp(&(a.0 * b.1)));
        scored
            .into_iter()
            .take(REPRESENTATIVE)
            .map(|(_, _, m)| Quote {
                text: m.text.clone(),
                ts: m.ts,
                user_id: m.user_id.clone(),
            })
            .collect()
    }

    /// The key phrases by their definition: phrases in two messages or more, but a word in
    /// exactly as many messages as a pair containing it; by count, then text; the first five.
    fn key_phrases(lines: &[ChatLine]) -> Vec<(String, u64)> {
        let counts = messages_containing(lines);
        let shadowed = |word: &str, count: u64| {
            counts.iter().any(|(pair, pair_count)| {
                *pair_count == count
                    && pair
                        .split_once(' ')
                        .is_some_and(|(a, b)| a == word || b == word)
            })
        };
        let mut listed: Vec<(String, u64)> = counts
            .iter()
            .filter(|(phrase, count)| **count >= 2 && !shadowed(phrase, **count))
            .map(|(phrase, count)| (phrase.to_string(), *count))
            .collect();
        listed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        listed.truncate(KEY_PHRASES);
        listed
    }

    /// The top emotes by their definition.
    fn top_emotes(lines: &[ChatLine]) -> Vec<(String, u64)> {
        let mut all: Vec<&String> = lines.iter().flat_map(|l| &l.features.emotes).collect();
        all.sort_unstable();
        let mut counted: Vec<(String, u64)> = Vec::new();
        for emote in all {
            match counted.last_mut() {
                Some((last, count)) if last == emote => *count += 1,
                _ => counted.push((emote.clone(), 1)),
            }
        }
        counted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counted.truncate(TOP_EMOTES);
        counted
    }

    /// Chat texts of a small vocabulary (phrases repeat, pairs shadow words, means tie), with
    /// texts without subject words (stop words, emoji, digits, one letter) and texts longer than
    /// [`MAX_WORDS`] words.
    fn text(words: &[usize]) -> String {
        const VOCABULARY: [&str; 12] = [
            "goal", "messi", "ref", "blind", "PogChamp", "what", "ok", "🔥", "2024", "x", "gg",
            "wp",
        ];
        let words: Vec<&str> = words
            .iter()
            .map(|&w| VOCABULARY[w % VOCABULARY.len()])
            .collect();
        words.join(" ")
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { failure_persistence: None, ..Default::default() })]
        /// A window kept up to date as messages come and go (numbers freed and reused)
        /// summarizes as one filled afresh with the same messages, and its key phrases, quotes
        /// and emotes are those of their definitions computed by brute force.
        #[test]
        fn a_sliding_window_summarizes_as_a_fresh_one(
            ops in proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(0usize..12, 0..40)),
                1..150,
            )
        ) {
            let mut window = SummaryWindow::default();
            let mut held: std::collections::VecDeque<ChatLine> = Default::default();
            for (offset, op) in ops.into_iter().enumerate() {
                match op {
                    Some(words) => {
                        let line = line(offset as u64, "u", &text(&words), offset as i64, Category::Other);
                        window.push_back(line.clone());
                        held.push_back(line);
                    }
                    None => {
                        window.pop_front();
                        held.pop_front();
                    }
                }
                proptest::prop_assert_eq!(window.len(), held.len());
                if !held.is_empty() {
                    let lines = held.make_contiguous();
                    let summary = window.summarize("s", 1);
                    proptest::prop_assert_eq!(&summary.key_phrases, &key_phrases(lines));
                    proptest::prop_assert_eq!(&summary.representative, &representative(lines));
                    proptest::prop_assert_eq!(&summary.top_emotes, &top_emotes(lines));
                    proptest::prop_assert_eq!(summary, summarize("s", 1, lines));
                }
            }
            // A window read back from its stored form counts as the one stored.
            let stored = bincode::serialize(&window).unwrap();
            let restored: SummaryWindow = bincode::deserialize(&stored).unwrap();
            proptest::prop_assert_eq!(stored, bincode::serialize(&held).unwrap());
            if !held.is_empty() {
                proptest::prop_assert_eq!(restored.summarize("s", 1), window.summarize("s", 1));
            }
        }
    }

    /// A window the horizon shrank is numbered afresh, and an emptied one lets everything go.
    #[test]
    fn a_shrunk_window_gives_its_numbers_back() {
        let mut window = SummaryWindow::default();
        let mut held = Vec::new();
        for i in 0..100u64 {
            let line = line(i, "u", &format!("topic{i} word{i} gg"), 0, Category::Other);
            window.push_back(line.clone());
            held.push(line);
        }
        // Each message has four phrases of its own ("topic7", "word7", "topic7 word7",
        // "word7 gg"), and "gg".
        assert_eq!(window.phrases.len(), 401);
        for popped in 1..=95 {
            window.pop_front();
            let in_use = window.phrases.len() - window.free.len();
            assert_eq!(in_use, 4 * (100 - popped) + 1);
            assert!(window.phrases.len() <= in_use + SPARSE_NUMBERING * in_use.max(KEPT_NUMBERS));
        }
        assert!(window.phrases.len() < 200, "{}", window.phrases.len());
        assert_eq!(window.summarize("s", 1), summarize("s", 1, &held[95..]));
        for _ in 0..5 {
            window.pop_front();
        }
        assert!(window.is_empty() && window.phrases.is_empty() && window.numbers.capacity() == 0);
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
