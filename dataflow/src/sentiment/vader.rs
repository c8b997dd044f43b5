//! A port of VADER 3.3.2's `polarity_scores`, with emotes as an extra case-sensitive lexicon.
//!
//! One deliberate difference: VADER's "but" rule looks sentiments up by value
//! (`sentiments.index(...)`), which rescales the wrong word when two words share a valence; this
//! port rescales by position, as NLTK's copy of VADER does.

use super::lexicon::Lexicons;
use crate::category::{Category, Classifier};

const B_INCR: f64 = 0.293;
const B_DECR: f64 = -0.293;
const C_INCR: f64 = 0.733;
const N_SCALAR: f64 = -0.74;

const NEGATE: &[&str] = &[
    "aint",
    "arent",
    "cannot",
    "cant",
    "couldnt",
    "darent",
    "didnt",
    "doesnt",
    "ain't",
    "aren't",
    "can't",
    "couldn't",
    "daren't",
    "didn't",
    "doesn't",
    "dont",
    "hadnt",
    "hasnt",
    "havent",
    "isnt",
    "mightnt",
    "mustnt",
    "neither",
    "don't",
    "hadn't",
    "hasn't",
    "haven't",
    "isn't",
    "mightn't",
    "mustn't",
    "neednt",
    "needn't",
    "never",
    "none",
    "nope",
    "nor",
    "not",
    "nothing",
    "nowhere",
    "oughtnt",
    "shant",
    "shouldnt",
    "uhuh",
    "wasnt",
    "werent",
    "oughtn't",
    "shan't",
    "shouldn't",
    "uh-uh",
    "wasn't",
    "weren't",
    "without",
    "wont",
    "wouldnt",
    "won't",
    "wouldn't",
    "rarely",
    "seldom",
    "despite",
];

const BOOSTERS_UP: &[&str] = &[
    "absolutely",
    "amazingly",
    "awfully",
    "completely",
    "considerable",
    "considerably",
    "decidedly",
    "deeply",
    "effing",
    "enormous",
    "enormously",
    "entirely",
    "especially",
    "exceptional",
    "exceptionally",
    "extreme",
    "extremely",
    "fabulously",
    "flipping",
    "flippin",
    "frackin",
    "fracking",
    "fricking",
    "frickin",
    "frigging",
    "friggin",
    "fully",
    "fuckin",
    "fucking",
    "fuggin",
    "fugging",
    "greatly",
    "hella",
    "highly",
    "hugely",
    "incredible",
    "incredibly",
    "intensely",
    "major",
    "majorly",
    "more",
    "most",
    "particularly",
    "purely",
    "quite",
    "really",
    "remarkably",
    "so",
    "substantially",
    "thoroughly",
    "total",
    "totally",
    "tremendous",
    "tremendously",
    "uber",
    "unbelievably",
    "unusually",
    "utter",
    "utterly",
    "very",
];

const BOOSTERS_DOWN: &[&str] = &[
    "almost",
    "barely",
    "hardly",
    "just enough",
    "kind of",
    "kinda",
    "kindof",
    "kind-of",
    "less",
    "little",
    "marginal",
    "marginally",
    "occasional",
    "occasionally",
    "partly",
    "scarce",
    "scarcely",
    "slight",
    "slightly",
    "somewhat",
    "sort of",
    "sorta",
    "sortof",
    "sort-of",
];

const SPECIAL_CASES: &[(&str, f64)] = &[
    ("the shit", 3.0),
    ("the bomb", 3.0),
    ("bad ass", 1.5),
    ("badass", 1.5),
    ("bus stop", 0.0),
    ("yeah right", -2.0),
    ("kiss of death", -1.5),
    ("to die for", 3.0),
    ("beating heart", 3.5),
];

/// VADER's four scores for one text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Normalized sum of valences, -1..1, rounded to 4 decimals.
    pub compound: f64,
    /// Share of positive intensity, rounded to 3 decimals.
    pub positive: f64,
    /// Share of neutral words, rounded to 3 decimals.
    pub neutral: f64,
    /// Share of negative intensity, rounded to 3 decimals.
    pub negative: f64,
}

