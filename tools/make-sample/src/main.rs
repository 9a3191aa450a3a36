//! Generates the embedded sample under `data/sample/`: a latin-1 CSV in the Kaggle
//! "Movie Genre from its Poster" layout and synthetic JPEG posters whose pixels carry genre signal.
//!
//! Real posters cannot be redistributed. Here each genre owns a palette colour and a motif
//! (stripes, circles, grid, bands, noise, ...); a poster mixes the motifs of its genres over a
//! background blended from their colours, with random placement, strength and noise, so genres
//! overlap and the task is learnable but not trivial. Genre frequencies and co-occurrences follow
//! the real data roughly. A few deliberately bad rows exercise every "skipped" path.
//!
//! Usage: `cargo run --release -p make-sample -- [OUT_DIR] [MOVIES]` (defaults: data/sample 1400).

#![allow(clippy::print_stdout)] // a command-line tool: stdout is its output

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use image::{ImageEncoder, Rgb, RgbImage};

const WIDTH: u32 = 92;
const HEIGHT: u32 = 136;

/// (genre, share of movies in the real data, colour, motif)
const GENRES: &[(&str, f64, [u8; 3], Motif)] = &[
    ("Drama", 0.48, [40, 60, 120], Motif::Gradient),
    ("Comedy", 0.33, [250, 210, 40], Motif::Circles),
    ("Romance", 0.15, [240, 110, 160], Motif::Hearts),
    ("Action", 0.14, [240, 120, 20], Motif::Diagonal),
    ("Crime", 0.13, [60, 60, 60], Motif::Bars),
    ("Thriller", 0.12, [120, 20, 30], Motif::Frame),
    ("Adventure", 0.10, [30, 140, 70], Motif::Mountains),
    ("Horror", 0.08, [150, 0, 0], Motif::Drips),
    ("Documentary", 0.07, [150, 150, 140], Motif::Blocks),
    ("Mystery", 0.06, [70, 30, 110], Motif::Fog),
    ("Family", 0.06, [120, 200, 250], Motif::Dots),
    ("Biography", 0.06, [180, 150, 100], Motif::Portrait),
    ("Fantasy", 0.055, [150, 80, 220], Motif::Stars),
    ("Sci-Fi", 0.05, [0, 220, 220], Motif::Grid),
    ("Animation", 0.045, [255, 60, 200], Motif::Checker),
    ("History", 0.035, [130, 100, 50], Motif::Bands),
    ("Music", 0.035, [250, 250, 250], Motif::Waves),
    ("War", 0.03, [90, 100, 40], Motif::Noise),
    ("Sport", 0.025, [20, 90, 220], Motif::Rings),
    ("Musical", 0.02, [255, 180, 90], Motif::Waves),
    ("Western", 0.02, [170, 90, 40], Motif::Bands),
    ("Short", 0.015, [200, 200, 60], Motif::Dots),
    ("Film-Noir", 0.01, [20, 20, 20], Motif::Bars),
    ("News", 0.005, [200, 30, 30], Motif::Blocks),
];

/// Pairs that appear together more often than chance in the real data.
const AFFINITY: &[(&str, &str)] = &[
    ("Drama", "Romance"),
    ("Crime", "Thriller"),
    ("Crime", "Drama"),
    ("Action", "Adventure"),
    ("Action", "Thriller"),
    ("Animation", "Family"),
    ("Animation", "Comedy"),
    ("Comedy", "Romance"),
    ("Horror", "Thriller"),
    ("Mystery", "Thriller"),
    ("Biography", "Drama"),
    ("History", "Drama"),
    ("Fantasy", "Adventure"),
    ("Sci-Fi", "Action"),
    ("War", "Drama"),
    ("Music", "Drama"),
    ("Sport", "Drama"),
    ("Family", "Comedy"),
];

#[derive(Clone, Copy)]
enum Motif {
    Gradient,
    Circles,
    Hearts,
    Diagonal,
    Bars,
    Frame,
    Mountains,
    Drips,
    Blocks,
    Fog,
    Dots,
    Portrait,
    Stars,
    Grid,
    Checker,
    Bands,
    Waves,
    Noise,
    Rings,
}

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

fn draw_genres(rng: &mut Rng) -> Vec<usize> {
    let count = match rng.unit() {
        u if u < 0.33 => 1,
        u if u < 0.70 => 2,
        _ => 3,
    };
    let mut chosen: Vec<usize> = Vec::new();
    while chosen.len() < count {
        let weights: Vec<f64> = GENRES
            .iter()
            .enumerate()
            .map(|(i, (name, share, _, _))| {
                if chosen.contains(&i) {
                    return 0.0;
                }
                let boost = chosen
                    .iter()
                    .filter(|&&c| {
                        AFFINITY.iter().any(|(a, b)| {
                            (*a == GENRES[c].0 && b == name) || (*b == GENRES[c].0 && a == name)
                        })
                    })
                    .count();
                share * (1.0 + 4.0 * boost as f64)
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let mut u = rng.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if u < *w {
                chosen.push(i);
                break;
            }
            u -= w;
        }
    }
    chosen
}

fn blend(a: [u8; 3], b: [u8; 3], t: f64) -> [u8; 3] {
    let mix = |x: u8, y: u8| {
        (x as f64 * (1.0 - t) + y as f64 * t)
            .round()
            .clamp(0.0, 255.0) as u8
    };
    [mix(a[0], b[0]), mix(a[1], b[1]), mix(a[2], b[2])]
}

fn paint(img: &mut RgbImage, x: i64, y: i64, colour: [u8; 3], alpha: f64) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        let p = img.get_pixel_mut(x as u32, y as u32);
        p.0 = blend(p.0, colour, alpha);
    }
}

