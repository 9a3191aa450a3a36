//! Reading the movie CSV: decoding (UTF-8 or Latin-1), checking each record, and the movies table
//! with every unusable row counted and listed by reason.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use pipeline_api::{StageError, read_file};
use stage_shards::movies::Movie;

use crate::genres;
use crate::params::Encoding;
use crate::summary::IngestSummary;

/// Columns the CSV must have.
pub const REQUIRED_COLUMNS: [&str; 6] = [
    "imdbId",
    "Imdb Link",
    "Title",
    "IMDB Score",
    "Genre",
    "Poster",
];

/// Decodes the CSV bytes as asked.
pub fn decode(bytes: Vec<u8>, encoding: Encoding) -> Result<(String, &'static str), String> {
    match encoding {
        Encoding::Utf8 => String::from_utf8(bytes)
            .map(|s| (s, "utf-8"))
            .map_err(|e| format!("not valid UTF-8 ({e}); try `encoding: latin-1`")),
        Encoding::Latin1 => Ok((bytes.iter().map(|&b| b as char).collect(), "latin-1")),
        Encoding::Auto => match String::from_utf8(bytes) {
            Ok(text) => Ok((text, "utf-8")),
            Err(err) => Ok((
                err.into_bytes().iter().map(|&b| b as char).collect(),
                "latin-1",
            )),
        },
    }
}

/// The release year at the end of a title: `Toy Story (1995)` -> 1995.
pub fn year_from_title(title: &str) -> Option<i32> {
    let trimmed = title.trim_end();
    let open = trimmed.rfind('(')?;
    let inner = trimmed[open + 1..].strip_suffix(')')?;
    (inner.len() == 4 && inner.bytes().all(|b| b.is_ascii_digit()))
        .then(|| inner.parse().ok())
        .flatten()
}

/// Reads and cleans the CSV at `path`.
///
/// Parsed record by record with the `csv` crate (RFC 4180 quoting, CRLF or LF, quoted newlines),
/// so every dropped row can be named by its line in the file. A record with the wrong number of
/// fields (an unquoted comma in a title, a cut line) is dropped as a whole: truncating it would
/// shift a title into the score, genre and poster columns.
pub fn ingest(path: &Path, encoding: Encoding) -> Result<(Vec<Movie>, IngestSummary), StageError> {
    let (text, used) = decode(read_file(path)?, encoding)
        .map_err(|e| StageError::invalid(format!("`{}`: {e}", path.display())))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let columns = Columns::read(&mut reader, path)?;
    let mut summary = IngestSummary::new(used);
    let mut seen = HashSet::new();
    let mut movies: Vec<Movie> = Vec::new();
    // The `csv` crate's own line count is one short after a CRLF (it ends the record at `\r`), so
    // lines come from byte offsets instead.
    let newlines: Vec<usize> = newline_offsets(text.as_bytes());
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        let read = reader.read_record(&mut record);
        if let Ok(false) = read {
            break;
        }
        // A blank line is no record (the `csv` crate skips them); count what is left.
        summary.rows_read += 1;
        let row = summary.rows_read;
        if let Err(err) = read {
            summary.drop_row(row, line, "", format!("unreadable CSV record: {err}"));
            continue;
        }
        let line = record
            .position()
            .map_or(line, |p| line_of(&newlines, text.as_bytes(), p.byte()));
        match columns.movie(&record, &seen) {
            Ok(movie) => {
                seen.insert(movie.id);
                summary.without_year += usize::from(movie.year.is_none());
                summary.without_score += usize::from(movie.score.is_none());
                movies.push(movie);
            }
            Err((id, reason)) => summary.drop_row(row, line, &id, reason),
        }
    }
    summary.rows_kept = movies.len();
    summary.merged_spellings =
        genres::merge_case_variants(movies.iter_mut().map(|m| &mut m.genres));
    Ok((movies, summary))
}

/// Where each required column is, and how many fields a record has.
struct Columns {
    index: BTreeMap<&'static str, usize>,
    width: usize,
}

