//! The text a save writes: the existing file edited so that operators' comments survive
//! `portfwd add` and `portfwd del`, or the config written anew where that cannot be done.
//!
//! - The file on disk is parsed again and its forwards are compared with the new list.
//!   Entries still in the list are left byte for byte where they are (with their own
//!   spelling, e.g. `listen: 8080` + `protocol: udp`, and their comments). An entry whose
//!   listen side stays but whose targets or balancing change (`portfwd drain`, `portfwd del
//!   LISTEN TARGET`) is rewritten in its place, in canonical form: its own lines are replaced
//!   (a comment between its keys goes with them), the comments it owns above and below stay,
//!   and so does its position in the list. Removed entries
//!   lose their lines and their comments: the comment lines directly above the entry (no
//!   blank line in between, not indented past its `-`) and those directly below it indented
//!   past its `-`. A comment separated from an entry by a blank line stays. New entries are
//!   appended after the last entry, in the canonical form `  - listen: "8080/tcp"` /
//!   `    to: "172.17.0.2:3000"`, with the indentation of the existing entries.
//!   A forward with several targets is written with `to:` as a flow list of
//!   `"IP:PORT[*WEIGHT]"`, then `health`, `all_down` and `grace` where they are not their
//!   defaults. `forwards: []` (or an empty `forwards:`) becomes a block list on the first add;
//!   removing the last entry writes `forwards: []`. Everything else in the file (other keys,
//!   their comments, blank lines, CRLF line ends) is untouched.
//! - This line edit applies when `forwards` is a top-level key of a block mapping, its
//!   entries are block list items (`- ` at the start of a line), and nothing but the
//!   forwards changed (`interfaces`, `mode`, `pin_dir`, `max_flows`, `metrics` and
//!   `socket_group` are as in the file, whose lines for them are left as they are). The edited
//!   text is parsed again and must give exactly the new config.
//! - Otherwise (flow-style lists, a changed setting, a file that no longer parses, ...) the
//!   file is regenerated in canonical form, keeping only its leading comment block. The
//!   canonical form has `interfaces`, then `mode`, `pin_dir`, `max_flows`, `metrics` and
//!   `socket_group` only where they differ from their defaults, then `forwards`.
//!
//! In both cases the result parses to the config that was saved, except that the forwards
//! come in file order (kept entries where they were, new ones last; the order of forwards
//! carries no meaning since no two overlap). Saving what was loaded leaves the file
//! unchanged, byte for byte.
//!
//! The line edit ([`edit_in_place`]) goes in steps: what changed ([`Change`]), where the
//! forwards list is in the text ([`Layout`]), how its lines change ([`LineEdit`], made by
//! [`open_null`], [`open_empty_list`] or [`edit_items`]), and the new text
//! ([`LineEdit::apply`]).

use std::{path::Path, time::Duration};

use serde_saphyr::Spanned;

use super::{
    model::Config,
    schema::{Document, Entry, Node, parse_document, parse_str},
};
use crate::{
    health,
    publish::{AllDown, DEFAULT_GRACE, Forward, NamedForward, Pool},
};

/// The text [`save`](super::save) would write for `config`, given the file's current text
/// (`None` for a new file). Does not validate `config`.
pub fn render(existing: Option<&str>, config: &Config) -> String {
    render_inner(existing, config).0
}

/// [`render`], and whether the existing text was edited in place (rather than regenerated).
pub(super) fn render_inner(existing: Option<&str>, config: &Config) -> (String, bool) {
    if let Some(text) = existing
        && let Ok(doc) = parse_document(text, Path::new("<existing>"))
        && let Some(edited) = edit_in_place(text, &doc, config)
        && parse_str(&edited, Path::new("<edited>")).is_ok_and(|c| same_config(&c, config))
    {
        return (edited, true);
    }
    (regenerate(existing, config), false)
}

/// Equal up to the order of the forwards (which does not matter: no two overlap).
fn same_config(a: &Config, b: &Config) -> bool {
    let sorted = |c: &Config| {
        let mut forwards = c.forwards.clone();
        forwards.sort_unstable();
        let mut named = c.named.clone();
        named.sort_unstable();
        (forwards, named)
    };
    same_settings(a, b) && sorted(a) == sorted(b)
}