fn motif(img: &mut RgbImage, m: Motif, colour: [u8; 3], strength: f64, rng: &mut Rng) {
    let (w, h) = (WIDTH as i64, HEIGHT as i64);
    let ox = rng.range(0, 20);
    let oy = rng.range(0, 20);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = ((x + ox) as f64, (y + oy) as f64);
            let on = match m {
                Motif::Gradient => (y as f64 / h as f64) > 0.45,
                Motif::Circles => ((fx % 24.0 - 12.0).powi(2) + (fy % 24.0 - 12.0).powi(2)) < 49.0,
                Motif::Hearts => {
                    let (cx, cy) = (fx % 30.0 - 15.0, fy % 30.0 - 15.0);
                    (cx * cx + (cy - cx.abs() * 0.8).powi(2)) < 60.0
                }
                Motif::Diagonal => ((fx + fy) as i64 / 7) % 2 == 0,
                Motif::Bars => (x + ox) % 12 < 3,
                Motif::Frame => x < 8 || y < 8 || x >= w - 8 || y >= h - 8,
                Motif::Mountains => y as f64 > h as f64 * 0.6 - 18.0 * ((fx / 14.0).sin()).abs(),
                Motif::Drips => {
                    (x + ox) % 9 < 2
                        && (y as f64) < (h as f64) * (0.3 + 0.5 * ((fx * 1.7).sin()).abs())
                }
                Motif::Blocks => ((x + ox) / 20 + (y + oy) / 20) % 3 == 0 && (x + ox) % 20 > 3,
                Motif::Fog => ((fx / 9.0).sin() + (fy / 13.0).cos()) > 0.9,
                Motif::Dots => (x + ox) % 8 < 2 && (y + oy) % 8 < 2,
                Motif::Portrait => {
                    ((x - w / 2).pow(2) + (y - h / 3).pow(2)) < 300
                        || (y > h / 2 && (x - w / 2).abs() < 24)
                }
                Motif::Stars => rng.next().is_multiple_of(40),
                Motif::Grid => (x + ox) % 10 == 0 || (y + oy) % 10 == 0,
                Motif::Checker => ((x + ox) / 10 + (y + oy) / 10) % 2 == 0,
                Motif::Bands => ((y + oy) / 10) % 2 == 0,
                Motif::Waves => ((fy + 6.0 * (fx / 8.0).sin()) as i64 / 6) % 3 == 0,
                Motif::Noise => rng.next().is_multiple_of(3),
                Motif::Rings => {
                    let r = (((x - w / 2).pow(2) + (y - h / 2).pow(2)) as f64).sqrt();
                    (r as i64 / 5) % 2 == 0
                }
            };
            if on {
                paint(img, x, y, colour, strength);
            }
        }
    }
}

fn poster(genres: &[usize], rng: &mut Rng) -> RgbImage {
    let mut background = GENRES[genres[0]].2;
    for &g in &genres[1..] {
        background = blend(background, GENRES[g].2, 0.35);
    }
    // Random tint so colour alone does not give the genre away.
    let tint = [
        rng.range(0, 255) as u8,
        rng.range(0, 255) as u8,
        rng.range(0, 255) as u8,
    ];
    background = blend(background, tint, 0.45);
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb(background));
    for (rank, &g) in genres.iter().enumerate() {
        let strength = (0.75 - 0.15 * rank as f64) * (0.6 + 0.4 * rng.unit());
        motif(&mut img, GENRES[g].3, GENRES[g].2, strength, rng);
    }
    // A title block and sensor noise, as on real posters.
    let title_y = rng.range(5, HEIGHT as i64 - 25);
    for y in title_y..title_y + 10 {
        for x in 10..WIDTH as i64 - 10 {
            if !rng.next().is_multiple_of(3) {
                paint(&mut img, x, y, [235, 235, 235], 0.8);
            }
        }
    }
    for p in img.pixels_mut() {
        for c in &mut p.0 {
            let noise = rng.range(-10, 10);
            *c = (*c as i64 + noise).clamp(0, 255) as u8;
        }
    }
    img
}

const WORDS: &[&str] = &[
    "Night", "River", "Last", "City", "Shadow", "Summer", "Secret", "Blood", "Heart", "Road",
    "Dream", "Winter", "Iron", "Silent", "Lost", "Golden", "Storm", "Garden", "Ghost", "King",
    "Queen", "Star", "Fire", "Glass", "Wild", "Broken", "Paper", "Empire", "Ocean", "Stranger",
    "Café", "Amélie", "Señor", "Über", "Garçon", "Niño", "Déjà", "Crème", "Noël", "Fiancée",
];

