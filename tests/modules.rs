//! No import circle between the modules of any crate: reads every `crate::` and `super::` path
//! (and a parent's paths into its own child modules) in every workspace member's `src/`, and
//! fails naming each circle with the lines that close it. Two modules that import each other
//! are one job split in two, or two jobs tangled; either way neither can be read alone.
//!
//! It reads the code, as `tests/dependencies.rs` does (the members and files from `workspace/`): no compiling, no syntax tree. `#[cfg(test)]
//! mod tests` blocks at the end of a file are left out (a test module reads its parent freely).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

mod workspace;

use workspace::{REPO, members, rust_files};

/// The module path of a file below `src` (`""` for the crate root, `report::charts`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let parts = match parts.as_slice() {
        [only] if only == "lib" || only == "main" => &[][..],
        [rest @ .., last] if last == "mod" => rest,
        all => all,
    };
    parts.join("::")
}

/// The code of a file without comments and without a trailing `#[cfg(test)] mod tests` block.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths a use tree or path expression names, starting at byte `at` of `text` (just after
/// `crate::`): `a::b::C`, or `{a::B, c::{D, e}}` expanded.
fn paths_at(text: &str, at: usize) -> Vec<Vec<String>> {
    let bytes = text.as_bytes();
    let mut pos = at;
    let mut prefix = Vec::new();
    loop {
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos < bytes.len() && bytes[pos] == b'{' {
            // A group: split at top-level commas and expand each member.
            let mut depth = 0;
            let mut start = pos + 1;
            let mut out = Vec::new();
            for (i, c) in text[pos..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        for tail in paths_at(&text[..pos + i], start) {
                            out.push([prefix.clone(), tail].concat());
                        }
                        start = pos + i + 1;
                        if c == '}' {
                            return out;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            return out;
        }
        let ident: String = text[pos..].chars().take_while(|&c| is_ident(c)).collect();
        if ident.is_empty() {
            return vec![prefix];
        }
        pos += ident.len();
        prefix.push(ident);
        if text[pos..].starts_with("::") {
            pos += 2;
        } else {
            return vec![prefix];
        }
    }
}

/// What a crate's modules re-export with `pub use module::Name` (name -> module): a path
/// through the re-export names the module that defines the item, not the one that re-exports it.
type ReExports = BTreeMap<String, String>;

/// The `pub use` re-exports in `module`'s text, as `module::Name` -> defining module.
fn re_exports(module: &str, text: &str, modules: &BTreeSet<String>) -> ReExports {
    let mut found = ReExports::new();
    let own: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    for (at, _) in text.match_indices("pub use ") {
        for path in paths_at(text, at + "pub use ".len()) {
            let absolute = match path.first().map(String::as_str) {
                Some("crate") => path[1..].to_vec(),
                Some("self") => [own.clone(), path[1..].to_vec()].concat(),
                _ => [own.clone(), path.clone()].concat(),
            };
            let target = resolve(modules, &ReExports::new(), &absolute);
            if let (Some(name), false) = (path.last(), target.is_empty()) {
                let at = [own.clone(), vec![name.clone()]].concat().join("::");
                found.insert(at, target);
            }
        }
    }
    found
}

/// The module a path names: its longest prefix that is a module of the crate, or, when the
/// path names an item re-exported there, the module that defines it.
fn resolve(modules: &BTreeSet<String>, re_exported: &ReExports, path: &[String]) -> String {
    for n in (0..=path.len()).rev() {
        let candidate = path[..n].join("::");
        if modules.contains(&candidate) {
            if let Some(name) = path.get(n) {
                let item = if candidate.is_empty() {
                    name.clone()
                } else {
                    format!("{candidate}::{name}")
                };
                if let Some(defining) = re_exported.get(&item) {
                    return defining.clone();
                }
            }
            return candidate;
        }
    }
    String::new()
}

/// A module's imports: target module -> the first line that names it.
fn imports(
    module: &str,
    text: &str,
    modules: &BTreeSet<String>,
    re_exported: &ReExports,
) -> BTreeMap<String, (usize, String)> {
    let mut found = BTreeMap::new();
    let mut note = |target: String, offset: usize| {
        if target != module {
            let line = text[..offset].matches('\n').count() + 1;
            let shown = text[offset..]
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            found.entry(target).or_insert((line, shown));
        }
    };
    // `crate::...` anywhere.
    for (at, _) in text.match_indices("crate::") {
        if at > 0 && is_ident(text[..at].chars().next_back().unwrap()) {
            continue; // `$crate::` or `pipeline_crate::`
        }
        for path in paths_at(text, at + "crate::".len()) {
            note(resolve(modules, re_exported, &path), at);
        }
    }
    // `super::...`: relative to the parent module.
    let parent: Vec<String> = match module.rsplit_once("::") {
        Some((parent, _)) => parent.split("::").map(String::from).collect(),
        None => Vec::new(),
    };
    for (at, _) in text.match_indices("super::") {
        if at > 0 && is_ident(text[..at].chars().next_back().unwrap()) {
            continue;
        }
        for path in paths_at(text, at + "super::".len()) {
            note(
                resolve(modules, re_exported, &[parent.clone(), path].concat()),
                at,
            );
        }
    }
    // A parent's paths into its own children (`use fit::Trained;`, `head_task::train_head(`).
    let own: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(String::from).collect()
    };
    for child in modules.iter().filter_map(|m| {
        let rest = if module.is_empty() {
            Some(m.as_str())
        } else {
            m.strip_prefix(&format!("{module}::"))
        }?;
        (!rest.is_empty() && !rest.contains("::")).then(|| rest.to_string())
    }) {
        for (at, _) in text.match_indices(&format!("{child}::")) {
            if at > 0 && {
                let before = text[..at].chars().next_back().unwrap();
                is_ident(before) || before == ':'
            } {
                continue;
            }
            // A re-export is the crate's face, not a use of the child.
            let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
            if text[line_start..].trim_start().starts_with("pub use ")
                || text[..at].rfind("pub use ") > text[..at].rfind(';')
            {
                continue;
            }
            let path = [own.clone(), vec![child.clone()]].concat();
            let target = path.join("::");
            let line = text[..at].matches('\n').count() + 1;
            let shown = text[at..].lines().next().unwrap_or("").trim().to_string();
            found.entry(target).or_insert((line, shown));
        }
    }
    found
}

/// Every circle of the graph, each once, as the modules along it.
fn circles(graph: &BTreeMap<String, BTreeMap<String, (usize, String)>>) -> Vec<Vec<String>> {
    let mut found: Vec<Vec<String>> = Vec::new();
    for start in graph.keys() {
        // Depth-first from `start` over modules after it in order, so each circle is found from
        // its smallest member only.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flat_map(|edges| edges.keys()) {
                if next == start {
                    found.push(path.clone());
                } else if next > start && !path.contains(next) && path.len() < 8 {
                    stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
                }
            }
        }
    }
    found
}

