//! Genre names as the CSV spells them, cleaned: a movie's `Genre` field is split on `|`, each name
//! trimmed of whitespace, control characters and zero-width characters (which print as nothing
//! and would make `Drama` two classes), and a genre the field repeats (`Western|Western`) counted
//! once. Names that differ only in case are one genre under the most frequent spelling, and each
//! such merge is reported with both spellings and their counts: never silently two classes.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Characters that print as nothing: zero-width space, non-joiner, joiner, word joiner, BOM.
const INVISIBLE: [char; 5] = ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}'];

/// The genres of one `Genre` field, cleaned, each once, in the order first given.
pub fn parse(field: &str) -> Vec<String> {
    let mut genres: Vec<String> = Vec::new();
    for raw in field.split('|') {
        let name: String = raw
            .chars()
            .filter(|c| !c.is_control() && !INVISIBLE.contains(c))
            .collect::<String>()
            .trim()
            .to_string();
        if !name.is_empty() && !genres.contains(&name) {
            genres.push(name);
        }
    }
    genres
}

/// Spellings of one genre that differ only in case, merged into the most frequent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedSpellings {
    /// The spelling kept.
    pub kept: String,
    /// Every spelling seen (the kept one included) with the movies that used it.
    pub spellings: BTreeMap<String, usize>,
}

impl MergedSpellings {
    /// `genres that differ only in case were merged: Sci-Fi (120) and sci-fi (3) as Sci-Fi`.
    pub fn describe(&self) -> String {
        let spellings: Vec<String> = self
            .spellings
            .iter()
            .map(|(name, n)| format!("`{name}` ({n})"))
            .collect();
        format!("{} as `{}`", spellings.join(" and "), self.kept)
    }
}

/// Rewrites every movie's genres to one spelling per case-insensitive name (the most frequent;
/// ties to the first in byte order), each genre once; returns the merges made.
pub fn merge_case_variants<'a>(
    movies: impl IntoIterator<Item = &'a mut Vec<String>>,
) -> Vec<MergedSpellings> {
    let mut movies: Vec<&'a mut Vec<String>> = movies.into_iter().collect();
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for genres in movies.iter() {
        for genre in genres.iter() {
            *counts
                .entry(genre.to_lowercase())
                .or_default()
                .entry(genre.clone())
                .or_default() += 1;
        }
    }
    let mut canonical: HashMap<String, String> = HashMap::new();
    let mut merged = Vec::new();
    for spellings in counts.into_values() {
        let kept = spellings
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(name, _)| name.clone())
            .expect("a name has a spelling");
        for name in spellings.keys() {
            canonical.insert(name.clone(), kept.clone());
        }
        if spellings.len() > 1 {
            merged.push(MergedSpellings { kept, spellings });
        }
    }
    if !merged.is_empty() {
        for genres in movies.iter_mut() {
            let mut unique: Vec<String> = Vec::with_capacity(genres.len());
            for genre in genres.iter() {
                let name = canonical[genre].clone();
                if !unique.contains(&name) {
                    unique.push(name);
                }
            }
            **genres = unique;
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_genre_counts_once_and_invisible_characters_are_dropped() {
        assert_eq!(parse("Western|Western|Western"), ["Western"]);
        assert_eq!(
            parse(" Drama\u{200B}| Comedy\t|Dra\u{0007}ma|"),
            ["Drama", "Comedy"]
        );
        assert_eq!(parse("\u{FEFF}|\u{200D}"), Vec::<String>::new());
    }

    #[test]
    fn case_variants_become_the_most_frequent_spelling_and_are_reported() {
        let mut movies = vec![
            vec!["Sci-Fi".to_string(), "Drama".to_string()],
            vec!["Sci-Fi".to_string()],
            vec!["sci-fi".to_string(), "SCI-FI".to_string()],
            vec!["Drama".to_string()],
        ];
        let merged = merge_case_variants(&mut movies);
        assert_eq!(movies[2], ["Sci-Fi"], "one genre, once");
        assert_eq!(movies[0], ["Sci-Fi", "Drama"]);
        assert_eq!(merged.len(), 1);
        assert_eq!(
            merged[0].describe(),
            "`SCI-FI` (1) and `Sci-Fi` (2) and `sci-fi` (1) as `Sci-Fi`"
        );
    }
}
