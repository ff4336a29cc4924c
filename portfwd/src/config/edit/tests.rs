//! The editor: comments kept through adds and deletes, other layouts edited, and what it
//! cannot edit regenerated.

use super::{NEW_FILE_HEADER, same_config};
use crate::config::{
    Config, render,
    tests::{fwd, parse},
};

const COMMENTED: &str = "\
# Header comment.
# Second line.

# Interfaces comment.
interfaces:   # trailing on interfaces
  - eth0      # first interface

# Forwards comment.
forwards:
  # web: the demo app
  - listen: \"8080\"
    to: \"172.17.0.2:3000\"   # the app

  - listen: \"5353\"
    protocol: udp
    to: \"172.17.0.3:53\"
# Trailing comment.
";

fn with(config: &Config, f: impl FnOnce(&mut Config)) -> Config {
    let mut config = config.clone();
    f(&mut config);
    config
}

#[test]
fn render_keeps_comments_on_add_and_del() {
    let old = parse(COMMENTED);
    assert_eq!(
        render(Some(COMMENTED), &old),
        COMMENTED,
        "saving what was loaded changes nothing"
    );

    let added = with(&old, |c| {
        c.forwards.push(fwd("10.0.0.1:9000/udp -> 172.17.0.4:9000"))
    });
    let text = render(Some(COMMENTED), &added);
    assert_eq!(
        text,
        COMMENTED.replace(
            "# Trailing comment.\n",
            "  - listen: \"10.0.0.1:9000/udp\"\n    to: \"172.17.0.4:9000\"\n# Trailing comment.\n"
        )
    );
    assert_eq!(parse(&text), added);

    // Deleting the first entry takes the comment directly above it along.
    let deleted = with(&added, |c| {
        c.forwards.remove(0);
    });
    let text2 = render(Some(&text), &deleted);
    assert_eq!(parse(&text2), deleted);
    assert!(
        !text2.contains("web: the demo app") && !text2.contains("the app"),
        "{text2}"
    );
    for kept in [
        "# Header comment.\n# Second line.\n",
        "# Interfaces comment.\n",
        "interfaces:   # trailing on interfaces\n",
        "  - eth0      # first interface\n",
        "# Forwards comment.\n",
        "# Trailing comment.\n",
        "  - listen: \"5353\"\n    protocol: udp\n",
    ] {
        assert!(text2.contains(kept), "lost {kept:?}:\n{text2}");
    }

    // Deleting everything leaves an empty list and every other comment.
    let text3 = render(Some(&text2), &with(&deleted, |c| c.forwards.clear()));
    assert_eq!(
        text3,
        "# Header comment.\n# Second line.\n\n# Interfaces comment.\ninterfaces:   # trailing on interfaces\n  - eth0      # first interface\n\n# Forwards comment.\nforwards: []\n\n# Trailing comment.\n"
    );
    assert_eq!(parse(&text3).forwards, []);

    // And adding again turns `forwards: []` back into a block list.
    let again = with(&parse(&text3), |c| {
        c.forwards.push(fwd("8080 -> 172.17.0.2:3000"))
    });
    let text4 = render(Some(&text3), &again);
    assert!(
            text4.contains("# Forwards comment.\nforwards:\n  - listen: \"8080/tcp\"\n    to: \"172.17.0.2:3000\"\n\n# Trailing comment.\n"),
            "{text4}"
        );
    assert_eq!(parse(&text4), again);
}

#[test]
fn render_installed_example() {
    let installed = include_str!("../../../../config/portfwd.yaml");
    let one = Config {
        interfaces: vec![],
        forwards: vec![fwd("8080 -> 172.17.0.2:3000")],
        ..Config::default()
    };
    let text = render(Some(installed), &one);
    assert_eq!(parse(&text), one);
    assert_eq!(
        text.lines().filter(|l| l.starts_with('#')).count(),
        installed.lines().filter(|l| l.starts_with('#')).count()
    );
    assert!(
        text.ends_with("forwards:\n  - listen: \"8080/tcp\"\n    to: \"172.17.0.2:3000\"\n"),
        "{text}"
    );
    // Deleting it gives the installed file back.
    assert_eq!(render(Some(&text), &Config::default()), installed);
    // The demo is already canonical.
    let demo = include_str!("../../../../config/demo.yaml");
    assert_eq!(render(Some(demo), &parse(demo)), demo);
}