impl Columns {
    /// Reads the header, naming the file and what it lacks.
    fn read(reader: &mut csv::Reader<&[u8]>, path: &Path) -> Result<Self, StageError> {
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| {
                StageError::invalid(format!("`{}`: unreadable header: {e}", path.display()))
            })?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let mut index = BTreeMap::new();
        for name in REQUIRED_COLUMNS {
            let Some(at) = header.iter().position(|h| h == name) else {
                return Err(StageError::invalid(format!(
                    "`{}` line 1 has no column `{name}`; expected the Kaggle layout `{}` but found `{}`",
                    path.display(),
                    REQUIRED_COLUMNS.join(","),
                    header.join(",")
                )));
            };
            index.insert(name, at);
        }
        Ok(Self {
            index,
            width: header.len(),
        })
    }

    /// The movie of one record, or its id as written and why it is dropped.
    fn movie(
        &self,
        record: &csv::StringRecord,
        seen: &HashSet<i64>,
    ) -> Result<Movie, (String, String)> {
        let field = |name: &str| -> Option<&str> {
            record
                .get(self.index[name])
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let id_text = field("imdbId").unwrap_or_default().to_string();
        if record.len() != self.width {
            let reason = format!(
                "wrong number of fields: {} ({} expected; an unquoted comma?)",
                record.len(),
                self.width
            );
            return Err((id_text, reason));
        }
        let genre_list = genres::parse(field("Genre").unwrap_or(""));
        let checked = match parse_id(&id_text) {
            None => Err("bad imdbId"),
            Some(id) if seen.contains(&id) => Err("duplicate imdbId"),
            Some(_) if genre_list.is_empty() => Err("no genre"),
            Some(id) => field("Poster")
                .map(|poster| (id, poster))
                .ok_or("no poster"),
        };
        let (id, poster) = checked.map_err(|reason| (id_text, reason.to_string()))?;
        let title = field("Title").unwrap_or_default().to_string();
        Ok(Movie {
            id,
            year: year_from_title(&title),
            title,
            score: field("IMDB Score").and_then(|s| s.parse::<f64>().ok()),
            genres: genre_list,
            poster: poster.to_string(),
        })
    }
}

/// Offsets of every `\n`.
fn newline_offsets(bytes: &[u8]) -> Vec<usize> {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
        .collect()
}

/// The 1-based line of the record starting at byte `offset` (skipping the `\n` of a CRLF the
/// previous record left behind).
fn line_of(newlines: &[usize], bytes: &[u8], offset: u64) -> u64 {
    let mut offset = offset as usize;
    if bytes.get(offset) == Some(&b'\n') {
        offset += 1;
    }
    (newlines.partition_point(|&n| n < offset) + 1) as u64
}

