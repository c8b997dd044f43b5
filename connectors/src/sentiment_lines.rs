//! `crowdpulse sentiment`: one JSON object of scores and the category per input line.

use std::io::{BufRead, Write};

use crowdpulse_dataflow::sentiment::{Analyzer, Label, COMPOUND_SCALE};
use serde_json::json;

/// Scores every line of `input` and writes
/// `{"text","compound","positive","neutral","negative","label","category"}` lines to `output`. Invalid UTF-8 is replaced, never fatal.
pub fn score_lines(
    analyzer: &Analyzer,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<u64> {
    let mut count = 0;
    for line in input.split(b'\n') {
        let line = line?;
        let text = String::from_utf8_lossy(&line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        let scores = analyzer.polarity_scores(text);
        let label = Label::of_scaled((scores.compound * COMPOUND_SCALE as f64).round() as i64);
        let value = json!({
            "text": text,
            "compound": scores.compound,
            "positive": scores.positive,
            "neutral": scores.neutral,
            "negative": scores.negative,
            "label": label.name(),
            "category": analyzer.category(text).name(),
        });
        writeln!(output, "{value}")?;
        count += 1;
    }
    output.flush()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowdpulse_dataflow::sentiment::Lexicons;

    #[test]
    fn one_object_per_line() {
        let analyzer = Analyzer::new(Lexicons::builtin());
        let mut out = Vec::new();
        let n = score_lines(
            &analyzer,
            &b"The book was good.\r\nthis is so boring\n\xff\nwhy?\n"[..],
            &mut out,
        )
        .unwrap();
        assert_eq!(n, 4);
        let lines: Vec<serde_json::Value> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines[0]["compound"], 0.4404);
        assert_eq!(lines[0]["label"], "positive");
        assert_eq!(lines[0]["text"], "The book was good.");
        assert_eq!(lines[1]["label"], "negative");
        assert_eq!(lines[2]["text"], "\u{fffd}");
        assert_eq!(lines[2]["category"], "other");
        assert_eq!(lines[3]["category"], "question");
    }
}