/// Equal in everything but the forwards.
fn same_settings(a: &Config, b: &Config) -> bool {
    let Config {
        interfaces,
        forwards: _,
        named: _,
        mode,
        pin_dir,
        max_flows,
        metrics,
        socket_group,
        docker,
    } = a;
    *interfaces == b.interfaces
        && *mode == b.mode
        && *pin_dir == b.pin_dir
        && *max_flows == b.max_flows
        && *metrics == b.metrics
        && *socket_group == b.socket_group
        && *docker == b.docker
}

const NEW_FILE_HEADER: &str = "\
# portfwd configuration: host ports published to containers.
# `portfwd add` and `portfwd del` edit the forwards list; comments are kept where possible.
";

/// An entry of the forwards list to write: its listen side, target (an address or a
/// container by name) and allowlist, in canonical form.
struct NewEntry {
    listen: String,
    /// The YAML of `to`: a quoted string, or a flow list of them for a pool.
    to: String,
    allow: Vec<String>,
    /// The lines of a pool's `health`, `all_down` and `grace` (those not at their defaults),
    /// as `key: value`.
    pool: Vec<String>,
}

impl NewEntry {
    fn of(fwd: &Forward) -> NewEntry {
        let (to, pool) = match &fwd.pool {
            None => (format!("\"{}\"", fwd.to), Vec::new()),
            Some(pool) => (quoted_list(&pool.targets), pool_lines(pool)),
        };
        NewEntry {
            listen: fwd.listen.to_string(),
            to,
            allow: fwd.allow.iter().map(|p| p.to_string()).collect(),
            pool,
        }
    }

    fn of_named(n: &NamedForward) -> NewEntry {
        NewEntry {
            listen: n.listen.to_string(),
            to: format!("\"{}\"", n.to),
            allow: n.allow.iter().map(|p| p.to_string()).collect(),
            pool: Vec::new(),
        }
    }

    /// Every forward of `config`: those to addresses, then those to containers by name.
    fn all(config: &Config) -> Vec<NewEntry> {
        let forwards = config.forwards.iter().map(NewEntry::of);
        forwards
            .chain(config.named.iter().map(NewEntry::of_named))
            .collect()
    }
}

/// `["a", "b"]`
fn quoted_list<T: std::fmt::Display>(items: &[T]) -> String {
    let list: Vec<String> = items.iter().map(|p| format!("\"{p}\"")).collect();
    format!("[{}]", list.join(", "))
}

/// A pool's `health`, `all_down` and `grace` as `key: value` lines, each only where it
/// differs from its default (`health: {}` for a TCP check with the default timing).
fn pool_lines(pool: &Pool) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(h) = &pool.health {
        let (p, d) = (&h.params, health::Params::default());
        let mut items = Vec::new();
        let duration = |d: Duration| format!("\"{}\"", humantime::format_duration(d));
        if p.interval != d.interval {
            items.push(format!("interval: {}", duration(p.interval)));
        }
        if p.timeout != d.timeout {
            items.push(format!("timeout: {}", duration(p.timeout)));
        }
        if p.rise != d.rise {
            items.push(format!("rise: {}", p.rise));
        }
        if p.fall != d.fall {
            items.push(format!("fall: {}", p.fall));
        }
        if let health::Check::Http { path } = &h.check {
            items.push(format!("http: {}", yaml_quoted(path)));
        }
        lines.push(if items.is_empty() {
            "health: {}".to_owned()
        } else {
            format!("health: {{ {} }}", items.join(", "))
        });
    }
    if pool.all_down != AllDown::default() {
        lines.push(format!("all_down: {}", pool.all_down));
    }
    if pool.grace != DEFAULT_GRACE {
        lines.push(format!(
            "grace: \"{}\"",
            humantime::format_duration(pool.grace)
        ));
    }
    lines
}

/// One forward in canonical form, as list item lines. `dash` is the indentation of the `-`,
/// `content` the column (0-based) of the keys.
fn forward_lines(fwd: &NewEntry, dash: usize, content: usize, nl: &str) -> String {
    let gap = " ".repeat(content.saturating_sub(dash + 1).max(1));
    let dash = " ".repeat(dash);
    let indent = " ".repeat(dash.len() + 1 + gap.len());
    let mut out = format!(
        "{dash}-{gap}listen: \"{}\"{nl}{indent}to: {}{nl}",
        fwd.listen, fwd.to
    );
    if !fwd.allow.is_empty() {
        out.push_str(&format!("{indent}allow: {}{nl}", quoted_list(&fwd.allow)));
    }
    for line in &fwd.pool {
        out.push_str(&format!("{indent}{line}{nl}"));
    }
    out
}