/// Scores texts against a set of lexicons.
#[derive(Debug, Clone)]
pub struct Analyzer {
    lexicons: Lexicons,
    categories: Classifier,
}

fn booster(word_lower: &str) -> Option<f64> {
    if BOOSTERS_UP.contains(&word_lower) {
        Some(B_INCR)
    } else if BOOSTERS_DOWN.contains(&word_lower) {
        Some(B_DECR)
    } else {
        None
    }
}

fn special_case(phrase: &str) -> Option<f64> {
    SPECIAL_CASES
        .iter()
        .find(|(p, _)| *p == phrase)
        .map(|(_, v)| *v)
}

/// Python's `str.isupper()`: some cased character and no lowercase one.
fn is_upper(word: &str) -> bool {
    word.chars().any(char::is_uppercase) && !word.chars().any(char::is_lowercase)
}

fn is_negation(word_lower: &str) -> bool {
    NEGATE.contains(&word_lower) || word_lower.contains("n't")
}

/// Python's `string.punctuation`.
fn is_ascii_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// Strips leading and trailing punctuation unless that leaves two characters or fewer (an emoticon).
fn strip_punctuation(token: &str) -> &str {
    let stripped = token.trim_matches(is_ascii_punctuation);
    if stripped.chars().count() <= 2 {
        token
    } else {
        stripped
    }
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

/// The tokens of one text with their lowercase forms.
struct Tokens<'t> {
    words: Vec<&'t str>,
    lower: Vec<String>,
    cap_differential: bool,
}

impl Analyzer {
    /// A scorer over the given lexicons.
    pub fn new(lexicons: Lexicons) -> Self {
        Self {
            lexicons,
            categories: Classifier::builtin(),
        }
    }

    /// The same scorer with another category lexicon.
    pub fn with_categories(self, categories: Classifier) -> Self {
        Self { categories, ..self }
    }

    /// A digest of the lexicons and category rules: processes whose analyzers have the same one
    /// score and categorize alike.
    pub fn digest(&self) -> u64 {
        self.lexicons.digest ^ self.categories.digest().rotate_left(1)
    }

    /// The category of a chat message.
    pub fn category(&self, text: &str) -> Category {
        self.categories.classify(text)
    }

    /// The emotes of a chat message, in order, repeats included: emoji the lexicon describes and
    /// whitespace-separated tokens (outer punctuation stripped) that are emote names.
    pub fn emotes(&self, text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for token in text.split_whitespace() {
            let stripped = strip_punctuation(token);
            if self.lexicons.emotes.contains_key(stripped) {
                found.push(stripped.to_owned());
                continue;
            }
            found.extend(
                token
                    .chars()
                    .filter(|c| self.lexicons.emoji.contains_key(c))
                    .map(String::from),
            );
        }
        found
    }

    /// Valence of a token if it is an emote (case-sensitive) or a lexicon word (lowercase).
    fn valence_of(&self, word: &str, lower: &str) -> Option<(f64, bool)> {
        if let Some(v) = self.lexicons.emotes.get(word) {
            return Some((*v, true));
        }
        self.lexicons.words.get(lower).map(|v| (*v, false))
    }

    fn in_lexicon(&self, word: &str, lower: &str) -> bool {
        self.valence_of(word, lower).is_some()
    }

    /// Replaces each emoji code point by its description, as VADER does before tokenizing.
    fn describe_emoji(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut prev_space = true;
        for c in text.chars() {
            if let Some(description) = self.lexicons.emoji.get(&c) {
                if !prev_space {
                    out.push(' ');
                }
                out.push_str(description);
                prev_space = false;
            } else {
                out.push(c);
                prev_space = c == ' ';
            }
        }
        out
    }

