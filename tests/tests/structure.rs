//! The shape ARCHITECTURE.md promises, checked on the sources themselves:
//! - no module imports one that imports it back (no circle in any crate's module graph);
//! - no source file of a crate (`tmpa-*/src`) runs over 700 lines.
//!
//! The graph is read with `syn` from every path a module names (`use` trees and paths in
//! code): `crate::a::b::X`, `super::X`, `self::X`, and a child's name. A name that a
//! module's facade (`lib.rs`, `mod.rs`) re-exports with `pub use child::X` is followed to
//! the child that defines it. Edges between a module and its own ancestors are not
//! counted (a facade re-exports its children; a child names its parent's re-exports), nor
//! is test-only code (`#[cfg(test)]` items).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Longest source file allowed, in lines.
const LINES_MAX: usize = 700;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The crates' source directories: `tmpa-*/src`.
fn crate_sources() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(workspace())
        .expect("list the workspace")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("tmpa-"))
                && p.join("src").is_dir()
        })
        .map(|p| p.join("src"))
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 8, "the crates: {dirs:?}");
    dirs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("list") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A module's path in its crate (`["fs", "moves"]`; the crate root is `[]`), from its
/// file; `None` for a binary's own root (`main.rs`, `bin/*.rs`).
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).expect("below src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_str().expect("UTF-8").to_owned())
        .collect();
    if parts.first().is_some_and(|p| p == "bin") || parts == ["main.rs"] {
        return None;
    }
    let last = parts.pop().expect("a file");
    match last.as_str() {
        "lib.rs" | "mod.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_owned()),
    }
    Some(parts)
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// Every path a module's non-test code names, as segments (`use` trees flattened), and
/// the names it re-exports (`pub use` / `pub(crate) use`) with the paths they come from.
#[derive(Default)]
struct Names {
    paths: Vec<Vec<String>>,
    reexports: Vec<(String, Vec<String>)>,
}

fn flatten(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut full = prefix.clone();
            full.push(n.ident.to_string());
            out.push((n.ident.to_string(), full));
        }
        syn::UseTree::Rename(r) => {
            let mut full = prefix.clone();
            full.push(r.ident.to_string());
            out.push((r.rename.to_string(), full));
        }
        syn::UseTree::Glob(_) => out.push(("*".into(), prefix.clone())),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten(t, prefix, out);
            }
        }
    }
}

impl<'ast> Visit<'ast> for Names {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !is_test_only(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut flat = Vec::new();
        flatten(&u.tree, &mut Vec::new(), &mut flat);
        let public = !matches!(u.vis, syn::Visibility::Inherited);
        for (name, path) in flat {
            if public {
                self.reexports.push((name, path.clone()));
            }
            self.paths.push(path);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.paths
            .push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }
}

/// One crate's modules and what each names.
struct Crate {
    /// Module path → its names.
    modules: BTreeMap<Vec<String>, Names>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        let mut modules = BTreeMap::new();
        for f in files {
            let Some(module) = module_of(src, &f) else {
                continue;
            };
            let text = fs::read_to_string(&f).expect("read");
            let file = syn::parse_file(&text)
                .unwrap_or_else(|e| panic!("{}: does not parse: {e}", f.display()));
            let mut names = Names::default();
            names.visit_file(&file);
            modules.insert(module, names);
        }
        Crate { modules }
    }

