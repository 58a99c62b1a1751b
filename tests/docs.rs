//! The documentation cannot rot silently: every "§N" / "§N.M" reference in the sources, tests,
//! benches and docs (docs/SPEC.md's own cross-references included) names a heading of
//! docs/SPEC.md, the only document the project cites by section; docs/PARITY.md is the
//! rendering of the tolerance table (`tests/common/tolerances.rs`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Section numbers of docs/SPEC.md's headings: `## 4. Losses` → "4", `### 9.2 TIW …` → "9.2".
fn spec_sections() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("docs/SPEC.md")).expect("docs/SPEC.md");
    text.lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| {
            let number = l.trim_start_matches('#').split_whitespace().next()?;
            let number = number.trim_end_matches('.');
            let ok = !number.is_empty()
                && number
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            ok.then(|| number.to_string())
        })
        .collect()
}

/// Every `§N[.M…]` in `text` with its line number (a trailing full stop is punctuation).
fn references(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for (pos, _) in line.match_indices('§') {
            let rest = &line[pos + '§'.len_utf8()..];
            let number: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let number = number.trim_end_matches('.');
            if !number.is_empty() {
                out.push((i + 1, number.to_string()));
            }
        }
    }
    out
}

/// Text files that may cite the spec: sources, tests, benches, scripts and docs; fixtures
/// (outputs of the official code) and build outputs are not ours to check.
fn cited_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let skip = [
        "target",
        "fixtures",
        ".git",
        "__pycache__",
        "demo-out",
        "bench-out",
        ".venv",
    ];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !skip.contains(&name.as_str()) {
                cited_files(&path, out);
            }
        } else if [".rs", ".py", ".md", ".sh", ".toml"]
            .iter()
            .any(|ext| name.ends_with(ext))
            || name == "Makefile"
        {
            out.push(path);
        }
    }
}

#[test]
fn spec_has_the_numbered_sections_the_code_cites() {
    let sections = spec_sections();
    for s in ["0", "1.1", "2.5", "4", "5.1", "7", "9.2", "9.11", "10"] {
        assert!(sections.contains(s), "docs/SPEC.md lacks §{s}: {sections:?}");
    }
}

#[test]
fn every_spec_reference_names_an_existing_section() {
    let sections = spec_sections();
    let mut files = Vec::new();
    for top in [
        "src",
        "tests",
        "benches",
        "converters",
        "models",
        "scripts",
        "docs",
    ] {
        cited_files(&root().join(top), &mut files);
    }
    files.push(root().join("README.md"));
    files.push(root().join("Makefile"));
    let (mut checked, mut broken) = (0, Vec::new());
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (line, number) in references(&text) {
            checked += 1;
            if !sections.contains(&number) {
                let rel = file.strip_prefix(root()).unwrap_or(file);
                broken.push(format!("{}:{line}: §{number}", rel.display()));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} references found: is the scan looking in the right place?"
    );
    assert!(
        broken.is_empty(),
        "references to sections docs/SPEC.md lacks:\n{}",
        broken.join("\n")
    );
}

#[test]
fn references_are_parsed_with_their_subsections() {
    let refs = references("see SPEC §9.3. and §2.1–§2.5, §4");
    let numbers: Vec<_> = refs.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(numbers, ["9.3", "2.1", "2.5", "4"]);
}

/// docs/PARITY.md is generated from the tolerance table; `TIW_BLESS=1` rewrites it.
#[test]
fn parity_md_is_generated_from_the_tolerance_table() {
    let path = root().join("docs/PARITY.md");
    let want = common::tolerances::parity_markdown();
    if std::env::var_os("TIW_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/PARITY.md is stale: run `TIW_BLESS=1 cargo test --test docs` and commit it"
    );
}

#[test]
fn tolerance_table_is_well_formed() {
    let table = common::tolerances::TABLE;
    let mut names = BTreeSet::new();
    for t in table {
        assert!(t.name.starts_with("TOL_"), "{}", t.name);
        assert!(names.insert(t.name), "{} twice", t.name);
        // the loosest bound is the DG sampler's 2nd-order end-to-end one (5e-2): its random
        // discriminators amplify f32 rounding ~10× per guided step (fixtures README §10)
        assert!(t.value > 0.0 && t.value <= 5e-2, "{}: {}", t.name, t.value);
        assert!(
            t.doc.trim().len() > 20,
            "{}: document what it bounds and why",
            t.name
        );
    }
}

/// The tolerance table is the only place that defines parity tolerances.
#[test]
fn no_tolerance_constants_outside_the_table() {
    let mut files = Vec::new();
    for top in ["src", "tests", "benches", "converters", "models"] {
        cited_files(&root().join(top), &mut files);
    }
    let table = root().join("tests/common/tolerances.rs");
    let mut found = Vec::new();
    for file in files
        .iter()
        .filter(|f| **f != table && f.extension().is_some_and(|e| e == "rs"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, line) in text.lines().enumerate() {
            let l = line.trim_start();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            if l.starts_with("const TOL") || l.starts_with("static TOL") {
                found.push(format!("{}:{}", file.display(), i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "tolerances outside tests/common/tolerances.rs: {found:?}"
    );
}