fn parse_id(text: &str) -> Option<i64> {
    text.trim().parse::<i64>().ok().filter(|id| *id > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_comes_from_the_end_of_the_title() {
        assert_eq!(year_from_title("Toy Story (1995)"), Some(1995));
        assert_eq!(year_from_title("Se7en (1995) "), Some(1995));
        assert_eq!(year_from_title("No Year Movie"), None);
        assert_eq!(year_from_title("Odd (19a5)"), None);
    }

    #[test]
    fn latin1_is_detected_and_decoded() {
        let bytes = b"Am\xe9lie (2001)".to_vec();
        let (text, used) = decode(bytes, Encoding::Auto).unwrap();
        assert_eq!(text, "Amélie (2001)");
        assert_eq!(used, "latin-1");
        assert!(decode(b"Am\xe9lie".to_vec(), Encoding::Utf8).is_err());
    }

    #[test]
    fn bad_rows_are_counted_by_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(
            &path,
            b"imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n\
              1,l,\"Crouching Tiger, Hidden Dragon (2000)\",7.9,Action|Drama,p1.jpg\n\
              1,l,Duplicate (2000),5,Drama,p1.jpg\n\
              x,l,Bad Id (2000),5,Drama,p.jpg\n\
              3,l,No Genre (2001),5,,p3.jpg\n\
              4,l,No Poster (2001),,Comedy,\n\
              5,l,Caf\xe9 (2003),,Comedy,p5.jpg\n",
        )
        .unwrap();
        let (movies, summary) = ingest(&path, Encoding::Auto).unwrap();
        assert_eq!(summary.rows_read, 6);
        assert_eq!(summary.rows_kept, 2);
        assert_eq!(summary.dropped["duplicate imdbId"], 1);
        assert_eq!(summary.dropped["bad imdbId"], 1);
        assert_eq!(summary.dropped["no genre"], 1);
        assert_eq!(summary.dropped["no poster"], 1);
        assert_eq!(movies[0].title, "Crouching Tiger, Hidden Dragon (2000)");
        assert_eq!(movies[1].title, "Café (2003)");
        assert_eq!(summary.without_score, 1);
    }

    #[test]
    fn repeated_invisible_and_case_variant_genres_are_one_genre_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(
            &path,
            "imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n\
             1,l,A (2000),5,Western|Western|Western,p1.jpg\n\
             2,l,B (2000),5,Dra\u{200B}ma|Sci-Fi,p2.jpg\n\
             3,l,C (2000),5,sci-fi|Drama|SCI-FI,p3.jpg\n\
             4,l,D (2000),5,Sci-Fi,p4.jpg\n\
             5,l,E (2000),5,\u{200B},p5.jpg\n",
        )
        .unwrap();
        let (movies, summary) = ingest(&path, Encoding::Auto).unwrap();
        let genres: Vec<&[String]> = movies.iter().map(|m| m.genres.as_slice()).collect();
        assert_eq!(
            genres,
            [
                &["Western"][..],
                &["Drama", "Sci-Fi"],
                &["Sci-Fi", "Drama"],
                &["Sci-Fi"]
            ]
        );
        assert_eq!(summary.dropped["no genre"], 1, "an invisible genre is none");
        assert_eq!(summary.merged_spellings.len(), 1);
        assert_eq!(
            summary.merged_spellings[0].describe(),
            "`SCI-FI` (1) and `Sci-Fi` (2) and `sci-fi` (1) as `Sci-Fi`"
        );
    }

    #[test]
    fn every_quirk_of_the_real_csv_has_its_outcome() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/movie-genre-quirks.csv");
        let (movies, summary) = ingest(&fixture, Encoding::Auto).unwrap();
        assert_eq!(summary.encoding, "latin-1");
        assert_eq!(summary.rows_read, 15, "the blank line is not a record");
        assert_eq!(summary.rows_kept, 9);
        let dropped: Vec<(&str, usize)> = summary
            .dropped
            .iter()
            .map(|(r, n)| (r.as_str(), *n))
            .collect();
        assert_eq!(
            dropped,
            [
                ("bad imdbId", 1),
                ("duplicate imdbId", 1),
                ("no genre", 1),
                ("no poster", 1),
                ("wrong number of fields", 2),
            ]
        );
        let lines: Vec<(u64, &str, &str)> = summary
            .dropped_rows
            .iter()
            .map(|r| (r.line, r.id.as_str(), r.reason.split(':').next().unwrap()))
            .collect();
        assert_eq!(
            lines,
            [
                (4, "114709", "duplicate imdbId"),
                (5, "3", "no genre"),
                (6, "4", "no poster"),
                (13, "10", "wrong number of fields"),
                (14, "11", "wrong number of fields"),
                (15, "tt12", "bad imdbId"),
            ]
        );
        let titles: Vec<&str> = movies.iter().map(|m| m.title.as_str()).collect();
        assert_eq!(titles[1], "Amélie (2001)");
        assert!(titles.contains(&"Crouching Tiger, Hidden Dragon (2000)"));
        assert!(titles.contains(&"The \"Quoted\" One (2004)"));
        assert!(titles.contains(&"A Title\r\nOn Two Lines (2005)"));
        assert!(titles.contains(&"Café Society (2016)"));
        assert_eq!(summary.without_year, 1);
        assert_eq!(summary.without_score, 1);
        assert!(
            movies.iter().any(|m| m.genres == ["Sci-Fi", "Drama"]),
            "{movies:?}"
        );
        let ids: Vec<i64> = movies.iter().map(|m| m.id).collect();
        assert_eq!(ids, [114709, 211915, 5, 6, 7, 8, 9, 13, 14]);
    }
}
