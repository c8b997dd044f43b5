//! The shipped category lexicon against hand-labelled chat messages: precision and recall per
//! category on the development set (the lexicon was written against it), on the author's second
//! set (written by the lexicon's author in the same sitting: not independent) and on a blind set
//! (written by someone who had not seen the lexicon, never tuned on: the estimate to believe),
//! each with a floor. `cargo test -p crowdpulse-dataflow --test categories -- --nocapture
//! --test-threads=1` prints the tables README quotes.

use crowdpulse_dataflow::category::{Category, Classifier};

/// (label, message) pairs of a labelled file; every label names a category.
fn labelled(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (label, message) = line.split_once('\t').expect("label<TAB>message");
            assert!(
                Category::ALL.iter().any(|c| c.name() == label),
                "{label:?} is no category"
            );
            (label, message)
        })
        .collect()
}

/// Per category: (precision, recall, labelled count).
fn scores(classifier: &Classifier, set: &[(&str, &str)]) -> Vec<(Category, f64, f64, usize)> {
    Category::ALL
        .into_iter()
        .map(|category| {
            let (mut true_positive, mut predicted, mut actual) = (0, 0, 0);
            for (label, message) in set {
                let is = *label == category.name();
                let said = classifier.classify(message) == category;
                actual += usize::from(is);
                predicted += usize::from(said);
                true_positive += usize::from(is && said);
            }
            let ratio = |n: usize, d: usize| if d == 0 { 1.0 } else { n as f64 / d as f64 };
            (
                category,
                ratio(true_positive, predicted),
                ratio(true_positive, actual),
                actual,
            )
        })
        .collect()
}

fn check(name: &str, text: &str, floor: f64) {
    let classifier = Classifier::builtin();
    let set = labelled(text);
    assert!(set.len() >= 100, "{name}: {} messages", set.len());
    let mut misses = Vec::new();
    for (label, message) in &set {
        let got = classifier.classify(message).name();
        if got != *label {
            misses.push(format!("  {label} -> {got}: {message}"));
        }
    }
    println!("{name}: {} messages", set.len());
    println!("| category | precision | recall | messages |");
    let table = scores(&classifier, &set);
    for (category, precision, recall, count) in &table {
        println!(
            "| {} | {precision:.2} | {recall:.2} | {count} |",
            category.name()
        );
    }
    println!("misclassified:\n{}", misses.join("\n"));
    for (category, precision, recall, _) in table {
        assert!(
            precision >= floor && recall >= floor,
            "{name}: {} precision {precision:.2} recall {recall:.2} below {floor}",
            category.name()
        );
    }
}

#[test]
fn development_set() {
    check("development", include_str!("data/categories_dev.tsv"), 0.9);
}

#[test]
fn authors_second_set() {
    check(
        "author's second set",
        include_str!("data/categories_holdout.tsv"),
        0.75,
    );
}

#[test]
fn blind_set() {
    check(
        "blind",
        // A regression floor below the measured 0.49 (other's precision): the blind set shows
        // what the shipped rules miss, and is not tuned on.
        include_str!("data/categories_blind.tsv"),
        0.45,
    );
}