    /// VADER's `polarity_scores`.
    pub fn polarity_scores(&self, text: &str) -> Scores {
        let described = self.describe_emoji(text);
        let text = described.trim();
        let words: Vec<&str> = text.split_whitespace().map(strip_punctuation).collect();
        let upper = words.iter().filter(|w| is_upper(w)).count();
        let tokens = Tokens {
            lower: words.iter().map(|w| w.to_lowercase()).collect(),
            cap_differential: upper > 0 && upper < words.len(),
            words,
        };
        let n = tokens.words.len();
        let mut sentiments = Vec::with_capacity(n);
        for i in 0..n {
            let lower = tokens.lower[i].as_str();
            let kind_of = i + 1 < n && lower == "kind" && tokens.lower[i + 1] == "of";
            if booster(lower).is_some() || kind_of {
                sentiments.push(0.0);
            } else {
                sentiments.push(self.sentiment_valence(&tokens, i));
            }
        }
        but_check(&tokens.lower, &mut sentiments);
        score_valence(&sentiments, text)
    }

    fn scalar_inc_dec(&self, word: &str, lower: &str, valence: f64, cap_diff: bool) -> f64 {
        let Some(mut scalar) = booster(lower) else {
            return 0.0;
        };
        if valence < 0.0 {
            scalar = -scalar;
        }
        if is_upper(word) && cap_diff {
            scalar += if valence > 0.0 { C_INCR } else { -C_INCR };
        }
        scalar
    }

    fn sentiment_valence(&self, t: &Tokens<'_>, i: usize) -> f64 {
        let (word, lower) = (t.words[i], t.lower[i].as_str());
        let Some((base, is_emote)) = self.valence_of(word, lower) else {
            return 0.0;
        };
        let n = t.words.len();
        let mut valence = base;
        if lower == "no" && i + 1 < n && self.in_lexicon(t.words[i + 1], &t.lower[i + 1]) {
            valence = 0.0;
        }
        if (i > 0 && t.lower[i - 1] == "no")
            || (i > 1 && t.lower[i - 2] == "no")
            || (i > 2 && t.lower[i - 3] == "no" && matches!(t.lower[i - 1].as_str(), "or" | "nor"))
        {
            valence = base * N_SCALAR;
        }
        if !is_emote && is_upper(word) && t.cap_differential {
            valence += if valence > 0.0 { C_INCR } else { -C_INCR };
        }
        for start in 0..3 {
            if i > start && !self.in_lexicon(t.words[i - start - 1], &t.lower[i - start - 1]) {
                let mut s = self.scalar_inc_dec(
                    t.words[i - start - 1],
                    &t.lower[i - start - 1],
                    valence,
                    t.cap_differential,
                );
                if start == 1 {
                    s *= 0.95;
                } else if start == 2 {
                    s *= 0.9;
                }
                valence += s;
                valence = negation_check(valence, &t.lower, start, i);
                if start == 2 {
                    valence = special_idioms_check(valence, &t.lower, i);
                }
            }
        }
        self.least_check(valence, t, i)
    }

    fn least_check(&self, valence: f64, t: &Tokens<'_>, i: usize) -> f64 {
        let previous_is_least =
            |j: usize| t.lower[j] == "least" && !self.in_lexicon(t.words[j], &t.lower[j]);
        if i > 1 && previous_is_least(i - 1) {
            if t.lower[i - 2] != "at" && t.lower[i - 2] != "very" {
                return valence * N_SCALAR;
            }
        } else if i > 0 && previous_is_least(i - 1) {
            return valence * N_SCALAR;
        }
        valence
    }
}

fn negation_check(valence: f64, lower: &[String], start: usize, i: usize) -> f64 {
    let w = |back: usize| lower[i - back].as_str();
    match start {
        0 if is_negation(w(1)) => valence * N_SCALAR,
        1 if w(2) == "never" && matches!(w(1), "so" | "this") => valence * 1.25,
        1 if w(2) == "without" && w(1) == "doubt" => valence,
        1 if is_negation(w(2)) => valence * N_SCALAR,
        // Same precedence as VADER: (never AND so/this two back) OR so/this one back.
        2 if (w(3) == "never" && matches!(w(2), "so" | "this"))
            || matches!(w(1), "so" | "this") =>
        {
            valence * 1.25
        }
        2 if w(3) == "without" && (w(2) == "doubt" || w(1) == "doubt") => valence,
        2 if is_negation(w(3)) => valence * N_SCALAR,
        _ => valence,
    }
}

