//! Where a poster comes from, as a movie's `poster` column or `pipeline predict` names it: one
//! parser for both, so they agree on what is remote, what is a file and what is refused.

/// A poster source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// An `http://` or `https://` URL (the scheme in any case), as given.
    Http(&'a str),
    /// The path of a `file://` URL (`file:///abs`, `file://localhost/abs`, `file://rel`).
    File(&'a str),
    /// A plain path.
    Path(&'a str),
    /// A URL in another scheme (`ftp`), which nothing fetches.
    Unsupported(&'a str),
}

impl<'a> Source<'a> {
    /// Reads a source, surrounding whitespace trimmed. A `scheme://` prefix makes it a URL when the
    /// scheme is a valid one (a letter, then letters, digits, `+`, `-` or `.`); anything else is a
    /// path.
    pub fn parse(source: &'a str) -> Self {
        let source = source.trim();
        let Some((scheme, rest)) = source.split_once("://") else {
            return Self::Path(source);
        };
        let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid {
            return Self::Path(source);
        }
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => Self::Http(source),
            "file" => Self::File(match rest.strip_prefix("localhost") {
                Some(path) if path.starts_with('/') => path,
                _ => rest,
            }),
            _ => Self::Unsupported(scheme),
        }
    }

    /// Whether it is fetched over the network (and so remembered across runs; local files are
    /// read again every run: cheap, and always current).
    pub fn is_remote(self) -> bool {
        matches!(self, Self::Http(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_told_apart_by_scheme_in_any_case() {
        assert_eq!(
            Source::parse(" http://a/b.jpg "),
            Source::Http("http://a/b.jpg")
        );
        assert_eq!(
            Source::parse("HTTPS://a/b.jpg"),
            Source::Http("HTTPS://a/b.jpg")
        );
        assert_eq!(Source::parse("file:///p/a.jpg"), Source::File("/p/a.jpg"));
        assert_eq!(
            Source::parse("FILE://localhost/p/a.jpg"),
            Source::File("/p/a.jpg")
        );
        assert_eq!(Source::parse("file://a.jpg"), Source::File("a.jpg"));
        assert_eq!(
            Source::parse("posters/a.jpg"),
            Source::Path("posters/a.jpg")
        );
        assert_eq!(Source::parse("ftp://x/y"), Source::Unsupported("ftp"));
        assert_eq!(Source::parse("1a://x"), Source::Path("1a://x"));
        assert!(Source::parse("Http://a").is_remote());
        assert!(!Source::parse("file:///a").is_remote());
    }
}
