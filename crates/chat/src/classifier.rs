//! A text classifier trained from labelled examples: TF-IDF vectors compared by cosine
//! similarity with each label's centroid and with its nearest example.
//!
//! A message becomes features: its words, lower-cased and roughly stemmed (stop words left
//! out), and the character trigrams of those stems, so a typo or another form of a word still
//! shares most of its features. Each feature is weighted by TF-IDF over the training examples
//! (log-scaled count times inverse document frequency), and each vector has unit length. A
//! label's score is the mean of two similarities (0 to 1): to its centroid (the mean of its
//! examples, unit length again), which rewards what the examples share, and to its nearest
//! example, which keeps a label with varied examples from being diluted by their average. The
//! best label wins, with its score as the confidence a threshold is set against. With a few
//! examples per label this did better on the held-out messages than either alone (63 % with
//! the centroid only, 91 % with both; `cargo test -p chat --test accuracy -- --nocapture`).

use std::collections::HashMap;

/// A sparse vector: (feature, weight), sorted by feature.
type Vector = Vec<(usize, f32)>;

#[derive(Debug, Clone)]
pub struct Classifier {
    features: HashMap<String, usize>,
    idf: Vec<f32>,
    /// Each label with its centroid.
    centroids: Vec<(String, Vector)>,
    /// Each example's vector, with the index of its label.
    examples: Vec<(usize, Vector)>,
}

/// The label a text is closest to, and how close (cosine similarity, 0 to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict<'a> {
    pub label: &'a str,
    pub score: f32,
}

const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "i", "im", "i'm", "me", "my", "we", "our", "you", "your", "it", "its", "is",
    "are", "am", "was", "be", "been", "to", "of", "in", "on", "at", "for", "and", "or", "so", "do",
    "does", "did", "this", "that", "there", "please", "hi", "hello", "hey", "thanks", "thank",
    "just", "would", "could", "like", "can", "with", "about", "have", "has", "some",
];

/// A word's rough stem: common English endings taken off longer words.
fn stem(word: &str) -> &str {
    for suffix in ["ing", "ed", "es", "ly", "s"] {
        if word.len() > suffix.len() + 3 {
            if let Some(stem) = word.strip_suffix(suffix) {
                return stem;
            }
        }
    }
    word
}

/// A text's features: `w:` stems and `c:` character trigrams of each stem (with its edges).
fn features(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut out = Vec::new();
    for word in lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty() && !STOP_WORDS.contains(w))
    {
        let stem = stem(word);
        out.push(format!("w:{stem}"));
        let padded: Vec<char> = format!(" {stem} ").chars().collect();
        out.extend(
            padded
                .windows(3)
                .map(|t| format!("c:{}", t.iter().collect::<String>())),
        );
    }
    out
}

fn normalize(mut v: Vector) -> Vector {
    let norm = v.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|(_, w)| *w /= norm);
    }
    v
}

fn dot(a: &Vector, b: &Vector) -> f32 {
    let (mut i, mut j, mut sum) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                sum += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    sum
}

impl Classifier {
    /// Trains on `(label, example)` pairs; labels keep the order they first appear in.
    pub fn train<'a>(examples: impl IntoIterator<Item = (&'a str, &'a str)>) -> Classifier {
        let examples: Vec<(&str, Vec<String>)> = examples
            .into_iter()
            .map(|(label, text)| (label, features(text)))
            .collect();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut document_frequency: Vec<f32> = Vec::new();
        for (_, feats) in &examples {
            let mut seen: Vec<usize> = feats
                .iter()
                .map(|f| {
                    let next = index.len();
                    *index.entry(f.clone()).or_insert(next)
                })
                .collect();
            seen.sort_unstable();
            seen.dedup();
            document_frequency.resize(index.len(), 0.0);
            seen.into_iter().for_each(|f| document_frequency[f] += 1.0);
        }
        let documents = examples.len() as f32;
        let idf = document_frequency
            .iter()
            .map(|df| ((1.0 + documents) / (1.0 + df)).ln() + 1.0)
            .collect();
        let mut classifier = Classifier {
            features: index,
            idf,
            centroids: Vec::new(),
            examples: Vec::new(),
        };
        let mut sums: Vec<(String, HashMap<usize, f32>)> = Vec::new();
        for (label, feats) in &examples {
            let vector = classifier.vector(feats);
            let at = match sums.iter().position(|(l, _)| l == label) {
                Some(at) => at,
                None => {
                    sums.push(((*label).to_owned(), HashMap::new()));
                    sums.len() - 1
                }
            };
            for &(f, w) in &vector {
                *sums[at].1.entry(f).or_default() += w;
            }
            classifier.examples.push((at, vector));
        }
        classifier.centroids = sums
            .into_iter()
            .map(|(label, sum)| {
                let mut v: Vector = sum.into_iter().collect();
                v.sort_unstable_by_key(|(f, _)| *f);
                (label, normalize(v))
            })
            .collect();
        classifier
    }

    fn vector(&self, feats: &[String]) -> Vector {
        let mut counts: HashMap<usize, f32> = HashMap::new();
        for f in feats {
            if let Some(&i) = self.features.get(f) {
                *counts.entry(i).or_default() += 1.0;
            }
        }
        let mut v: Vector = counts
            .into_iter()
            .map(|(f, n)| (f, (1.0 + n.ln()) * self.idf[f]))
            .collect();
        v.sort_unstable_by_key(|(f, _)| *f);
        normalize(v)
    }

    /// The label `text` is closest to; `None` when it shares nothing with any example.
    pub fn classify(&self, text: &str) -> Option<Verdict<'_>> {
        let v = self.vector(&features(text));
        let mut nearest = vec![0.0f32; self.centroids.len()];
        for (label, example) in &self.examples {
            nearest[*label] = nearest[*label].max(dot(&v, example));
        }
        self.centroids
            .iter()
            .zip(nearest)
            .map(|((label, c), near)| Verdict {
                label,
                score: (dot(&v, c) + near) / 2.0,
            })
            .filter(|v| v.score > 0.0)
            .max_by(|a, b| a.score.total_cmp(&b.score))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trained() -> Classifier {
        Classifier::train([
            ("billing", "I was charged twice on my invoice"),
            ("billing", "my bill is wrong"),
            ("billing", "refund the extra payment"),
            ("hours", "when are you open"),
            ("hours", "what are your opening hours"),
            ("hours", "are you open on sunday"),
        ])
    }

    #[test]
    fn a_new_wording_goes_to_the_closest_label() {
        let c = trained();
        assert_eq!(
            c.classify("why is my invoice so high").unwrap().label,
            "billing"
        );
        assert_eq!(c.classify("open saturday?").unwrap().label, "hours");
    }

    #[test]
    fn a_typo_still_shares_most_features() {
        let c = trained();
        assert_eq!(c.classify("invoise charged").unwrap().label, "billing");
    }

    #[test]
    fn text_with_nothing_in_common_has_no_label_and_unrelated_text_a_low_score() {
        let c = trained();
        assert_eq!(c.classify("zzz qqq"), None);
        assert_eq!(c.classify(""), None);
        let exact = c.classify("what are your opening hours").unwrap().score;
        let loose = c
            .classify("the weather is nice today")
            .map_or(0.0, |v| v.score);
        assert!(exact > 0.6 && loose < 0.3, "{exact} {loose}");
    }

    #[test]
    fn stop_words_alone_say_nothing() {
        assert!(features("I would like to have the").is_empty());
    }
}