fn special_idioms_check(mut valence: f64, lower: &[String], i: usize) -> f64 {
    let n = lower.len();
    let one_zero = format!("{} {}", lower[i - 1], lower[i]);
    let two_one_zero = format!("{} {} {}", lower[i - 2], lower[i - 1], lower[i]);
    let two_one = format!("{} {}", lower[i - 2], lower[i - 1]);
    let three_two_one = format!("{} {} {}", lower[i - 3], lower[i - 2], lower[i - 1]);
    let three_two = format!("{} {}", lower[i - 3], lower[i - 2]);
    for seq in [
        &one_zero,
        &two_one_zero,
        &two_one,
        &three_two_one,
        &three_two,
    ] {
        if let Some(v) = special_case(seq) {
            valence = v;
            break;
        }
    }
    if n - 1 > i {
        if let Some(v) = special_case(&format!("{} {}", lower[i], lower[i + 1])) {
            valence = v;
        }
    }
    if n - 1 > i + 1 {
        if let Some(v) = special_case(&format!("{} {} {}", lower[i], lower[i + 1], lower[i + 2])) {
            valence = v;
        }
    }
    for n_gram in [&three_two_one, &three_two, &two_one] {
        if let Some(b) = booster(n_gram) {
            valence += b;
        }
    }
    valence
}

fn but_check(lower: &[String], sentiments: &mut [f64]) {
    if let Some(bi) = lower.iter().position(|w| w == "but") {
        for (si, s) in sentiments.iter_mut().enumerate() {
            if si < bi {
                *s *= 0.5;
            } else if si > bi {
                *s *= 1.5;
            }
        }
    }
}

fn punctuation_emphasis(text: &str) -> f64 {
    let exclamations = text.matches('!').count().min(4) as f64;
    let questions = text.matches('?').count();
    let question_amplifier = match questions {
        0 | 1 => 0.0,
        2 | 3 => questions as f64 * 0.18,
        _ => 0.96,
    };
    exclamations * 0.292 + question_amplifier
}

