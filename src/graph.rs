//! `pipeline dag`: the plan as text for a person, as Graphviz DOT, or as a Mermaid flowchart.
//!
//! Stages are boxes, workspace files are notes; an edge carries the input role it fills, so the
//! drawing says what flows where, as `dvc dag` does.

use clap::ValueEnum;

use pipeline_engine::plan::Plan;

/// What `pipeline dag --format` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DagFormat {
    /// One line per stage in dependency order, with what it reads.
    Text,
    /// Graphviz: `pipeline dag --format dot | dot -Tsvg > dag.svg`.
    Dot,
    /// A Mermaid flowchart, for a ```mermaid block in Markdown.
    Mermaid,
}

/// The plan drawn in `format`, one string ending in a newline.
pub fn render(plan: &Plan, format: DagFormat) -> String {
    match format {
        DagFormat::Text => text(plan),
        DagFormat::Dot => dot(plan),
        DagFormat::Mermaid => mermaid(plan),
    }
}

fn text(plan: &Plan) -> String {
    let width = plan.stages.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for stage in &plan.stages {
        let inputs: Vec<String> = stage
            .inputs
            .iter()
            .map(|(role, up)| format!("{up} ({role})"))
            .chain(stage.files.values().map(|p| format!("`{p}`")))
            .collect();
        let from = if inputs.is_empty() {
            String::new()
        } else {
            format!(" <- {}", inputs.join(", "))
        };
        out.push_str(&format!(
            "{:width$}  [{}] {}{from}\n",
            stage.name,
            stage.stage.info().kind,
            stage.stage.info().describe
        ));
    }
    out
}

/// A DOT double-quoted string: backslashes and quotes escaped, newlines as `\n`.
fn dot_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn dot(plan: &Plan) -> String {
    let mut out = String::from(
        "digraph pipeline {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n",
    );
    let mut files = std::collections::BTreeSet::new();
    for stage in &plan.stages {
        out.push_str(&format!(
            "  {} [label={}];\n",
            dot_string(&stage.name),
            dot_string(&format!("{}\n[{}]", stage.name, stage.stage.info().kind))
        ));
        files.extend(stage.files.values().cloned());
    }
    for file in &files {
        out.push_str(&format!(
            "  {} [shape=note, style=\"\", label={}];\n",
            dot_string(&format!("file:{file}")),
            dot_string(file)
        ));
    }
    for stage in &plan.stages {
        for (role, up) in &stage.inputs {
            out.push_str(&format!(
                "  {} -> {} [label={}];\n",
                dot_string(up),
                dot_string(&stage.name),
                dot_string(role)
            ));
        }
        for (role, file) in &stage.files {
            out.push_str(&format!(
                "  {} -> {} [label={}, style=dashed];\n",
                dot_string(&format!("file:{file}")),
                dot_string(&stage.name),
                dot_string(role)
            ));
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid label text inside `"..."`: quotes and the characters Mermaid reads as markup become
/// its `#code;` entities.
fn mermaid_label(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '#' => out.push_str("#35;"),
            '|' => out.push_str("#124;"),
            c => out.push(c),
        }
    }
    out
}

fn mermaid(plan: &Plan) -> String {
    // Ids are positions: stage names may hold characters Mermaid ids cannot.
    let id = |name: &str| {
        plan.stages
            .iter()
            .position(|s| s.name == name)
            .map(|i| format!("s{i}"))
            .unwrap_or_else(|| "unknown".into())
    };
    let mut out = String::from("flowchart LR\n");
    let mut files: Vec<&String> = Vec::new();
    for (i, stage) in plan.stages.iter().enumerate() {
        out.push_str(&format!(
            "  s{i}[\"{}<br/><small>{}</small>\"]\n",
            mermaid_label(&stage.name),
            mermaid_label(stage.stage.info().kind)
        ));
        for file in stage.files.values() {
            if !files.contains(&file) {
                files.push(file);
            }
        }
    }
    for (i, file) in files.iter().enumerate() {
        out.push_str(&format!("  f{i}[/\"{}\"/]\n", mermaid_label(file)));
    }
    for stage in &plan.stages {
        for (role, up) in &stage.inputs {
            out.push_str(&format!(
                "  {} -->|{}| {}\n",
                id(up),
                mermaid_label(role),
                id(&stage.name)
            ));
        }
        for (role, file) in &stage.files {
            let f = files.iter().position(|x| *x == file).unwrap_or(0);
            out.push_str(&format!(
                "  f{f} -.->|{}| {}\n",
                mermaid_label(role),
                id(&stage.name)
            ));
        }
    }
    out
}