    /// An absolute path (`crate`, `super`, `self` or a child's name first) named in
    /// `module`, made absolute; `None` for an outside crate's.
    fn absolute(&self, module: &[String], path: &[String]) -> Option<Vec<String>> {
        let (first, rest) = path.split_first()?;
        let mut base: Vec<String> = match first.as_str() {
            "crate" => Vec::new(),
            "self" => module.to_vec(),
            "super" => {
                let mut b = module.to_vec();
                let mut rest = rest;
                b.pop()?;
                while rest.first().is_some_and(|s| s == "super") {
                    b.pop()?;
                    rest = &rest[1..];
                }
                b.extend(rest.iter().cloned());
                return Some(b);
            }
            child => {
                let mut c = module.to_vec();
                c.push(child.to_owned());
                if !self.modules.contains_key(&c) {
                    return None;
                }
                c.extend(rest.iter().cloned());
                return Some(c);
            }
        };
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The module that defines what `path` (absolute) names: the longest module prefix,
    /// then followed through its `pub use` re-exports of the next segment.
    fn target(&self, path: &[String], depth: usize) -> Option<Vec<String>> {
        let n = (0..=path.len())
            .rev()
            .find(|&n| self.modules.contains_key(&path[..n]))?;
        let module = path[..n].to_vec();
        if depth < 8
            && let Some(next) = path.get(n)
        {
            let names = &self.modules[&module];
            for (name, from) in &names.reexports {
                if name == next
                    && let Some(abs) = self.absolute(&module, from)
                    && abs.starts_with(&module)
                    && abs.len() > module.len()
                {
                    return self.target(&abs, depth + 1).or(Some(module));
                }
            }
        }
        Some(module)
    }

    /// Module → the modules it imports, neither its ancestor nor its descendant, each
    /// with the first path that names it.
    fn edges(&self) -> Edges {
        let mut edges = Edges::new();
        for (module, names) in &self.modules {
            let to = edges.entry(module.clone()).or_default();
            for p in &names.paths {
                let Some(abs) = self.absolute(module, p) else {
                    continue;
                };
                let Some(t) = self.target(&abs, 0) else {
                    continue;
                };
                if !t.starts_with(module) && !module.starts_with(&t) {
                    to.entry(t).or_insert_with(|| p.join("::"));
                }
            }
        }
        edges
    }
}

/// Module → module it imports → the first path that names it.
type Edges = BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>>;

/// The circles of a graph: each strongly connected component of more than one module.
fn circles(edges: &Edges) -> Vec<Vec<String>> {
    // Reachability by DFS from each node (the graphs have a few dozen modules).
    let reach = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for t in edges.get(&m).into_iter().flat_map(BTreeMap::keys) {
                if seen.insert(t.clone()) {
                    stack.push(t.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<_, _> = edges.keys().map(|m| (m.clone(), reach(m))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for m in edges.keys() {
        if done.contains(m) || !reached[m].contains(m) {
            continue;
        }
        let scc: Vec<String> = edges
            .keys()
            .filter(|o| reached[m].contains(*o) && reached[*o].contains(m))
            .inspect(|o| {
                done.insert((*o).clone());
            })
            .map(|o| o.join("::"))
            .collect();
        out.push(scc);
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut found = Vec::new();
    for src in crate_sources() {
        let krate = Crate::read(&src);
        let name = src.parent().and_then(Path::file_name).expect("crate");
        let edges = krate.edges();
        for c in circles(&edges) {
            found.push(format!("{}: {}", name.to_string_lossy(), c.join(" <-> ")));
            for (from, to) in &edges {
                let from_name = from.join("::");
                if !c.contains(&from_name) {
                    continue;
                }
                for (t, path) in to {
                    if c.contains(&t.join("::")) {
                        found.push(format!("    {from_name} -> {} ({path})", t.join("::")));
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

/// The checker sees a circle when there is one: two sibling modules naming each other,
/// one through its parent's re-export.
#[test]
fn the_circle_check_sees_a_circle() {
    let names = |paths: &[&str], reexports: &[(&str, &str)]| Names {
        paths: paths
            .iter()
            .map(|p| p.split("::").map(str::to_owned).collect())
            .collect(),
        reexports: reexports
            .iter()
            .map(|(n, p)| ((*n).to_owned(), p.split("::").map(str::to_owned).collect()))
            .collect(),
    };
    let m = |p: &str| -> Vec<String> {
        if p.is_empty() {
            Vec::new()
        } else {
            p.split("::").map(str::to_owned).collect()
        }
    };
    let mut modules = BTreeMap::new();
    modules.insert(m(""), names(&[], &[("Thing", "b::Thing")]));
    modules.insert(m("a"), names(&["crate::Thing"], &[]));
    modules.insert(m("b"), names(&["super::a::f", "std::fs::File"], &[]));
    modules.insert(m("c"), names(&["crate::a::f"], &[]));
    let krate = Crate { modules };
    assert_eq!(
        circles(&krate.edges()),
        vec![vec!["a".to_owned(), "b".into()]]
    );
}

#[test]
fn no_source_file_is_over_700_lines() {
    let mut long = Vec::new();
    for src in crate_sources() {
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for f in files {
            let lines = fs::read_to_string(&f).expect("read").lines().count();
            if lines > LINES_MAX {
                long.push(format!("{}: {lines} lines", f.display()));
            }
        }
    }
    long.sort();
    assert!(
        long.is_empty(),
        "files over {LINES_MAX} lines:\n{}",
        long.join("\n")
    );
}