/// Ends the last line of `out` with `nl` if it has no line end.
fn end_last_line(out: &mut String, nl: &str) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push_str(nl);
    }
}

/// Appends the new entries in canonical form on lines of their own.
fn push_entries(out: &mut String, added: &[NewEntry], dash: usize, content: usize, nl: &str) {
    end_last_line(out, nl);
    added
        .iter()
        .for_each(|f| out.push_str(&forward_lines(f, dash, content, nl)));
}

/// `text` with the forwards changed in place to `new`; `None` when the file's form is not
/// one this handles (see the module documentation).
fn edit_in_place(text: &str, doc: &Document, new: &Config) -> Option<String> {
    if !same_settings(&doc.config, new) {
        return None;
    }
    let change = Change::between(doc, new);
    if change.is_none() {
        return Some(text.to_owned());
    }
    let nl = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let layout = Layout::of(text, doc.root.as_ref());
    if layout.flow_top {
        return None;
    }
    let Some(forwards) = &layout.forwards else {
        // No `forwards` key: append one (the old list was empty, so nothing to remove).
        let mut out = text.to_owned();
        end_last_line(&mut out, nl);
        out.push_str("forwards:");
        out.push_str(nl);
        push_entries(&mut out, &change.added, 2, 4, nl);
        return Some(out);
    };

    let lines = Lines::new(text);
    // `forwards` must be a top-level key at the start of its line.
    let key_line = lines.of(forwards.key_start);
    if lines.starts[key_line] != forwards.key_start {
        return None;
    }
    let edit = match &forwards.value {
        ValueLayout::Null { start, len } if lines.of(*start) == key_line => {
            open_null(&lines, key_line, *start, *len)?
        }
        ValueLayout::Seq { start, items } if items.is_empty() => {
            open_empty_list(&lines, key_line, *start)?
        }
        ValueLayout::Seq { items, .. } => {
            let key_len = forwards.key_end - forwards.key_start;
            edit_items(&lines, key_line, key_len, items, &change, nl)?
        }
        _ => return None,
    };
    Some(edit.apply(&lines, &change.added, nl))
}

/// What saving does to the forwards: which entries of the file stay, which change in place,
/// which are new.
struct Change {
    /// For each forward in the file, in file order: whether it stays as it is.
    kept: Vec<bool>,
    /// For each forward in the file, in file order: what replaces it where it is (a forward
    /// to addresses whose listen side stays and whose targets or balancing change, e.g.
    /// `portfwd drain`).
    replaced: Vec<Option<NewEntry>>,
    /// The forwards to append, in the new config's order (to addresses, then by name).
    added: Vec<NewEntry>,
}

impl Change {
    /// Entries still wanted stay where they are; a changed forward to addresses is rewritten
    /// in its place; the others go; new ones are appended.
    fn between(doc: &Document, new: &Config) -> Change {
        let old = &doc.config;
        let mut fresh: Vec<&Forward> = new
            .forwards
            .iter()
            .filter(|f| !old.forwards.contains(f))
            .collect();
        let (mut kept, mut replaced) = (Vec::new(), Vec::new());
        for e in &doc.entries {
            let (keep, by) = match *e {
                Entry::Forward(i) if new.forwards.contains(&old.forwards[i]) => (true, None),
                Entry::Forward(i) => {
                    let same = fresh
                        .iter()
                        .position(|f| f.listen == old.forwards[i].listen);
                    (false, same.map(|j| NewEntry::of(fresh.remove(j))))
                }
                Entry::Named(i) => (new.named.contains(&old.named[i]), None),
            };
            kept.push(keep);
            replaced.push(by);
        }
        let named = new.named.iter().filter(|n| !old.named.contains(n));
        Change {
            kept,
            replaced,
            added: fresh
                .into_iter()
                .map(NewEntry::of)
                .chain(named.map(NewEntry::of_named))
                .collect(),
        }
    }

    /// Nothing changes: the file stays as it is.
    fn is_none(&self) -> bool {
        self.added.is_empty() && self.kept.iter().all(|k| *k)
    }

    /// Every entry goes and none comes: the list becomes `[]`.
    fn empties_list(&self) -> bool {
        self.added.is_empty()
            && self.kept.iter().all(|k| !k)
            && self.replaced.iter().all(Option::is_none)
    }
}