#[test]
fn render_edits_other_layouts() {
    // No forwards key; a null one; `~`; an indentless list; CRLF.
    for (before, after) in [
        (
            "# c\ninterfaces: []",
            "# c\ninterfaces: []\nforwards:\n  - listen: \"80/tcp\"\n    to: \"1.2.3.4:80\"\n",
        ),
        (
            "# c\n",
            "# c\nforwards:\n  - listen: \"80/tcp\"\n    to: \"1.2.3.4:80\"\n",
        ),
        (
            "",
            "forwards:\n  - listen: \"80/tcp\"\n    to: \"1.2.3.4:80\"\n",
        ),
        (
            "forwards:  # list\n# end\n",
            "forwards:  # list\n  - listen: \"80/tcp\"\n    to: \"1.2.3.4:80\"\n# end\n",
        ),
        (
            "forwards: ~\n",
            "forwards:\n  - listen: \"80/tcp\"\n    to: \"1.2.3.4:80\"\n",
        ),
        (
            "forwards: [ ]  # none\n",
            "forwards:  # none\n  - listen: \"80/tcp\"\n    to: \"1.2.3.4:80\"\n",
        ),
        (
            "forwards:\n- listen: 81\n  to: 1.2.3.4:81\n",
            "forwards:\n- listen: 81\n  to: 1.2.3.4:81\n- listen: \"80/tcp\"\n  to: \"1.2.3.4:80\"\n",
        ),
        (
            "forwards:\r\n  - listen: 81\r\n    to: 1.2.3.4:81\r\n",
            "forwards:\r\n  - listen: 81\r\n    to: 1.2.3.4:81\r\n  - listen: \"80/tcp\"\r\n    to: \"1.2.3.4:80\"\r\n",
        ),
    ] {
        let mut want = parse(before);
        want.forwards.push(fwd("80 -> 1.2.3.4:80"));
        assert_eq!(render(Some(before), &want), after, "{before:?}");
    }
    // Removing the only entry of an indentless list.
    assert_eq!(
        render(
            Some("forwards:\n- listen: 81\n  to: 1.2.3.4:81\n"),
            &Config::default()
        ),
        "forwards: []\n"
    );
    // Replacing a changed entry (same listen side): rewritten in its place.
    let text = "forwards:\n  - listen: \"81\"\n    to: \"1.2.3.4:81\"\n  # keep me\n\n  - listen: \"82\"\n    to: \"1.2.3.4:82\"\n";
    let mut want = parse(text);
    want.forwards[0].to.port = 8181;
    want.forwards[0].to.end = 8181;
    let out = render(Some(text), &want);
    assert_eq!(parse(&out), want);
    assert_eq!(
        out,
        "forwards:\n  - listen: \"81/tcp\"\n    to: \"1.2.3.4:8181\"\n  # keep me\n\n  - listen: \"82\"\n    to: \"1.2.3.4:82\"\n"
    );
}

#[test]
fn render_keeps_file_order_and_entry_comments() {
    let text = "\
forwards:
  # above 80
  - listen: \"80\"
    to: \"1.2.3.4:80\"
    # below 80, indented: belongs to 80
  # above 81
  - listen: \"81\"
    to: \"1.2.3.4:81\"
    # below 81
# not an entry's
";
    let old = parse(text);
    // The daemon's order need not be the file's.
    let mut want = old.clone();
    want.forwards.reverse();
    assert_eq!(render(Some(text), &want), text);

    want.forwards.push(fwd("82 -> 1.2.3.4:82"));
    let added = render(Some(text), &want);
    assert_eq!(
        added,
        text.replace(
            "# not an entry's",
            "  - listen: \"82/tcp\"\n    to: \"1.2.3.4:82\"\n# not an entry's"
        )
    );
    assert!(same_config(&parse(&added), &want));

    want.forwards.retain(|f| f.listen.port != 80);
    assert_eq!(
        render(Some(&added), &want),
        "\
forwards:
  # above 81
  - listen: \"81\"
    to: \"1.2.3.4:81\"
    # below 81
  - listen: \"82/tcp\"
    to: \"1.2.3.4:82\"
# not an entry's
"
    );
}

#[test]
fn render_regenerates_what_it_cannot_edit() {
    let want = Config {
        interfaces: vec!["eth0".into()],
        forwards: vec![fwd("80 -> 1.2.3.4:80"), fwd("81/udp -> 1.2.3.4:81")],
        ..Config::default()
    };
    let canonical = "interfaces:\n  - \"eth0\"\nforwards:\n  - listen: \"80/tcp\"\n    to: \"1.2.3.4:80\"\n  - listen: \"81/udp\"\n    to: \"1.2.3.4:81\"\n";
    // Flow style, a flow top level, changed interfaces, a broken file: the leading
    // comment block is kept, the rest regenerated.
    for before in [
        "# head\n\n# more\nforwards: [{listen: \"80\", to: \"1.2.3.4:80\"}]\ninterfaces: [eth0]\n",
        "# head\n\n# more\n{interfaces: [eth0], forwards: [{listen: \"80\", to: \"1.2.3.4:80\"}]}\n",
        "# head\n\n# more\ninterfaces: [eth1]  # gone\n",
        "# head\n\n# more\nforwards: [\n",
    ] {
        let out = render(Some(before), &want);
        assert_eq!(out, format!("# head\n\n# more\n{canonical}"), "{before:?}");
    }
    // A new file.
    let out = render(None, &want);
    assert_eq!(out, format!("{NEW_FILE_HEADER}{canonical}"));
    assert_eq!(parse(&out), want);
    assert_eq!(render(Some(&out), &want), out);
    // Odd interface names are quoted.
    let odd = Config {
        interfaces: vec!["a\"b".into(), "yes".into(), "1".into()],
        forwards: vec![],
        ..Config::default()
    };
    assert_eq!(parse(&render(None, &odd)), odd);
}