fn title(rng: &mut Rng) -> String {
    let n = rng.range(1, 3);
    let words: Vec<&str> = (0..n).map(|_| *rng.pick(WORDS)).collect();
    let mut t = words.join(" ");
    if rng.unit() < 0.15 {
        t = format!("{t}, {}", rng.pick(WORDS));
    }
    if rng.unit() < 0.2 {
        t = format!("The {t}");
    }
    t
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn encode_jpeg(img: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80).write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(bytes)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "data/sample".into()));
    let movies: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1400);
    let posters = out.join("posters");
    std::fs::create_dir_all(&posters)
        .with_context(|| format!("creating `{}`", posters.display()))?;
    let mut rng = Rng(20_240_601);
    let mut csv = String::from("imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n");
    let mut ids = Vec::new();
    for i in 0..movies {
        let id = 100_000 + i as i64 * 37 + rng.range(0, 30);
        ids.push(id);
        let genres = draw_genres(&mut rng);
        let year = if rng.unit() < 0.8 {
            rng.range(2000, 2017)
        } else {
            rng.range(1975, 1999)
        };
        let score = format!("{:.1}", 3.0 + 6.0 * rng.unit());
        let genre_text: Vec<&str> = genres.iter().map(|&g| GENRES[g].0).collect();
        let file = format!("posters/{id:07}.jpg");
        std::fs::write(out.join(&file), encode_jpeg(&poster(&genres, &mut rng))?)?;
        let _ = writeln!(
            csv,
            "{id},http://www.imdb.com/title/tt{id:07},{},{score},{},{file}",
            csv_field(&format!("{} ({year})", title(&mut rng))),
            genre_text.join("|")
        );
    }
    // Deliberately bad rows: every "skipped" path of ingest, download and filter.
    let good = |rng: &mut Rng| {
        let g = draw_genres(rng);
        g.iter().map(|&g| GENRES[g].0).collect::<Vec<_>>().join("|")
    };
    let mut bad = String::new();
    let base = 9_000_000;
    for k in 0..3 {
        let _ = writeln!(
            bad,
            "{},http://www.imdb.com/title/tt{0},Missing Poster {k} (2010),6.1,{},",
            base + k,
            good(&mut rng)
        );
        let _ = writeln!(
            bad,
            "{},http://www.imdb.com/title/tt{0},No Genre {k} (2011),5.0,,posters/{0:07}.jpg",
            base + 10 + k
        );
        let id = base + 20 + k;
        let _ = writeln!(
            bad,
            "{id},http://www.imdb.com/title/tt{id},Undated Title {k},7.0,{},posters/{id:07}.jpg",
            good(&mut rng)
        );
        let jpeg = encode_jpeg(&poster(&[0], &mut rng))?;
        std::fs::write(out.join(format!("posters/{id:07}.jpg")), &jpeg)?;
        let id = base + 30 + k;
        let _ = writeln!(
            bad,
            "{id},http://www.imdb.com/title/tt{id},Broken Poster {k} (2012),6.6,{},posters/{id:07}.jpg",
            good(&mut rng)
        );
        std::fs::write(
            out.join(format!("posters/{id:07}.jpg")),
            &jpeg[..jpeg.len() / 3],
        )?;
    }
    let id = base + 40;
    let _ = writeln!(
        bad,
        "{id},http://www.imdb.com/title/tt{id},Not An Image (2013),5.5,Drama,posters/{id:07}.jpg"
    );
    std::fs::write(
        out.join(format!("posters/{id:07}.jpg")),
        "<html><body>404 poster not found</body></html>",
    )?;
    let _ = writeln!(
        bad,
        "{},http://www.imdb.com/title/tt{0},Vanished Poster (2014),5.5,Comedy,posters/does-not-exist.jpg",
        base + 41
    );
    let _ = writeln!(
        bad,
        "{},http://www.imdb.com/title/tt{0},Escaping Poster (2014),5.5,Comedy,../../etc/passwd",
        base + 42
    );
    let _ = writeln!(
        bad,
        "{},http://www.imdb.com/title/tt{0},Duplicate Id (2015),5.5,Drama,posters/{0:07}.jpg",
        ids[5]
    );
    let _ = writeln!(
        bad,
        "not-a-number,http://www.imdb.com/title/x,Bad Id (2015),5.5,Drama,posters/x.jpg"
    );
    let _ = writeln!(
        bad,
        "{},http://www.imdb.com/title/tt{0},\"<script>alert('escaped?')</script> & Friends\",,Drama|Comedy,posters/{1:07}.jpg",
        base + 43,
        ids[7]
    );
    csv.push_str(&bad);
    // The real Kaggle file is latin-1; so is the sample.
    let latin1: Vec<u8> = csv
        .chars()
        .map(|c| u8::try_from(u32::from(c)).context("a character outside latin-1"))
        .collect::<Result<_>>()?;
    std::fs::write(out.join("movies.csv"), latin1)?;
    println!(
        "wrote {} movies (+ bad rows) to `{}`",
        movies,
        out.display()
    );
    Ok(())
}