/// Where the parts of the file that the line edit touches are.
#[derive(Debug, Default)]
struct Layout {
    /// The top level is a flow mapping (`{...}`), which the line edit leaves alone.
    flow_top: bool,
    /// The `forwards` key and its value; `None` without one.
    forwards: Option<ForwardsLayout>,
}

/// Byte positions of the `forwards` key and value.
#[derive(Debug)]
struct ForwardsLayout {
    key_start: usize,
    key_end: usize,
    value: ValueLayout,
}

#[derive(Debug)]
enum ValueLayout {
    /// `forwards:`, `forwards: ~`: the null scalar's bytes.
    Null { start: usize, len: usize },
    /// A list starting at `start`; each item's bytes, from its first to its last character.
    Seq {
        start: usize,
        items: Vec<(usize, usize)>,
    },
    /// Anything else (an error for the parser; never edited).
    Other,
}

impl Layout {
    /// The layout of `text`, whose parsed tree is `root`.
    fn of(text: &str, root: Option<&Spanned<Node>>) -> Layout {
        let Some(root) = root else {
            return Layout::default();
        };
        let Node::Map(entries) = &root.value else {
            return Layout::default();
        };
        let flow_top = byte_span(root)
            .is_none_or(|(start, _)| text.get(start..).is_none_or(|t| t.starts_with('{')));
        let forwards = entries
            .iter()
            .find(|(key, _)| matches!(&key.value, Node::Str(name) if name == "forwards"))
            .and_then(|(key, value)| ForwardsLayout::of(key, value));
        Layout { flow_top, forwards }
    }
}

impl ForwardsLayout {
    fn of(key: &Spanned<Node>, value: &Spanned<Node>) -> Option<ForwardsLayout> {
        let (key_start, key_end) = byte_span(key)?;
        let value = match &value.value {
            Node::Null => {
                let (start, end) = byte_span(value)?;
                ValueLayout::Null {
                    start,
                    len: end - start,
                }
            }
            Node::Seq(items) => ValueLayout::Seq {
                start: byte_span(value)?.0,
                items: items
                    .iter()
                    .map(|item| Some((byte_span(item)?.0, byte_end(item)?)))
                    .collect::<Option<_>>()?,
            },
            _ => ValueLayout::Other,
        };
        Some(ForwardsLayout {
            key_start,
            key_end,
            value,
        })
    }
}

fn byte_span(node: &Spanned<Node>) -> Option<(usize, usize)> {
    let span = node.referenced.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    Some((start, start + len))
}

/// The byte just past the last character of `node` and its descendants.
fn byte_end(node: &Spanned<Node>) -> Option<usize> {
    let own = byte_span(node)?.1;
    let children = match &node.value {
        Node::Seq(items) => items.iter().map(byte_end).collect::<Option<Vec<_>>>()?,
        Node::Map(entries) => entries
            .iter()
            .flat_map(|(k, v)| [byte_end(k), byte_end(v)])
            .collect::<Option<Vec<_>>>()?,
        _ => Vec::new(),
    };
    Some(children.into_iter().fold(own, usize::max))
}

/// The text as lines, each with its line end, and the byte where each starts.
struct Lines<'t> {
    text: &'t str,
    lines: Vec<&'t str>,
    starts: Vec<usize>,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str) -> Lines<'t> {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let mut starts = Vec::with_capacity(lines.len());
        let mut offset = 0;
        for line in &lines {
            starts.push(offset);
            offset += line.len();
        }
        Lines {
            text,
            lines,
            starts,
        }
    }

    /// The line that holds `byte`.
    fn of(&self, byte: usize) -> usize {
        self.starts.partition_point(|&s| s <= byte) - 1
    }

    /// The indentation of line `i` if it is a comment line.
    fn comment_indent(&self, i: usize) -> Option<usize> {
        let line = self.lines[i].trim_start_matches(' ');
        line.starts_with('#')
            .then_some(self.lines[i].len() - line.len())
    }
}

/// How the lines of the file change: some go, one is replaced, and the new entries come after
/// one, indented as given.
struct LineEdit {
    removed: Vec<bool>,
    /// Entries rewritten in place: each goes before the given line (its removed `-` line).
    put: Vec<(usize, String)>,
    replace: Option<(usize, String)>,
    /// The line after which the new entries go.
    insert_after: usize,
    /// The indentation of their `-`.
    dash: usize,
    /// The column of their keys.
    content: usize,
}

