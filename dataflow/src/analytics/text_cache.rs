//! What a chat text yields (sentiment, category, and for the summaries its emotes and phrases),
//! remembered per worker by text and bounded in entries and bytes.

use std::sync::Arc;

use crate::category::Category;
use crate::hashing::FastMap;
use crate::sentiment::{Analyzer, COMPOUND_SCALE};
use crate::summary::TextFeatures;

/// Distinct chat texts remembered; chat repeats a lot (emote spam), and reading a text is the
/// most expensive step per message. Cleared when full, which keeps results identical.
const MAX_TEXTS: usize = 100_000;

/// The cached texts and what they yield are bounded in bytes too: distinct long messages would
/// otherwise grow the cache by their size, not their number.
const MAX_BYTES: usize = 4 << 20;

/// What one chat text yields.
#[derive(Debug, Clone)]
pub(crate) struct TextAnalysis {
    /// Compound sentiment score in `COMPOUND_SCALE` units.
    pub compound: i64,
    /// Its category.
    pub category: Category,
    /// Its emotes and phrases, when the summaries want them.
    pub features: Option<Arc<TextFeatures>>,
}

/// What a cached text costs: the text, its slot in the map (the key's header and the value;
/// hashbrown adds a control byte) and its features.
fn entry_bytes(text: &str, analysis: &TextAnalysis) -> usize {
    let slot = size_of::<String>() + size_of::<TextAnalysis>() + 1;
    let features = analysis.features.as_ref().map_or(0, |f| f.heap_bytes());
    text.len() + slot + features
}

/// The cache (see the module doc).
pub(crate) struct TextCache {
    analyzer: Arc<Analyzer>,
    /// Whether texts are read for the summaries too.
    features: bool,
    texts: FastMap<String, TextAnalysis>,
    /// Bytes of the cached texts and their features.
    bytes: usize,
}

impl TextCache {
    /// A cache reading texts with `analyzer`, for the summaries too when `features` is set.
    pub fn new(analyzer: Arc<Analyzer>, features: bool) -> Self {
        Self {
            analyzer,
            features,
            texts: FastMap::default(),
            bytes: 0,
        }
    }

    /// The analyzer it reads with.
    pub fn analyzer(&self) -> Arc<Analyzer> {
        Arc::clone(&self.analyzer)
    }

    /// What `text` yields.
    pub fn analyse(&mut self, text: &str) -> TextAnalysis {
        if let Some(analysis) = self.texts.get(text) {
            return analysis.clone();
        }
        let compound = self.analyzer.polarity_scores(text).compound;
        let analysis = TextAnalysis {
            compound: (compound * COMPOUND_SCALE as f64).round() as i64,
            category: self.analyzer.category(text),
            features: self
                .features
                .then(|| Arc::new(TextFeatures::new(text, self.analyzer.emotes(text)))),
        };
        let bytes = entry_bytes(text, &analysis);
        // A text larger than the whole budget is read every time rather than cached.
        if bytes <= MAX_BYTES {
            if self.texts.len() >= MAX_TEXTS || self.bytes + bytes > MAX_BYTES {
                self.texts.clear();
                self.bytes = 0;
            }
            self.bytes += bytes;
            self.texts.insert(text.to_owned(), analysis.clone());
        }
        analysis
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentiment::Lexicons;

    /// Long distinct chat texts (a flood of unique 10 kB messages) cannot grow the cache past
    /// its byte budget, however many there are, with or without the summaries' features.
    #[test]
    fn the_text_cache_is_bounded_in_bytes() {
        let analyzer = Arc::new(Analyzer::new(Lexicons::builtin()));
        let filler = "word ".repeat(2_000);
        for features in [false, true] {
            let mut cache = TextCache::new(Arc::clone(&analyzer), features);
            for i in 0..600 {
                let analysis = cache.analyse(&format!("{i} {filler} LUL"));
                assert_eq!(analysis.features.is_some(), features);
                let held: usize = cache
                    .texts
                    .iter()
                    .map(|(text, analysis)| entry_bytes(text, analysis))
                    .sum();
                assert!(held <= MAX_BYTES, "{held} bytes cached after {i} texts");
                assert_eq!(held, cache.bytes);
            }
        }
    }

    /// A cached text yields what reading it afresh does.
    #[test]
    fn a_cached_text_yields_what_a_fresh_read_does() {
        let analyzer = Arc::new(Analyzer::new(Lexicons::builtin()));
        let mut cache = TextCache::new(Arc::clone(&analyzer), true);
        let text = "what a play LUL LUL gg wp";
        let first = cache.analyse(text);
        let again = cache.analyse(text);
        assert!(Arc::ptr_eq(
            first.features.as_ref().unwrap(),
            again.features.as_ref().unwrap()
        ));
        let fresh = TextFeatures::new(text, analyzer.emotes(text));
        assert_eq!(*again.features.unwrap(), fresh);
        assert_eq!(fresh.emotes, ["LUL", "LUL"]);
        assert_eq!(
            (again.compound, again.category),
            (first.compound, first.category)
        );
    }
}