#[test]
fn forwards_to_containers_by_name_are_edited_in_place_too() {
    let text = "\
# Docker.
docker: {}
forwards:
  # by name
  - listen: \"8080\"
    to: \"web:3000\"
  # by address
  - listen: \"8081\"
    to: \"172.17.0.2:3000\"
";
    let old = parse(text);
    assert_eq!(render(Some(text), &old), text);
    // The address forward goes; the named one and its comment stay where they are.
    let without = with(&old, |c| c.forwards.clear());
    assert_eq!(
        render(Some(text), &without),
        "# Docker.\ndocker: {}\nforwards:\n  # by name\n  - listen: \"8080\"\n    to: \"web:3000\"\n"
    );
    // A named one is appended in canonical form.
    let added = with(&old, |c| {
        c.named.push(
            crate::publish::NamedForward::new(
                "9000-9001/udp".parse().unwrap(),
                "db:5000-5001".parse().unwrap(),
                Vec::new(),
            )
            .unwrap(),
        )
    });
    let out = render(Some(text), &added);
    assert_eq!(
        out,
        format!("{text}  - listen: \"9000-9001/udp\"\n    to: \"db:5000-5001\"\n")
    );
    assert!(same_config(&parse(&out), &added));
}

/// A forward with several targets is written back as a list, changed in place (a target
/// removed, a weight set) with the rest of the file as it was.
#[test]
fn pools_are_edited_in_place() {
    let text = "# my forwards
forwards:
  # the web pool
  - listen: \"8080\"
    to: [\"172.17.0.2:3000\", \"172.17.0.3:3000*2\"]   # two backends
    health: { http: /healthz }
  - listen: \"9000\"   # keep me
    to: \"172.17.0.9:9000\"
";
    let mut c = crate::config::tests::parse(text);
    // Drain 172.17.0.3: weight 0, the health check and the order kept.
    let mut targets = c.forwards[0].targets();
    targets[1].weight = 0;
    let options = c.forwards[0].pool_options();
    c.forwards[0] =
        crate::publish::Forward::with_targets(c.forwards[0].listen, targets, options).unwrap();
    let drained = render(Some(text), &c);
    assert_eq!(
        drained,
        "# my forwards
forwards:
  # the web pool
  - listen: \"8080/tcp\"
    to: [\"172.17.0.2:3000\", \"172.17.0.3:3000*0\"]
    health: { http: \"/healthz\" }
  - listen: \"9000\"   # keep me
    to: \"172.17.0.9:9000\"
"
    );
    assert_eq!(crate::config::tests::parse(&drained), c);
    // Remove 172.17.0.2: one target with a health check stays a pool of one.
    let mut targets = c.forwards[0].targets();
    targets.remove(0);
    targets[0].weight = 1;
    let options = c.forwards[0].pool_options();
    c.forwards[0] =
        crate::publish::Forward::with_targets(c.forwards[0].listen, targets, options).unwrap();
    let removed = render(Some(&drained), &c);
    assert!(
        removed.contains("    to: [\"172.17.0.3:3000\"]\n    health: { http: \"/healthz\" }\n  - listen: \"9000\"   # keep me\n"),
        "{removed}"
    );
    assert_eq!(crate::config::tests::parse(&removed), c);
    // Every pool setting that is not a default is written.
    let mut c = crate::config::tests::parse(
        "forwards:
  - listen: \"53/udp\"
    to: \"172.17.0.2:53,172.17.0.3:53*3\"
    health: { interval: 2s, timeout: 1500ms, rise: 3, fall: 4 }
    all_down: refuse
    grace: 2m
",
    );
    let fresh = render(None, &c);
    assert!(
        fresh.ends_with(
            "forwards:
  - listen: \"53/udp\"
    to: [\"172.17.0.2:53\", \"172.17.0.3:53*3\"]
    health: { interval: \"2s\", timeout: \"1s 500ms\", rise: 3, fall: 4 }
    all_down: refuse
    grace: \"2m\"
"
        ),
        "{fresh}"
    );
    assert_eq!(crate::config::tests::parse(&fresh), c);
    c.forwards.clear();
    assert!(render(Some(&fresh), &c).ends_with("forwards: []\n"));
}

/// A block list of targets is rewritten in place, with the comments around the entry.
#[test]
fn a_block_list_of_targets_is_rewritten_in_place() {
    let text = "forwards:
  # web
  - listen: 8080
    to:
      - 172.17.0.2:3000
      - 172.17.0.3:3000
    # owned below
  - listen: 9000
    to: 172.17.0.9:9000
";
    let mut c = parse(text);
    let t = "172.17.0.3:3000".parse().unwrap();
    c.forwards[0] = c.forwards[0].with_weight(&t, 0).unwrap();
    let out = render(Some(text), &c);
    assert_eq!(
        out,
        "forwards:
  # web
  - listen: \"8080/tcp\"
    to: [\"172.17.0.2:3000\", \"172.17.0.3:3000*0\"]
    # owned below
  - listen: 9000
    to: 172.17.0.9:9000
"
    );
    assert_eq!(parse(&out), c);
}