impl LineEdit {
    /// Replaces the `forwards` key line by `key_line_text`; new entries go right below it,
    /// in the canonical indentation.
    fn below_key(lines: &Lines, key_line: usize, key_line_text: String) -> LineEdit {
        LineEdit {
            removed: vec![false; lines.lines.len()],
            put: Vec::new(),
            replace: Some((key_line, key_line_text)),
            insert_after: key_line,
            dash: 2,
            content: 4,
        }
    }

    /// The edited text.
    fn apply(&self, lines: &Lines, added: &[NewEntry], nl: &str) -> String {
        let mut out = String::with_capacity(lines.text.len() + 64 * added.len());
        for (i, line) in lines.lines.iter().enumerate() {
            for (_, entry) in self.put.iter().filter(|(at, _)| *at == i) {
                out.push_str(entry);
            }
            if !self.removed[i] {
                match &self.replace {
                    Some((at, replacement)) if *at == i => out.push_str(replacement),
                    _ => out.push_str(line),
                }
            }
            if i == self.insert_after && !added.is_empty() {
                push_entries(&mut out, added, self.dash, self.content, nl);
            }
        }
        out
    }
}

/// `forwards:` / `forwards: ~` on the key line: drop the `~` or `null`; the entries go on the
/// following lines.
fn open_null(lines: &Lines, key_line: usize, start: usize, len: usize) -> Option<LineEdit> {
    let line = lines.lines[key_line];
    let at = start - lines.starts[key_line];
    let before = line.get(..at)?.trim_end_matches([' ', '\t']);
    let text = format!("{before}{}", line.get(at + len..)?);
    Some(LineEdit::below_key(lines, key_line, text))
}

/// `forwards: []`: drop the brackets; the entries go on the following lines.
fn open_empty_list(lines: &Lines, key_line: usize, start: usize) -> Option<LineEdit> {
    if lines.of(start) != key_line {
        return None;
    }
    let line = lines.lines[key_line];
    let at = start - lines.starts[key_line];
    let inner = line.get(at..)?.strip_prefix('[')?;
    let after = inner.trim_start_matches([' ', '\t']).strip_prefix(']')?;
    let end = line.len() - after.len();
    let before = line[..at].trim_end_matches([' ', '\t']);
    let text = format!("{before}{}", &line[end..]);
    Some(LineEdit::below_key(lines, key_line, text))
}

/// A block list: the lines of the entries that go are removed, the new ones come after the
/// last entry, with its indentation; with no entry left, the key line becomes
/// `forwards: []`. `key_len` is the length of the `forwards` key.
fn edit_items(
    lines: &Lines,
    key_line: usize,
    key_len: usize,
    items: &[(usize, usize)],
    change: &Change,
    nl: &str,
) -> Option<LineEdit> {
    let extents = entry_extents(lines, key_line, items)?;
    let mut removed = vec![false; lines.lines.len()];
    let mut put = Vec::new();
    for ((extent, kept), by) in extents.iter().zip(&change.kept).zip(&change.replaced) {
        match by {
            // Its comments stay: only the entry's own lines are rewritten.
            Some(entry) => {
                removed[extent.first..=extent.end].fill(true);
                let text = forward_lines(entry, extent.dash, extent.content, nl);
                put.push((extent.first, text));
            }
            None if !kept => removed[extent.from..=extent.last].fill(true),
            None => {}
        }
    }
    let replace = if change.empties_list() {
        Some((key_line, empty_list(lines.lines[key_line], key_len)?))
    } else {
        None
    };
    let last = extents.last()?;
    Some(LineEdit {
        removed,
        put,
        replace,
        insert_after: last.last,
        dash: last.dash,
        content: last.content,
    })
}

/// The lines of one list entry, with the comments it owns, and its indentation.
struct Extent {
    /// First line (an owned comment above, or the `-` line).
    from: usize,
    /// The `-` line.
    first: usize,
    /// The entry's last line (before the comments it owns below).
    end: usize,
    /// Last line (an owned comment below, or the entry's last line).
    last: usize,
    /// The indentation of the `-`.
    dash: usize,
    /// The column of the entry's first key.
    content: usize,
}