#[test]
fn no_crate_has_an_import_circle_between_its_modules() {
    let mut problems = Vec::new();
    let mut crates = 0;
    for src in members()
        .iter()
        .map(|m| m.join("src"))
        .filter(|s| s.is_dir())
    {
        crates += 1;
        let files = rust_files(&src);
        let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
        let texts: BTreeMap<String, String> = files
            .iter()
            .map(|f| {
                (
                    module_of(&src, f),
                    code(&std::fs::read_to_string(f).unwrap()),
                )
            })
            .collect();
        let re_exported: ReExports = texts
            .iter()
            .flat_map(|(module, text)| re_exports(module, text, &modules))
            .collect();
        let mut graph = BTreeMap::new();
        let mut file_of = BTreeMap::new();
        for file in &files {
            let module = module_of(&src, file);
            let text = &texts[&module];
            graph.insert(
                module.clone(),
                imports(&module, text, &modules, &re_exported),
            );
            file_of.insert(
                module,
                file.strip_prefix(REPO).unwrap().display().to_string(),
            );
        }
        for circle in circles(&graph) {
            let mut lines = vec![format!("circle in `{}`:", src.parent().unwrap().display())];
            for (i, from) in circle.iter().enumerate() {
                let to = &circle[(i + 1) % circle.len()];
                let (line, shown) = &graph[from][to];
                lines.push(format!("  {}:{line} -> `{to}`: {shown}", file_of[from]));
            }
            problems.push(lines.join("\n"));
        }
    }
    assert!(crates >= 10, "found only {crates} crates");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The check itself finds a circle, through `crate::`, `super::` and a parent's own children.
#[test]
fn a_circle_is_found_whichever_way_it_is_written() {
    let modules: BTreeSet<String> = ["", "fit", "checkpoint", "report", "report::charts"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut graph = BTreeMap::new();
    let re_exported = re_exports("", "pub use checkpoint::Saved;\n", &modules);
    assert_eq!(re_exported["Saved"], "checkpoint");
    for (module, text) in [
        (
            "",
            "mod fit;\nuse fit::Trained;\npub use checkpoint::Saved;\n",
        ),
        ("fit", "use crate::{checkpoint::{self, save}, Train};\n"),
        ("checkpoint", "use crate::fit::History;\n"),
        ("report", "mod charts;\npub fn f() { charts::draw() }\n"),
        ("report::charts", "use super::Report;\n"),
    ] {
        graph.insert(
            module.to_string(),
            imports(module, &code(text), &modules, &re_exported),
        );
    }
    let found = circles(&graph);
    // Through a re-export the edge goes to the defining module: no circle with the root.
    assert!(graph["checkpoint"].contains_key("fit"));
    assert!(!graph[""].contains_key("checkpoint"), "{graph:?}");
    for circle in [
        vec!["", "fit"],
        vec!["checkpoint", "fit"],
        vec!["report", "report::charts"],
    ] {
        let circle: Vec<String> = circle.into_iter().map(String::from).collect();
        assert!(found.contains(&circle), "{circle:?} not in {found:?}");
    }
}