fn score_valence(sentiments: &[f64], text: &str) -> Scores {
    if sentiments.is_empty() {
        return Scores {
            compound: 0.0,
            positive: 0.0,
            neutral: 0.0,
            negative: 0.0,
        };
    }
    let mut sum: f64 = sentiments.iter().sum();
    let emphasis = punctuation_emphasis(text);
    if sum > 0.0 {
        sum += emphasis;
    } else if sum < 0.0 {
        sum -= emphasis;
    }
    let compound = (sum / (sum * sum + 15.0).sqrt()).clamp(-1.0, 1.0);
    let (mut pos, mut neg, mut neu) = (0.0, 0.0, 0.0);
    for &s in sentiments {
        if s > 0.0 {
            pos += s + 1.0;
        } else if s < 0.0 {
            neg += s - 1.0;
        } else {
            neu += 1.0;
        }
    }
    if pos > neg.abs() {
        pos += emphasis;
    } else if pos < neg.abs() {
        neg -= emphasis;
    }
    let total = pos + neg.abs() + neu;
    Scores {
        compound: round_to(compound, 4),
        positive: round_to((pos / total).abs(), 3),
        neutral: round_to((neu / total).abs(), 3),
        negative: round_to((neg / total).abs(), 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VADER's own example sentences with the compound scores the reference implementation
    /// (vaderSentiment 3.3.2, also in its README) publishes for them.
    const PUBLISHED: &[(&str, f64)] = &[
        ("VADER is smart, handsome, and funny.", 0.8316),
        ("VADER is smart, handsome, and funny!", 0.8439),
        ("VADER is very smart, handsome, and funny.", 0.8545),
        ("VADER is VERY SMART, handsome, and FUNNY.", 0.9227),
        ("VADER is VERY SMART, handsome, and FUNNY!!!", 0.9342),
        (
            "VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!",
            0.9469,
        ),
        ("VADER is not smart, handsome, nor funny.", -0.7424),
        ("The book was good.", 0.4404),
        ("At least it isn't a horrible book.", 0.431),
        ("The book was only kind of good.", 0.3832),
        (
            "The plot was good, but the characters are uncompelling and the dialog is not great.",
            -0.7042,
        ),
        ("Today SUX!", -0.5461),
        ("Today only kinda sux! But I'll get by, lol", 0.5249),
        ("Make sure you :) or :D today!", 0.8633),
        ("Catch utf-8 emoji such as 💘 and 💋 and 😁", 0.875),
        ("Not bad at all", 0.431),
        ("Sentiment analysis has never been good.", -0.3412),
        ("Sentiment analysis has never been this good!", 0.5672),
        ("Most automated sentiment analysis tools are shit.", -0.5574),
        ("With VADER, sentiment analysis is the shit!", 0.6476),
        ("Other sentiment analysis tools can be quite bad.", -0.5849),
        ("On the other hand, VADER is quite bad ass", 0.802),
        ("VADER is such a badass!", 0.4003),
        ("Without a doubt, excellent idea.", 0.7013),
        (
            "Roger Dodger is one of the most compelling variations on this theme.",
            0.2944,
        ),
        (
            "Roger Dodger is at least compelling as a variation on the theme.",
            0.2263,
        ),
        (
            "Roger Dodger is one of the least compelling variations on this theme.",
            -0.1695,
        ),
        ("Not such a badass after all.", -0.2584),
        ("Without a doubt, an excellent idea.", 0.7013),
        ("I love this stream 😂😂", 0.875),
        ("this is so boring 😡", -0.4572),
        ("", 0.0),
    ];

    #[test]
    fn matches_vaders_published_compound_scores() {
        let analyzer = Analyzer::new(Lexicons::builtin());
        for (text, expected) in PUBLISHED {
            let got = analyzer.polarity_scores(text).compound;
            assert!(
                (got - expected).abs() <= 0.01,
                "{text:?}: got {got}, VADER says {expected}"
            );
        }
    }

    #[test]
    fn proportions_match_the_reference_too() {
        let analyzer = Analyzer::new(Lexicons::builtin());
        let scores = analyzer.polarity_scores("VADER is not smart, handsome, nor funny.");
        assert_eq!(
            (scores.negative, scores.neutral, scores.positive),
            (0.646, 0.354, 0.0)
        );
    }

    #[test]
    fn emotes_score_case_sensitively_without_caps_boost() {
        let analyzer = Analyzer::new(Lexicons::builtin());
        let pog = analyzer.polarity_scores("that play PogChamp").compound;
        let sleeper = analyzer
            .polarity_scores("ResidentSleeper ResidentSleeper")
            .compound;
        let lul = analyzer.polarity_scores("he did it LUL").compound;
        let not_emote = analyzer.polarity_scores("pogchamp").compound;
        assert!(pog >= 0.05 && lul >= 0.05, "{pog} {lul}");
        assert!(sleeper <= -0.05, "{sleeper}");
        assert_eq!(not_emote, 0.0);
        // Capitals matter for words but not for emotes: LUL scores like its lexicon value.
        let expected = 1.8 / (1.8f64 * 1.8 + 15.0).sqrt();
        assert!((lul - round_to(expected, 4)).abs() < 1e-9);
        // Negation applies to emotes like any lexicon entry.
        assert!(analyzer.polarity_scores("not PogChamp").compound < 0.0);
    }

    #[test]
    fn emoji_are_scored_through_their_descriptions() {
        let analyzer = Analyzer::new(Lexicons::builtin());
        assert!(analyzer.polarity_scores("😍").compound >= 0.05);
        assert!(analyzer.polarity_scores("😭").compound <= -0.05);
    }
}