/// The extent of each block list item (`<spaces>-<spaces>` before each, each on lines of its
/// own). An item owns the comment lines right below it that are indented past its dash, and
/// the comment lines right above it that are not. `None` for any other form.
fn entry_extents(lines: &Lines, key_line: usize, items: &[(usize, usize)]) -> Option<Vec<Extent>> {
    let mut extents = Vec::with_capacity(items.len());
    let mut floor = key_line;
    for &(start, end) in items {
        let first = lines.of(start);
        let prefix = lines.text.get(lines.starts[first]..start)?;
        let dash = prefix.len() - prefix.trim_start_matches(' ').len();
        let after_dash = prefix[dash..].strip_prefix('-')?;
        if first <= floor || after_dash.is_empty() || !after_dash.trim_start_matches(' ').is_empty()
        {
            return None;
        }
        let mut from = first;
        while from - 1 > floor && lines.comment_indent(from - 1).is_some_and(|c| c <= dash) {
            from -= 1;
        }
        let entry_end = lines.of(end.checked_sub(1)?.max(start));
        let mut last = entry_end;
        while last + 1 < lines.lines.len()
            && lines.comment_indent(last + 1).is_some_and(|c| c > dash)
        {
            last += 1;
        }
        extents.push(Extent {
            from,
            first,
            end: entry_end,
            last,
            dash,
            content: prefix.len(),
        });
        floor = last;
    }
    Some(extents)
}

/// The `forwards` key line (`key_len` bytes of key at its start) as `forwards: []`, with
/// what followed the colon (a comment, the line end) kept.
fn empty_list(line: &str, key_len: usize) -> Option<String> {
    let after_key = line.get(key_len..)?;
    let colon = line.len()
        - after_key
            .trim_start_matches([' ', '\t'])
            .strip_prefix(':')?
            .len();
    Some(format!("{} []{}", &line[..colon], &line[colon..]))
}

/// The canonical file for `config`, under the leading comment block of `existing` (or a
/// short header for a new file): `interfaces`, then `mode`, `pin_dir`, `max_flows`, `metrics`
/// and `socket_group` if they differ from their defaults, then `forwards`.
fn regenerate(existing: Option<&str>, config: &Config) -> String {
    let mut out = String::new();
    match existing {
        Some(text) => {
            for line in text.split_inclusive('\n') {
                let trimmed = line.trim();
                if !(trimmed.is_empty() || trimmed.starts_with('#')) {
                    break;
                }
                out.push_str(line.trim_end_matches(['\r', '\n']));
                out.push('\n');
            }
        }
        None => out.push_str(NEW_FILE_HEADER),
    }
    if config.interfaces.is_empty() {
        out.push_str("interfaces: []\n");
    } else {
        out.push_str("interfaces:\n");
        for name in &config.interfaces {
            out.push_str(&format!("  - {}\n", yaml_quoted(name)));
        }
    }
    // The other settings only when they differ from their defaults, so that a config that
    // leaves them alone is written as it was before they existed.
    let defaults = Config::default();
    if config.mode != defaults.mode {
        out.push_str(&format!("mode: {}\n", config.mode));
    }
    if config.pin_dir != defaults.pin_dir {
        let path = config.pin_dir.to_string_lossy();
        out.push_str(&format!("pin_dir: {}\n", yaml_quoted(&path)));
    }
    if let Some(n) = config.max_flows {
        out.push_str(&format!("max_flows: {n}\n"));
    }
    if let Some(addr) = config.metrics {
        out.push_str(&format!("metrics: \"{addr}\"\n"));
    }
    if let Some(group) = &config.socket_group {
        out.push_str(&format!("socket_group: {}\n", yaml_quoted(group)));
    }
    if let Some(docker) = &config.docker {
        let path = docker.socket.to_string_lossy();
        out.push_str(&format!("docker:\n  socket: {}\n", yaml_quoted(&path)));
        if !docker.allow.is_empty() {
            let list: Vec<String> = docker.allow.iter().map(|p| format!("\"{p}\"")).collect();
            out.push_str(&format!("  allow: [{}]\n", list.join(", ")));
        }
    }
    let entries = NewEntry::all(config);
    if entries.is_empty() {
        out.push_str("forwards: []\n");
    } else {
        out.push_str("forwards:\n");
        entries
            .iter()
            .for_each(|f| out.push_str(&forward_lines(f, 2, 4, "\n")));
    }
    out
}

/// `s` as a YAML double-quoted scalar (which a JSON string is).
fn yaml_quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

#[cfg(test)]
mod tests;
